"""Recipes: the papers' training settings as YAML files, and the one function that runs them.

A recipe is a plain YAML file with three sections that map one to one onto fgvc's API, plus what the paper
reported, so that a run can be compared with it::

    name: glsim_cub_224
    expected_top1: 90.93          # the paper's top-1 (null where the paper reports none)
    source: Rios et al., 2024 ...  # where that number comes from
    seeds: [0, 1, 2]              # one run per seed; mean +- std reported
    protocol: val                 # val (default) or paper, see below
    model: {method: glsim, backbone: vit_base_patch16_224.augreg_in21k, pretrained: true, img_size: 224, ...}
    data:  {dataset: cub, root: data/CUB_200_2011, val_fraction: 0.1, resize: 256, trivial_augment: true, ...}
    train: {epochs: 50, batch_size: 8, optimizer: sgd, lr: 0.01, warmup_steps: 500, ...}

* ``model`` is passed to ``fgvc.create_model`` (``num_classes`` comes from the data);
* ``data`` chooses the dataset (``fgvc.data.build_dataset``), its training and test splits (``train_split``,
  ``test_split``: by default the dataset's ``DatasetDef.train_split``, ``trainval`` for FGVC-Aircraft and
  ``train`` elsewhere, and ``test``), the validation split carved from the training split (``val_fraction``,
  stratified, ``split_seed``), an optional class subset (``classes``: a count or a list), the transforms (``resize`` before the crop; ``test_resize`` when the test resize differs;
  ``trivial_augment``, ``random_erasing``) and the dataset's own ``options``;
* ``train`` is passed to ``fgvc.fit`` (its keys are ``fgvc.TrainConfig``'s options, with its defaults);
  ``steps`` (total optimizer updates, as TransFG counts) becomes the number of epochs that reaches it, and
  ``lr_base_batch_size`` scales ``lr`` linearly with the batch (``lr * batch_size / lr_base_batch_size``,
  DeiT's and DCAL's convention).

The recipes shipped with fgvc are in ``fgvc/recipes/`` (``list_recipes()``); ``load_recipe`` takes one of
their names or a path, and ``key=value`` overrides (``"train.lr=0.001"``, values read as YAML).
``train_recipe`` trains one model per seed, evaluates the test split once per seed, and reports every seed and
the mean +- std; with ``sweep`` (``fgvc train --sweep train.lr=0.03,0.01``) it first chooses one setting on
the validation split, never on test. ``protocol`` says which checkpoint is evaluated:

* ``val`` (the default, for new research): ``val_fraction`` of the training split is held out (stratified);
  the checkpoint with the best validation top-1 is evaluated on test. Not the papers' setting (they train
  on the whole training split), so ``expected_top1`` is shown for reference only, never compared;
* ``paper``: the papers' protocol: the whole training split (``val_fraction`` is ignored), the fixed
  schedule, and the final checkpoint evaluated on test once (no choice is made on test). Only under this
  protocol is the result compared with ``expected_top1``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch.utils.data import Dataset

from ..hints import did_you_mean
from ..settings import (
    DataConfig,
    RecipeSettings,
    RecipeTrainOptions,
    TrainConfig,
    check_model_settings,
    describe,
    number_from_text,
    refuse_unknown,
)
from ..storage.checkpoint import run_config  # re-exported: fgvc.studies.recipe.run_config

__all__ = [
    "RecipeResult",
    "build_recipe_data",
    "checkpoint_split",
    "evaluate_checkpoint",
    "list_recipes",
    "load_recipe",
    "parse_sweep",
    "recipe_keys",
    "recipe_splits",
    "run_config",
    "train_recipe",
]

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"  # fgvc/recipes/ (package data)
SAVED_ONLY = set(RecipeSettings.SAVED_ONLY)  # what train_recipe adds to a run's config.yaml
TEXT_KEYS = {
    "method", "backbone", "checkpoint_path", "dataset", "root", "train_split", "test_split", "classes", "optimizer",
    "device",
}


def list_recipes() -> list[str]:
    """Names of the recipes shipped with fgvc (``fgvc/recipes/*.yaml``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_keys() -> list[str]:
    """Every key a recipe (or ``--set``) takes, one line each with its default and help: the fields of
    ``fgvc.settings``' classes, and ``model.*``, the methods' keyword arguments (``fgvc list settings``)."""
    import inspect

    from ..methods.base import FGVCModel, list_models, model_class

    def signature_defaults(fn: Any) -> dict[str, Any]:
        return {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.name not in ("self", "num_classes", "options") and p.default is not inspect.Parameter.empty
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    lines = describe(RecipeSettings) + [f"{'model.method':<34}  the method (required): {', '.join(list_models())}"]
    lines += [f"{f'model.{k} = {_value_text(v)}':<34}  every method" for k, v in signature_defaults(FGVCModel.__init__).items()]
    for method in list_models():
        own = signature_defaults(model_class(method).__init__)
        lines += [f"{f'model.{k} = {_value_text(v)}':<34}  {method}" for k, v in own.items()]
    lines += describe(DataConfig)
    lines += describe(TrainConfig, prefix="train.", skip=RecipeTrainOptions.SET_PER_RUN) + describe(RecipeTrainOptions)
    return lines


def _recipe_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise ValueError(f"recipe {path} is a directory, not a recipe file (a .yaml file or a recipe name)")
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        hint = did_you_mean(str(name_or_path), list_recipes())
        raise ValueError(
            f"unknown recipe {str(name_or_path)!r}{hint}: not a file, nor one of {', '.join(list_recipes())} "
            f"(fgvc list recipes)"
        )
    return shipped


def apply_overrides(recipe: dict[str, Any], overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.01}`` or ``["train.lr=0.01", "data.root=/data/CUB_200_2011"]`` (values read as YAML)."""
    recipe = copy.deepcopy(recipe)
    items: list[tuple[str, Any]]
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"override {text!r} is not key=value (e.g. train.lr=0.001)")
            items.append((key.strip(), yaml.safe_load(value) if value.strip() else None))
    for key, value in items:
        node = recipe
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[last] = value
    return recipe


def validate_recipe(recipe: Mapping[str, Any], origin: str = "recipe") -> None:
    """Unknown keys and missing sections are named before anything is built (a typo never runs silently):
    each section's keys and values are checked by its settings class (``fgvc.settings``)."""
    RecipeSettings.check_top_level(recipe, origin)
    for section in RecipeSettings.SECTIONS:
        if not isinstance(recipe.get(section), dict):
            raise ValueError(f"{origin}: section {section!r} is missing (a mapping of options)")
    if "method" not in recipe["model"]:
        raise ValueError(f"{origin}: model.method is missing (one of fgvc.list_models())")
    _validate_model_section(recipe["model"], origin)
    if "dataset" not in recipe["data"]:
        raise ValueError(f"{origin}: data.dataset is missing (one of fgvc.data.list_datasets())")
    DataConfig.from_mapping(recipe["data"], origin)
    RecipeTrainOptions.check_section(recipe["train"], origin)
    try:
        check_model_settings(recipe["model"], prefix="model.")
        _check_split_names(recipe["data"])
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None


def recipe_splits(data: Mapping[str, Any]) -> tuple[str, str]:
    """``(train split, test split)`` of a recipe's ``data`` section: ``train_split`` / ``test_split``, or the
    dataset's defaults (``DatasetDef.train_split``: ``trainval`` for FGVC-Aircraft, ``train`` elsewhere; ``test``)."""
    from ..data import dataset_definition

    config = DataConfig.from_mapping(data)
    return (config.train_split or dataset_definition(data["dataset"]).train_split, config.test_split)


def _check_split_names(data: Mapping[str, Any]) -> None:
    """``data.train_split`` / ``data.test_split`` name two different splits the dataset has (where its splits
    do not depend on the folder; otherwise the reader names a missing one when the data is built)."""
    from ..data import dataset_definition

    definition = dataset_definition(data["dataset"])
    train, test = recipe_splits(data)
    if train == test:
        raise ValueError(f"data.train_split and data.test_split are both {train!r}: the test images would be trained on")
    if definition.draw_splits is not None:
        if (train, test) != ("train", "test"):
            raise ValueError(
                f"the {definition.name} dataset draws its own train / val / test splits: data.train_split must be "
                f"'train' and data.test_split 'test', got {train!r} and {test!r}"
            )
        return
    if callable(definition.splits):
        return
    known = list(dict.fromkeys([*definition.splits, definition.train_split]))
    for key, value in (("train_split", train), ("test_split", test)):
        if value not in known:
            raise ValueError(
                f"data.{key} {value!r} is not a split of {definition.name}{did_you_mean(value, known)}; its splits: "
                f"{', '.join(known)}"
            )


def _validate_model_section(model: Mapping[str, Any], origin: str) -> None:
    """``model.*`` keys against the method's options (those of ``create_model``), like ``data.*`` and ``train.*``."""
    from ..methods.base import list_models, model_options

    method = model["method"]
    if method not in list_models():
        raise ValueError(
            f"{origin}: unknown model.method {method!r}{did_you_mean(str(method), list_models())}; "
            f"available: {', '.join(list_models())}"
        )
    if "num_classes" in model:
        raise ValueError(f"{origin}: model.num_classes comes from the data; remove it (data.classes picks a subset)")
    allowed = set(model_options(method)) - {"num_classes"} | {"method"}
    refuse_unknown(model, allowed, "model", origin, context=f" for method {method!r}")


def load_recipe(
    name_or_path: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> dict[str, Any]:
    """Read a recipe (a shipped name such as ``"glsim_cub_224"`` or a YAML path), apply overrides, validate."""
    path = _recipe_path(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {path} is not valid YAML: {err}") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping with model, data and train sections")
    recipe = read_numbers(apply_overrides(recipe, overrides))
    validate_recipe(recipe, origin=str(path))
    return recipe


def read_numbers(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with ``"1e-3"`` read as 0.001 in its model, data and train sections (YAML 1.1 reads an
    exponent without a dot as text); names and paths are left as written."""
    def convert(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: convert(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [convert(v, key) for v in node]
        return node if key in TEXT_KEYS else number_from_text(node)

    return {k: convert(v) if k in ("model", "data", "train") else v for k, v in recipe.items()}


def build_recipe_data(recipe: Mapping[str, Any], model: Any = None) -> dict[str, Dataset]:
    """``{"train", "val", "test"}`` datasets of a recipe, with the transforms of ``model`` (mean, std).

    The training and test splits are ``recipe_splits`` (``data.train_split`` / ``data.test_split``, else the
    dataset's defaults); they must share no image. ``val`` is carved from the training split (``val_fraction``,
    stratified, seeded by ``split_seed``) and uses the test transform; it is absent when ``val_fraction`` is 0 or under ``protocol: paper`` (the whole
    training split is trained on). A generated dataset (the synthetic one) has its own train / val / test
    streams, drawn at the model's input size (``DatasetDef.draw_splits``; ``options`` go to it).
    """
    from ..data import build_dataset, build_transforms, dataset_definition, subset_classes, train_val_split

    data = DataConfig.from_mapping(recipe["data"])
    options = dict(data.options or {})
    val_fraction = 0.0 if RecipeSettings.of(recipe).protocol == "paper" else float(data.val_fraction)
    draw_splits = dataset_definition(data.dataset).draw_splits
    if draw_splits is not None:
        splits: dict[str, Dataset] = dict(draw_splits(None if model is None else model.img_size, **options))
        if not val_fraction:
            splits.pop("val")
        return splits
    if model is None:
        raise ValueError("build_recipe_data needs the model for the transforms (its mean, std and input size)")
    img_size = tuple(model.img_size)
    resize, test_resize = _size(data.resize), _size(data.test_resize_value())
    train_tf = build_transforms(
        model,
        train=True,
        img_size=img_size,
        resize=resize,
        trivial_augment=data.trivial_augment,
        auto_augment=data.auto_augment,
        random_erasing=float(data.random_erasing),
        random_erasing_scale=tuple(data.random_erasing_scale),
    )
    test_tf = build_transforms(model, train=False, img_size=img_size, resize=test_resize)
    train_split, test_split = recipe_splits(recipe["data"])
    train = build_dataset(data.dataset, data.root, train_split, **options)
    test = build_dataset(data.dataset, data.root, test_split, test_tf, **options)
    _check_disjoint(train, test, recipe["data"])
    if data.classes is not None:
        train, test = subset_classes(train, data.classes), subset_classes(test, data.classes)
    if val_fraction > 0:
        train, val = train_val_split(
            train, val_fraction, seed=int(data.split_seed), train_transform=train_tf, val_transform=test_tf
        )
        return {"train": train, "val": val, "test": test}
    from ..data import SubsetDataset

    return {"train": SubsetDataset(train, range(len(train)), transform=train_tf), "test": test}


def _check_disjoint(train: Dataset, test: Dataset, data: Mapping[str, Any]) -> None:
    """Refuse a test split that shares image files with the training split (e.g. aircraft trainval and val)."""
    train_files = {path for path, _ in getattr(train, "samples", [])}
    shared = [path for path, _ in getattr(test, "samples", []) if path in train_files]
    if shared:
        train_split, test_split = recipe_splits(data)
        raise ValueError(
            f"{data['dataset']} at {data.get('root')}: data.test_split {test_split!r} shares {len(shared)} images with "
            f"data.train_split {train_split!r} (e.g. {shared[0]}): a test split must hold images not trained on"
        )


def fit_arguments(recipe: Mapping[str, Any], train_size: int) -> dict[str, Any]:
    """The ``fgvc.fit`` keyword arguments of a recipe: ``steps`` -> epochs, ``lr`` scaled by the batch size.

    ``lr_base_batch_size`` scales ``lr`` by the images per optimizer update (``batch_size`` x
    ``accumulate_steps`` x processes under torchrun); ``steps`` counts optimizer updates, as TransFG does.
    """
    from ..engine.distributed import get_world_size

    own = RecipeTrainOptions.from_mapping({k: v for k, v in recipe["train"].items() if k in RecipeTrainOptions.names()})
    args = {k: v for k, v in recipe["train"].items() if k not in RecipeTrainOptions.names()}
    batch_size = int(args.get("batch_size", TrainConfig.batch_size))
    # the images per optimizer update: batch_size is per process (torchrun) and per accumulated step
    total = batch_size * int(args.get("accumulate_steps", TrainConfig.accumulate_steps)) * get_world_size()
    if own.lr_base_batch_size is not None:  # null (e.g. --set train.lr_base_batch_size=null): off
        args["lr"] = float(args.get("lr", TrainConfig.lr)) * total / float(own.lr_base_batch_size)
    if own.steps is not None:
        steps_per_epoch = max(train_size // total, 1)  # optimizer updates per epoch
        args["epochs"] = max(math.ceil(int(own.steps) / steps_per_epoch), 1)
    return args


def run_info() -> dict[str, Any]:
    """Versions saved beside every run: fgvc, its git commit (when there is one), torch, timm, python."""
    import timm
    import torch

    from ..version import __version__

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return dict(
        fgvc=__version__, git_commit=commit, torch=str(torch.__version__), timm=str(timm.__version__), python=platform.python_version()
    )


@dataclass
class RecipeResult:
    """Per-seed results of a recipe and their mean +- std (sample std over seeds, ddof=1; NaN for one seed)."""

    recipe: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    num_classes: int | None = None  # for the chance row (100 / classes)
    sweep: dict[str, Any] | None = None  # the candidates of train_recipe(sweep=...) and the chosen setting

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{metric: (mean, std)}`` over seeds for every numeric test metric."""
        keys = [k for k in self.runs[0] if k.startswith("test_")] if self.runs else []
        out = {}
        for k in keys:
            values = np.array([r[k] for r in self.runs if r.get(k) is not None], dtype=float)
            if len(values):
                out[k] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan)
        return out

    def to_markdown(self) -> str:
        """One row per seed, then mean +- std; the paper's number, compared only under ``protocol: paper``."""
        if not self.runs:
            return "(no runs)"
        top = RecipeSettings.of(self.recipe)
        protocol = top.protocol
        keys = [k for k in self.runs[0] if k.startswith("test_")]
        if self.num_classes is not None and self.num_classes <= 5:
            keys = [k for k in keys if k != "test_top5"]  # 100% by construction with 5 classes or fewer
        lines = ["| seed | best epoch | val top-1 | " + " | ".join(k[5:] for k in keys) + " |"]
        lines.append("|" + "---|" * (len(keys) + 3))
        for r in self.runs:
            cells = [_fmt(r.get(k)) for k in keys]
            lines.append(f"| {r['seed']} | {r.get('best_epoch')} | {_fmt(r.get('val_top1'))} | " + " | ".join(cells) + " |")
        summary = self.summary()
        cells = [_fmt_mean_std(*summary[k]) if k in summary else "-" for k in keys]
        lines.append("| mean ± std | | | " + " | ".join(cells) + " |")
        if self.num_classes:
            chance = {"test_top1": 100.0 / self.num_classes,
                      "test_top5": 100.0 * 5 / self.num_classes if self.num_classes > 5 else None}
            cells = [_fmt(chance.get(k)) for k in keys]
            lines.append(f"| chance ({self.num_classes} classes) | | {_fmt(chance['test_top1'])} | "
                         + " | ".join(cells) + " |")
        expected, source = top.expected_top1, top.source or "no source"
        lines.append("")
        if protocol == "paper":
            lines.append(
                "Protocol: paper (whole training split, fixed schedule, final checkpoint evaluated on test once)."
            )
            if expected is not None and "test_top1" in summary:
                diff = summary["test_top1"][0] - float(expected)
                lines.append(f"Paper top-1: {expected}; fgvc mean - paper = {diff:+.2f} ({source})")
            else:
                lines.append(f"Paper top-1: {expected if expected is not None else 'not reported'} ({source})")
        else:
            held_out = float(DataConfig.from_mapping(self.recipe.get("data") or {}).val_fraction)
            lines.append(
                f"Protocol: val ({held_out:.0%} of the training split held out, checkpoint chosen on it): not the "
                "papers' setting, so not compared with them."
            )
            shown = expected if expected is not None else "not reported"
            lines.append(f"Paper top-1, for reference only (use protocol: paper to compare): {shown} ({source})")
        if self.sweep:
            lines += ["", *_sweep_markdown(self.sweep)]
        return "\n".join(lines)


def _sweep_markdown(sweep: Mapping[str, Any]) -> list[str]:
    """The candidates of a sweep, their validation top-1 and the choice, as markdown lines."""
    keys = list(sweep["keys"])
    lines = [
        f"Sweep of {', '.join(keys)}: each candidate trained with seed {sweep['seed']} under protocol val and scored "
        "on the validation split (the same for all; the test split is not used to choose):",
        "",
        "| " + " | ".join(keys) + " | val top-1 | best epoch | |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for c in sweep["candidates"]:
        cells = [_value_text(c["setting"][k]) for k in keys]
        lines.append("| " + " | ".join(cells) + f" | {_fmt(c['val_top1'])} | {c['best_epoch']} | "
                     + ("chosen" if c["chosen"] else "") + " |")
    lines += ["", f"Chosen: {_setting_text(sweep['chosen'])} ({sweep['rule']}); the seeds above were trained and "
              "tested with it."]
    return lines


def _fmt_mean_std(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def train_recipe(
    recipe: Mapping[str, Any] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    sweep: Sequence[str] | Mapping[str, Sequence[Any]] | None = None,
    test: bool = True,
    **fit_options: Any,
) -> RecipeResult:
    """Train a recipe once per seed; each run in ``out_dir/seed<N>/`` with its checkpoints and config.

    Each run: build the model and data, ``fgvc.fit``, then one evaluation of the test split with the checkpoint
    the recipe's ``protocol`` names (``val``: the best on the validation split; ``paper``: the final one) (classification, retrieval Recall@K / mAP, and
    crop IoU where the dataset has boxes). ``fit_options`` (e.g. ``device``, ``progress``) override the
    recipe's ``train`` section for every seed. ``results.json`` and ``results.md`` are written to ``out_dir``.

    ``sweep`` (``["train.lr=0.03,0.01,0.003,0.001"]`` or ``{"train.lr": [0.03, 0.01]}``; several keys: every
    combination) first chooses a setting without looking at the test split: each candidate is trained with
    the first seed under protocol ``val`` in ``out_dir/sweep/<i>_<setting>/`` (the same validation split,
    carved from the training split, for all), the best validation top-1 wins (ties: the first listed), and
    only the chosen setting is then trained and tested as above. Both results files list every candidate.
    ``test=False`` trains and validates only (the test split is not evaluated), as the candidates are.
    """
    from ..engine.distributed import barrier, init_distributed, is_main_process
    from ..engine.run_folder import RECIPE_FILES, claim_run_folder
    from ..engine.train import fit, seed_everything
    from ..methods import create_model
    from ..storage.checkpoint import load_weights

    if not isinstance(recipe, Mapping):
        recipe = load_recipe(recipe, overrides)  # read, overridden and validated
    else:
        recipe = read_numbers(apply_overrides(dict(recipe), overrides))  # a copy: the caller's is untouched
        validate_recipe(recipe)
    if seeds is None:
        seeds = list(RecipeSettings.of(recipe).seeds)  # checked with the recipe
    else:
        seeds = list(seeds)
        RecipeSettings.check_values({"seeds": seeds})
    for key, split in zip(("train_split", "test_split"), recipe_splits(recipe["data"]), strict=True):
        recipe["data"].setdefault(key, split)  # config.yaml names the splits used
    out_dir = Path(out_dir)
    swept = None
    if sweep:
        recipe, swept = _run_sweep(recipe, out_dir, sweep, seeds[0], fit_options)
    result = RecipeResult(recipe=recipe, sweep=swept)
    # Under torchrun: join the process group first (a no-op otherwise); every rank trains and evaluates its
    # shard, rank 0 alone writes files.
    device = init_distributed(fit_options.get("device", recipe["train"].get("device")))
    main = is_main_process()
    for seed in seeds:
        run_dir = out_dir / f"seed{seed}"
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
        num_classes = result.num_classes = _num_classes(recipe)
        seed_everything(seed)  # the new layers' initialisation is the seed's, whatever ran before in the process
        model = create_model(num_classes=num_classes, **recipe["model"])
        data = build_recipe_data(recipe, model)
        _check_splits_not_empty(data, recipe["data"])  # before training, not at the test evaluation after it
        args = fit_arguments(recipe, len(data["train"]))
        args.update(fit_options)
        args["device"] = device
        # the seed's folder: this run's alone (locked; another run's files refused, or removed with overwrite)
        with claim_run_folder(run_dir, resume=args.get("resume", False), overwrite=args.get("overwrite", False),
                              patterns=RECIPE_FILES, main=main) as folder:
            folder.clear()
            if main:
                resolved = dict(recipe, seeds=[seed], resolved_fit_arguments=args, run_info=run_info())
                (run_dir / "config.yaml").write_text(yaml.safe_dump(_plain(resolved), sort_keys=False))
            history = fit(model, data["train"], data.get("val"), seed=seed, out_dir=run_dir, **args)
            barrier()  # the checkpoint rank 0 wrote is complete before any rank reads it
            # protocol val: the best checkpoint on validation; paper (no validation split): the final one
            chosen = run_dir / ("best.safetensors" if history.best_epoch is not None else "last.safetensors")
            run = dict(
                seed=seed,
                checkpoint=str(chosen),
                best_epoch=history.best_epoch,
                val_top1=history.best["val_top1"] if history.best else None,
            )
            if test:
                load_weights(model, chosen)
                ev = _evaluate_split(
                    model,
                    data["test"],
                    recipe["data"],
                    batch_size=int(args.get("batch_size", TrainConfig.batch_size)),
                    device=device,
                    num_workers=int(args.get("num_workers", TrainConfig.num_workers)),
                )
                run.update(
                    test_top1=ev.top1,
                    test_top5=ev.top5,
                    test_recall_at_1=ev.retrieval.recall[1] if ev.retrieval else None,
                    test_map=ev.retrieval.map if ev.retrieval else None,
                    test_crop_iou=ev.mean_iou,
                    **{f"test_{level}_top1": v for level, v in (ev.hierarchy_top1 or {}).items()},
                )
            result.runs.append(run)
            if main:
                (run_dir / ("test.json" if test else "val.json")).write_text(json.dumps(run, indent=2))
    if not main:
        return result
    summary = {k: {"mean": m, "std": s} for k, (m, s) in result.summary().items()}
    (out_dir / "results.json").write_text(
        json.dumps(
            dict(
                name=recipe.get("name"), protocol=RecipeSettings.of(recipe).protocol,
                expected_top1=recipe.get("expected_top1"), source=recipe.get("source"), splits=dict(zip(("train", "test"), recipe_splits(recipe["data"]), strict=True)),
                runs=result.runs, summary=summary, **({"sweep": swept} if swept else {}),
            ),
            indent=2,
            allow_nan=True,
        )
    )
    (out_dir / "results.md").write_text(result.to_markdown() + "\n")
    return result


def _check_splits_not_empty(splits: Mapping[str, Dataset], data: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the dataset and split when a split of the recipe has no images."""
    for split, dataset in splits.items():
        if len(dataset) == 0:  # type: ignore[arg-type]
            name, root = data.get("dataset"), data.get("root")
            check = f": check the folder with `fgvc data check {root} --dataset {name}`" if root else ""
            subset = " or the class subset data.classes" if data.get("classes") is not None else ""
            raise ValueError(f"the {split} split of {name}{f' at {root}' if root else ''} has no images{check}{subset}")


# Swept values must leave the validation split (and the task) the same for every candidate.
SWEEP_FIXED = (
    "data.dataset", "data.root", "data.options", "data.classes", "data.train_split", "data.test_split",
    "data.val_fraction", "data.split_seed",
)


def parse_sweep(sweep: Sequence[str] | Mapping[str, Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    """``["train.lr=0.03,0.01"]`` or ``{"train.lr": [0.03, 0.01]}`` -> ``[("train.lr", [0.03, 0.01])]``.

    Keys are dotted recipe keys, as ``--set`` takes; values are read as YAML (``data.resize=[448, 448],[600,
    600]`` is two lists). A key needs two different values or more; keys that would change the validation
    split (``SWEEP_FIXED``) are refused, since every candidate must be scored on the same one.
    """
    items: list[tuple[str, Any]] = []
    if isinstance(sweep, Mapping):
        items = [(str(k), v) for k, v in sweep.items()]
    else:
        for text in sweep:
            key, sep, values = str(text).partition("=")
            if not sep or not key.strip() or not values.strip():
                raise ValueError(f"sweep {text!r} is not KEY=V1,V2,... (e.g. train.lr=0.03,0.01,0.003,0.001)")
            try:
                items.append((key.strip(), yaml.safe_load(f"[{values}]")))
            except yaml.YAMLError:
                raise ValueError(f"sweep {text!r}: the values are not a comma-separated list (e.g. 0.03,0.01)") from None
    out: list[tuple[str, list[Any]]] = []
    for key, values in items:
        if key in (k for k, _ in out):
            raise ValueError(f"sweep: {key} is given twice; give all its values at once ({key}=V1,V2,...)")
        if key.split(".")[0] not in ("model", "data", "train") or key.count(".") < 1:
            raise ValueError(f"sweep {key!r}: only model.*, data.* and train.* settings can be swept (e.g. train.lr)")
        if any(key == f or key.startswith(f + ".") for f in SWEEP_FIXED):
            raise ValueError(
                f"sweep {key!r}: every candidate is scored on the same validation split, so {key} cannot vary"
            )
        values = [number_from_text(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(values) < 2 or len(set(texts)) != len(texts):
            raise ValueError(f"sweep {key}: give two different values or more, got {values!r}")
        out.append((key, values))
    if not out:
        raise ValueError("sweep: no KEY=V1,V2,... given")
    return out


def _run_sweep(
    recipe: dict[str, Any],
    out_dir: Path,
    sweep: Sequence[str] | Mapping[str, Sequence[Any]],
    seed: int,
    fit_options: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every candidate of ``sweep`` under protocol val, without the test split; return the recipe with the
    best validation top-1 (ties: the first listed) and the record of all candidates."""
    import itertools

    grid = parse_sweep(sweep)
    held_out = DataConfig.from_mapping(recipe["data"]).val_fraction
    if not float(held_out) > 0:
        raise ValueError(f"a sweep chooses on the validation split: data.val_fraction must be above 0, got {held_out}")
    keys = [key for key, _ in grid]
    candidates = []
    for combo in itertools.product(*(values for _, values in grid)):
        setting = dict(zip(keys, combo, strict=True))
        candidate = read_numbers(apply_overrides(recipe, {**setting, "protocol": "val"}))
        validate_recipe(candidate, origin=f"sweep {_setting_text(setting)}")
        candidates.append((setting, candidate))  # every candidate is checked before any is trained
    rows = []
    for i, (setting, candidate) in enumerate(candidates):
        run_dir = out_dir / "sweep" / (f"{i}_" + re.sub(r"[^A-Za-z0-9.=,+-]+", "_", _setting_text(setting)))
        (run,) = train_recipe(candidate, run_dir, seeds=[seed], test=False, **fit_options).runs
        rows.append(dict(setting=setting, val_top1=run["val_top1"], best_epoch=run["best_epoch"],
                         checkpoint=run["checkpoint"], chosen=False))
    scores = [r["val_top1"] if r["val_top1"] is not None and not math.isnan(r["val_top1"]) else -math.inf for r in rows]
    best = max(range(len(rows)), key=lambda i: (scores[i], -i))
    rows[best]["chosen"] = True
    record = dict(keys=keys, seed=seed, rule="best validation top-1; ties: the first listed", candidates=rows,
                  chosen=rows[best]["setting"])
    return read_numbers(apply_overrides(recipe, rows[best]["setting"])), record


def _value_text(value: Any) -> str:
    """A value as YAML writes it in flow style (``0.003``, ``[448, 448]``, ``sgd``)."""
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _setting_text(setting: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={_value_text(v)}" for k, v in setting.items())


def _num_classes(recipe: Mapping[str, Any]) -> int:
    """The class count the data will have, read without decoding any image."""
    from ..data import dataset_definition

    data = DataConfig.from_mapping(recipe["data"])
    if isinstance(data.classes, int):
        return data.classes
    if isinstance(data.classes, (list, tuple)):
        return len(data.classes)
    return dataset_definition(data.dataset).num_classes(data.root, dict(data.options or {}))


def _plain(x: Any) -> Any:
    """Tuples -> lists, so that the saved YAML is plain (readable by yaml.safe_load)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)  # e.g. torch.device


def check_output_file(path: str | os.PathLike, what: str = "the results") -> None:
    """Fail now, naming the path, when ``path`` cannot be written (before a long run that would write it)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {what} to {path}: it is a directory")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {what} to {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"cannot write {what} to {path}: permission denied")
    # os.access says yes to root everywhere (also in /proc or on a read-only mount): open the file to be sure,
    # appending to an existing one (which leaves its contents as they are) or creating and removing a new one.
    existed = path.exists()
    try:
        with open(path, "a" if existed else "x"):
            pass
    except OSError as err:
        raise PermissionError(f"cannot write {what} to {path}: {err.strerror or err}") from None
    if not existed:
        path.unlink()


def _size(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def test_transform_for(model: Any, checkpoint: str | os.PathLike | None = None) -> Any:
    """The test transform of a trained model: its run's test resize when ``config.yaml`` is beside it."""
    from ..data import build_transforms

    config = run_config(checkpoint) if checkpoint is not None else None
    resize = _size(DataConfig.from_mapping((config or {}).get("data") or {}).test_resize_value())
    return build_transforms(model, train=False, img_size=tuple(model.img_size), resize=resize)


def checkpoint_split(
    checkpoint: str | os.PathLike,
    root: str | os.PathLike | None,
    *,
    dataset: str | None = None,
    split: str = "test",
) -> tuple[Any, Dataset]:
    """The model of an fgvc checkpoint and the split it is evaluated on, as ``evaluate_checkpoint`` builds it.

    The dataset name, its options, the class subset and the test resize come from the run's ``config.yaml``
    beside the checkpoint when it is there; ``dataset`` overrides the name. The items are the checkpoint's
    test transform of each image (normalized tensors at its input size), the labels its classes; when the
    dataset has boxes, ``input_boxes`` are in the model's input frame. The dataset's classes must be the
    checkpoint's (same count and names), else the error says which differ; with parts (CUB's ``parts/``), also
    ``input_parts`` (``EvalParts``). A generated dataset (the
    synthetic one) is drawn again from the run's options (``root`` is not used), so the split is the very one
    training evaluated.
    """
    from ..data import (
        EvalBoxes,
        boxes_pixels_of,
        build_dataset,
        dataset_definition,
        input_boxes_of,
        subset_classes,
    )
    from ..data.parts import EvalParts, parts_pixels_of
    from ..engine.evaluate import check_same_classes
    from ..storage.checkpoint import load_model

    model = load_model(checkpoint)
    config = run_config(checkpoint) or {}
    data = dict(config.get("data") or {})
    name = dataset or data.get("dataset")
    if name is None:
        raise ValueError(f"no config.yaml beside {checkpoint} says which dataset it was trained on: pass dataset=")
    same = name == data.get("dataset")
    options = dict(data.get("options") or {}) if same else {}
    draw_splits = dataset_definition(name).draw_splits
    if draw_splits is not None:  # the very split training evaluated: same sizes, seed and input size, no transform
        splits = draw_splits(model.img_size, **options)
        if split not in splits:
            raise ValueError(f"the {name} dataset has the splits {sorted(splits)}, got {split!r}")
        test = splits[split]
    else:
        test = build_dataset(name, root, split, test_transform_for(model, checkpoint), **options)
    if same and data.get("classes") is not None:
        test = subset_classes(test, data["classes"])
    _check_splits_not_empty({split: test}, dict(data if same else {}, dataset=name, root=root))
    check_same_classes(model, test, data_name=f"{root} ({name}, {split})", model_name=f"checkpoint {checkpoint}")
    has_parts = parts_pixels_of(test) is not None
    if input_boxes_of(test) is None and (boxes_pixels_of(test) is not None or has_parts):
        resize = _size(DataConfig.from_mapping(data).test_resize_value())
        wrap = EvalParts if has_parts else EvalBoxes  # EvalParts maps the boxes as EvalBoxes does, and the parts
        test = wrap(test, img_size=tuple(model.img_size), resize=resize)
    return model, test


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    root: str | os.PathLike | None,
    *,
    dataset: str | None = None,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    **evaluate_options: Any,
) -> Any:
    """Evaluate an fgvc checkpoint on a split of a dataset folder (what ``fgvc eval`` runs).

    The model and the split are ``checkpoint_split``'s (the run's dataset, class subset and test transform
    from its ``config.yaml``; the synthetic dataset rebuilt from the run's options). Retrieval metrics are
    added when some class has two images or more; crop IoU when the dataset has boxes. ``out_dir``: also write
    the metrics, per-class accuracy, confusion matrix and most confused pairs there (``save_evaluation``).
    ``evaluate_options`` go to ``fgvc.evaluate`` (``batch_size``, ``device``, ``tta``, ``hierarchy``, ...).
    """
    from ..engine.distributed import init_distributed

    init_distributed(evaluate_options.get("device"))  # under torchrun every rank evaluates its shard
    model, test = checkpoint_split(checkpoint, root, dataset=dataset, split=split)
    result = _evaluate_split(model, test, {}, **evaluate_options)
    from ..engine.distributed import is_main_process

    if out_dir is not None and is_main_process():
        from .report import save_evaluation

        cfg = model.data_config
        name = dataset or ((run_config(checkpoint) or {}).get("data") or {}).get("dataset")
        info = dict(checkpoint=str(checkpoint), dataset=name, data=str(root), split=split)
        save_evaluation(result, out_dir, data=test, info=info, mean=cfg["mean"], std=cfg["std"])
    return result


def _evaluate_split(model: Any, test: Dataset, data: Mapping[str, Any], **evaluate_options: Any) -> Any:
    """``evaluate`` with boxes mapped into the model's input frame and retrieval where it is defined."""
    from ..data import EvalBoxes, boxes_pixels_of, input_boxes_of, targets_of
    from ..engine.evaluate import evaluate

    if input_boxes_of(test) is None and boxes_pixels_of(test) is not None:
        resize = _size(DataConfig.from_mapping(data).test_resize_value())
        test = EvalBoxes(test, img_size=tuple(model.img_size), resize=resize)
    # Retrieval needs a class with two images or more (each query must have something to find).
    targets = targets_of(test)
    counts = np.bincount(np.asarray(targets if targets is not None else [0], dtype=np.int64))
    return evaluate(model, test, retrieval=bool(counts.max() >= 2), **evaluate_options)
