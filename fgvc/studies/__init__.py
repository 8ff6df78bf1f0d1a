"""What is built on the engine: ``recipe`` (the paper recipes, ``fgvc train`` / ``fgvc eval``), ``demo``,
``pretrain`` (the shipped backbone), ``benchmark`` and ``memory`` (``fgvc benchmark``), ``report`` (result
tables, the evaluation report and prediction maps), ``notebook`` (what the notebooks need).

The recipes themselves are YAML files in ``fgvc/recipes/``.
"""

from .benchmark import BenchmarkResult
from .recipe import RecipeResult, list_recipes, load_recipe, train_recipe
from .report import save_evaluation

__all__ = ["BenchmarkResult", "RecipeResult", "list_recipes", "load_recipe", "save_evaluation", "train_recipe"]
