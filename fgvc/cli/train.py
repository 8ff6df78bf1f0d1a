"""``fgvc train``: train a recipe once per seed (``fgvc.studies.recipe.train_recipe``)."""

from __future__ import annotations

import argparse


def _train(args: argparse.Namespace) -> int:
    from ..studies.recipe import load_recipe, train_recipe

    recipe = load_recipe(args.config, args.set or ())
    out = args.out or f"runs/{recipe.get('name') or 'run'}"
    options: dict = {"progress": not args.no_progress}
    if args.device is not None:
        options["device"] = args.device
    if args.resume:
        options["resume"] = True
    if args.overwrite:
        options["overwrite"] = True
    result = train_recipe(recipe, out, seeds=args.seeds, sweep=args.sweep, **options)
    from ..engine.distributed import is_main_process

    if not is_main_process():
        return 0
    print(result.to_markdown())
    print(f"runs, checkpoints and results in {out}/")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc train``."""
    from ..studies.recipe import list_recipes

    train = sub.add_parser(
        "train",
        help="train a recipe (YAML) once per seed; test evaluated once (protocol val or paper)",
        description="Trains the recipe's model on its dataset once per seed (fgvc.train_recipe). Each run "
        "goes to OUT/seed<N>/ (best.safetensors chosen on the validation split, last.safetensors, "
        "config.yaml with the resolved settings and the fgvc / torch / timm versions and git commit); the test "
        "split is evaluated once per run with the chosen checkpoint; OUT/results.md has every seed, the "
        "mean +- std and the paper's number, compared only under --set protocol=paper (whole training split, "
        "final checkpoint; the default protocol val chooses on a held-out 10%). Under torchrun (torchrun --nproc_per_node=N -m fgvc train ...) "
        "each process trains its share of every batch.",
    )
    train.add_argument(
        "--config",
        required=True,
        help="a recipe YAML file, or the name of a shipped one: " + ", ".join(list_recipes()[:4]) + ", ... "
        "(fgvc/recipes/)",
    )
    train.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="override recipe values, dotted keys, YAML values: --set data.root=/data/CUB_200_2011 "
        "train.lr=0.001 train.batch_size=32; the keys are the fields of fgvc.settings (data.*: DataConfig, "
        "train.*: TrainConfig, top level: RecipeSettings) and model.* the method's options: 'fgvc list settings' "
        "lists them with their defaults",
    )
    train.add_argument("--out", default=None, help="output folder (default: runs/<recipe name>)")
    train.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2,...",
        help="choose a setting on the validation split first: --sweep train.lr=0.03,0.01,0.003,0.001 trains each "
        "value (first seed, protocol val, OUT/sweep/), keeps the best validation top-1 (ties: the first listed), "
        "then trains and tests only that one; results.md / results.json list every candidate (repeat --sweep "
        "for a grid)",
    )
    train.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: the recipe's)")
    train.add_argument(
        "--resume", action="store_true", help="continue each seed's run from its last checkpoint in OUT"
    )
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace the runs already in OUT (their checkpoints, logs and results are deleted); without it a "
        "seed folder holding a run is refused",
    )
    train.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)
