"""``fgvc list``: methods, recipes, datasets, shipped weights, timm backbones."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    """``fgvc list [WHAT]``: methods (with their options), recipes, datasets, shipped weights, timm backbones."""
    import fnmatch

    from ..backbones.shipped import list_shipped
    from ..data import list_datasets
    from ..methods.base import BASELINE, list_models, model_options
    from ..studies.recipe import list_recipes, recipe_keys

    common = set(model_options(BASELINE))  # the baseline has the common options only
    sections: dict[str, list[str]] = {
        "methods": [
            m + ("  (" + ", ".join(o for o in model_options(m) if o not in common) + ")" if set(model_options(m)) - common else "")
            for m in list_models()
        ],
        "recipes": list_recipes(),
        "datasets": list_datasets(),
        "weights": list_shipped(),
    }
    if args.what == "settings":
        sections = {"settings": recipe_keys()}
    if args.what == "backbones":
        import timm

        sections = {"backbones": timm.list_models(args.filter or "*vit*")}
    elif args.what not in (None, "settings"):
        sections = {args.what: sections[args.what]}
    for name, items in sections.items():
        if args.filter and name != "backbones":
            items = [i for i in items if fnmatch.fnmatch(i.split()[0], args.filter)]
        print(f"{name} ({len(items)}):")
        for item in items or ["(none)"]:
            print(f"  {item}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc list``."""
    lst = sub.add_parser(
        "list",
        help="methods (with their options), recipes, datasets, shipped weights; or timm backbones, or every "
        "recipe setting",
        description="Lists what fgvc offers: methods with their own options, the shipped recipes, the datasets "
        "and shipped weights. 'fgvc list backbones' lists timm's ViT models (--filter '*eva02*').",
    )
    lst.add_argument(
        "what", nargs="?", default=None, choices=["methods", "recipes", "datasets", "weights", "backbones", "settings"],
        help="one section only (default: all but backbones and settings); settings: every key a recipe and "
        "--set take, with its default",
    )
    lst.add_argument("--filter", default=None, help="shell-style pattern, e.g. 'glsim_*' or '*dinov2*'")
    lst.set_defaults(func=_list)
