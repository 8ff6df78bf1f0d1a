"""Training and inference: ``train`` (``fit``) with its phases (``run_state``, ``run_folder``, ``samplers``,
``history``), ``evaluate``, ``retrieval``, ``predict``, ``distributed`` and ``precision``.

The functions ``evaluate`` and ``predict`` are ``fgvc.evaluate`` / ``fgvc.predict`` (here their names are
those of their modules).
"""

from .evaluate import EvalResult
from .predict import Prediction
from .retrieval import RetrievalResult, retrieval_metrics
from .train import History, fit, plot_log, seed_everything

__all__ = [
    "EvalResult",
    "History",
    "Prediction",
    "RetrievalResult",
    "fit",
    "plot_log",
    "retrieval_metrics",
    "seed_everything",
]
