"""Writes fgvc/recipes/<method>_<dataset>_<size>.yaml: one recipe per method x dataset x resolution.

The settings are each shipped method's own, declared in its module as ``RECIPES`` (``fgvc.methods.declare.
MethodRecipes``: ``fgvc/methods/glsim.py``, ``dcal.py``, ``transfg.py``, ``vit.py``) and read here through the
registry; this script adds what every recipe shares (the backbone, the datasets, their splits) and writes them.

Every setting is the official one by default and traceable: the comment beside it names the file and line
of the official code it comes from (arkel23/GLSim at commit 99cc474, TACJu/TransFG at commit 9336fba; DCAL
has no official code, so its settings come from the paper), or says "fgvc's choice" where paper and code are
both silent. Where paper and code disagree, the code is followed and the comment says so. Where fgvc
deliberately differs, the difference is an option whose default is the official behaviour, listed in the
deviations table of docs/recipes.md.

``expected_top1`` is the paper's reported top-1 for exactly that method, dataset and resolution, or null
where the paper reports none (never guessed). It is compared with a run only under ``protocol: paper``.
Run after changing a setting (in this script or a method's ``RECIPES``), then commit the YAML files (a test
checks that they match):

    python scripts/make_recipes.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvc.methods.base import method_module, shipped_methods

OUT = Path(__file__).resolve().parents[1] / "fgvc" / "recipes"
BACKBONE = "vit_base_patch16_224.orig_in21k"  # Google's original ViT-B/16 ImageNet-21k weights (ViT-B_16.npz)
SIZES = (224, 448)

DATASETS = {
    # name: (fgvc dataset, root, options)
    "cub": ("cub", "data/CUB_200_2011", {}),
    "cars": ("cars", "data/stanford_cars", {}),
    "aircraft": ("aircraft", "data/fgvc-aircraft-2013b", {"annotation_level": "variant"}),
    "nabirds": ("nabirds", "data/nabirds", {}),
}
# The split each recipe trains on (its validation split carved from it under protocol val); all test on "test".
# FGVC-Aircraft: trainval (train + val, 6,667 images; its train split alone is 3,334), as the papers and GLSim
# (data/aircraft/train_val.csv, 6,667 rows, configs/datasets/aircraft.yaml:4 df_trainval) train; test 3,333.
TRAIN_SPLITS = {"cub": "train", "cars": "train", "aircraft": "trainval", "nabirds": "train"}


def method_recipes(method: str) -> Any:
    """The ``RECIPES`` the module of ``method`` declares (``fgvc.methods.declare.MethodRecipes``), or None."""
    return getattr(method_module(method), "RECIPES", None)


#: The shipped methods that declare recipes, in the shipped order.
METHODS = tuple(m for m in shipped_methods() if method_recipes(m) is not None)


def method_settings(method: str, dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """(model, data, train) settings and comment lines for one recipe: the method's ``RECIPES``, or those of
    the method it takes its settings from (``settings_of``), its own notes first."""
    if method_recipes(method) is None:
        raise ValueError(f"method {method!r} declares no RECIPES in its module")
    recipes = method_recipes(method)
    settings = recipes.settings or method_recipes(recipes.settings_of).settings
    model, data, train, notes = settings(dataset, size)
    return model, data, train, [*recipes.notes, *notes]


def expected_top1(method: str, dataset: str, size: int) -> tuple[float | None, str]:
    """(the paper's top-1, its source), or (None, why the paper has none)."""
    recipes = method_recipes(method)
    return recipes.expected.get((dataset, size), (None, recipes.not_reported(dataset, size)))


def fmt(value: object) -> str:
    """A YAML flow value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # YAML 1.1 (PyYAML) reads 1e-05 as a string: a float needs its dot, 1.0e-05
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def section(values: dict) -> list[str]:
    """``  key: value`` lines; a mapping of mappings (backbone_kwargs) one level in block style."""
    lines = []
    for k, v in values.items():
        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
            lines.append(f"  {k}:")
            lines += [f"    {k2}: {fmt(v2)}" for k2, v2 in v.items()]
        else:
            lines.append(f"  {k}: {fmt(v)}")
    return lines


def recipe_text(method: str, dataset: str, size: int) -> str:
    """The YAML text of one recipe."""
    name = f"{method}_{dataset}_{size}"
    model, data, train, notes = method_settings(method, dataset, size)
    expected, source = expected_top1(method, dataset, size)
    kind, root, options = DATASETS[dataset]
    lines = [f"# {name}: {method} on {dataset} at {size} px.", *(f"# {n}" for n in notes)]
    lines += ["# Each setting's source (file and line of the official code): scripts/make_recipes.py.", ""]
    lines += [f"name: {name}", f"expected_top1: {fmt(expected)}", f'source: "{source}"', "seeds: [0, 1, 2]"]
    lines += [
        "# val: hold out val_fraction, keep the best checkpoint on it (not comparable with the paper);",
        "# paper (--set protocol=paper): whole training split, final checkpoint, compared with expected_top1",
        "protocol: val",
        "",
    ]
    lines += ["model:", f"  method: {method}", f"  backbone: {BACKBONE}", "  pretrained: true", f"  img_size: {size}"]
    lines += section(model)
    lines += ["", "data:", f"  dataset: {kind}", f"  root: {root}"]
    split = TRAIN_SPLITS[dataset]
    note = "   # train + val: 6,667 images (train alone: 3,334), as the papers and GLSim" if split == "trainval" else ""
    lines += [f"  train_split: {split}{note}", "  test_split: test"]
    lines += ["  val_fraction: 0.1   # carved from train_split, stratified (protocol val only)"]
    lines += section(data)
    if options:
        lines.append(f"  options: {fmt(options)}")
    lines += ["", "train:", *section(train)]
    return "\n".join(lines) + "\n"


def all_recipes() -> dict[str, str]:
    """``{file name: YAML text}`` of every recipe this script writes."""
    return {
        f"{m}_{d}_{s}.yaml": recipe_text(m, d, s) for m in METHODS for d in DATASETS for s in SIZES
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in all_recipes().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(list(OUT.glob('*.yaml')))} recipes to {OUT}")


if __name__ == "__main__":
    main()
