"""Models on disk and on the Hub: ``checkpoint`` (fgvc's safetensors checkpoints and training state),
``convert`` (the official GLSim / TransFG checkpoints), ``hub`` (Hugging Face folders and uploads, timm
state dicts)."""

from .checkpoint import load_model, load_weights, read_metadata, save_model
from .hub import export_timm, from_pretrained, push_to_hub, save_pretrained

__all__ = [
    "export_timm",
    "from_pretrained",
    "load_model",
    "load_weights",
    "push_to_hub",
    "read_metadata",
    "save_model",
    "save_pretrained",
]
