"""Datasets: the built-in synthetic fine-grained data (more datasets arrive here: CUB, Cars, ...)."""

from .synthetic import SyntheticFGVC, synthetic_splits

__all__ = ["SyntheticFGVC", "synthetic_splits"]
