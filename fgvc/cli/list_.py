"""``fgvc list``: methods, recipes, datasets, shipped weights, timm backbones."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    """``fgvc list [WHAT]``: methods (with their options), recipes, datasets, shipped weights, timm backbones."""
    import fnmatch

    from ..data import list_datasets
    from ..methods.base import BASELINE, list_models, model_options
    from ..studies.recipe import list_recipes

    common = set(model_options(BASELINE))  # the baseline has the common options only
    sections: dict[str, list[str]] = {
        "methods": [
            m + ("  (" + ", ".join(o for o in model_options(m) if o not in common) + ")" if set(model_options(m)) - common else "")
            for m in list_models()
        ],
        "recipes": list_recipes(),
        "datasets": list_datasets(),
        "weights": _shipped_weights(),
    }
    if args.what == "backbones":
        import timm

        sections = {"backbones": timm.list_models(args.filter or "*vit*")}
    elif args.what is not None:
        sections = {args.what: sections[args.what]}
    for name, items in sections.items():
        if args.filter and name != "backbones":
            items = [i for i in items if fnmatch.fnmatch(i.split()[0], args.filter)]
        print(f"{name} ({len(items)}):")
        for item in items or ["(none)"]:
            print(f"  {item}")
    return 0


def _shipped_weights() -> list[str]:
    """Names of the pretrained weights fgvc ships, where such a registry exists in this version."""
    try:
        from ..backbones import shipped as weights
    except ImportError:
        return []
    lister = getattr(weights, "list_shipped", None) or getattr(weights, "list_weights", None)
    return list(lister()) if callable(lister) else []


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc list``."""
    lst = sub.add_parser(
        "list",
        help="methods (with their options), recipes, datasets, shipped weights; or timm backbones",
        description="Lists what fgvc offers: methods with their own options, the shipped recipes, the datasets "
        "and shipped weights. 'fgvc list backbones' lists timm's ViT models (--filter '*eva02*').",
    )
    lst.add_argument(
        "what", nargs="?", default=None, choices=["methods", "recipes", "datasets", "weights", "backbones"],
        help="one section only (default: all but backbones)",
    )
    lst.add_argument("--filter", default=None, help="shell-style pattern, e.g. 'glsim_*' or '*dinov2*'")
    lst.set_defaults(func=_list)
