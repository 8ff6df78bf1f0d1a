"""fgvc: fine-grained visual categorization with vision transformers.

    import fgvc
    model = fgvc.create_model("glsim", backbone="vit_base_patch16_224.augreg_in21k", num_classes=200,
                              img_size=448, pretrained=True)
    history = fgvc.fit(model, train_data, val_data, epochs=50)
    result = fgvc.evaluate(model, test_data)
"""

from .backbones.vit import EncoderOutput, ViTBackbone
from .engine.evaluate import EvalResult, calibrate, evaluate
from .engine.predict import Prediction, predict
from .engine.retrieval import RetrievalResult, retrieval_metrics
from .engine.train import History, fit, plot_log, seed_everything
from .methods import FGVCModel, ModelOutput, create_model, list_models, model_options, register_model
from .settings import TrainConfig
from .storage.checkpoint import load_model, load_weights, read_metadata, save_model
from .storage.hub import export_timm, from_pretrained, push_to_hub, save_pretrained
from .studies.benchmark import BenchmarkResult, benchmark
from .studies.recipe import RecipeResult, list_recipes, load_recipe, train_recipe
from .studies.report import save_evaluation
from .version import __version__

#: The names ``benchmark`` / ``BenchmarkResult`` had before (CHANGELOG.md); kept so that old code runs.
profile, ProfileResult = benchmark, BenchmarkResult

__all__ = [
    "BenchmarkResult",
    "EncoderOutput",
    "EvalResult",
    "FGVCModel",
    "History",
    "ModelOutput",
    "Prediction",
    "RecipeResult",
    "RetrievalResult",
    "TrainConfig",
    "ViTBackbone",
    "__version__",
    "benchmark",
    "calibrate",
    "create_model",
    "evaluate",
    "export_timm",
    "fit",
    "from_pretrained",
    "list_models",
    "list_recipes",
    "load_recipe",
    "load_model",
    "load_weights",
    "model_options",
    "plot_log",
    "predict",
    "push_to_hub",
    "read_metadata",
    "register_model",
    "retrieval_metrics",
    "save_evaluation",
    "save_model",
    "save_pretrained",
    "seed_everything",
    "train_recipe",
]
