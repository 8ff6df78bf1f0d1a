"""What the notebooks need beyond the public API, kept here so that a notebook is one import and its cells
read as steps: the laptop-sized settings of a recipe, checkpoints given as ``dataset:method=path``, their
evaluation on the matching test split, and quick stand-in models when there is nothing to evaluate.

    from fgvc.studies import notebook
    recipe, note = notebook.recipe_for_here("glsim_cub_224", "../data/CUB_200_2011", smoke=False)
    runs = notebook.evaluate_checkpoints("cub:glsim=runs/glsim/seed0/best.safetensors", {"cub": "data/CUB_200_2011"})
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Evaluated",
    "LAPTOP",
    "StandIns",
    "evaluate_checkpoints",
    "examples",
    "laptop_overrides",
    "parse_checkpoints",
    "quick_stand_ins",
    "recipe_for_here",
]

#: A recipe made laptop-sized: a small ViT from scratch, a few epochs, AdamW; ``smoke`` shrinks it further
#: (what the test suite runs). Keys are recipe overrides (``fgvc.load_recipe(name, overrides)``).
LAPTOP: dict[str, dict[str, Any]] = {
    "full": {
        "model.pretrained": False, "model.backbone": "vit_tiny_patch16_224", "model.drop_path_rate": 0.0,
        "model.backbone_kwargs": {"depth": 6}, "model.img_size": 112, "train.epochs": 30, "train.batch_size": 32,
        "train.optimizer": "adamw", "train.lr": 1e-3, "train.weight_decay": 0.05, "train.warmup_steps": None,
        "train.lr_base_batch_size": None, "train.steps": None,
    },
    "smoke": {"model.backbone_kwargs": {"depth": 2}, "model.img_size": 64, "train.epochs": 1, "train.batch_size": 16},
}


def laptop_overrides(method: str, *, smoke: bool = False) -> dict[str, Any]:
    """``LAPTOP``'s overrides for ``method``, with the method's own options for small inputs
    (``small_input_options``, e.g. GLSim keeps 4 of the small grid's cells: ``model.top_k``)."""
    from ..methods.base import model_class

    out = dict(LAPTOP["full"], **(LAPTOP["smoke"] if smoke else {}))
    out.update({f"model.{k}": v for k, v in model_class(method).small_input_options.items()})
    return out


def recipe_for_here(
    name: str, cub_root: str | os.PathLike | None, *, smoke: bool = False
) -> tuple[dict[str, Any], str]:
    """The recipe ``name`` as it can run on this machine, and a sentence saying which data and settings.

    In order: the official CUB in ``cub_root`` (the recipe as published; in small mode made laptop-sized),
    the real 100-species CUB subset (``fgvc.data.cub_subset``; laptop-sized, a class subset), the built-in
    synthetic data (laptop-sized).
    """
    from ..data import cub_subset, find_dataset
    from .recipe import load_recipe

    method = load_recipe(name)["model"]["method"]
    quick = laptop_overrides(method, smoke=smoke)
    official = find_dataset("cub", cub_root)
    subset = cub_subset()
    if official is not None and not smoke:
        overrides: dict[str, Any] = {"data.root": str(official)}
        note = f"Data: the official CUB-200-2011 at {official}: the recipe as published (a reproduction run)."
    elif official is not None or subset is not None:
        root = official if official is not None else subset
        overrides = dict(quick, **{"data.root": str(root), "data.classes": 5 if smoke else 20,
                                   "data.resize": 72 if smoke else 128})
        what = "the official CUB-200-2011" if official is not None else "the real 100-species CUB subset"
        note = f"Data: {what} at {root}: a from-scratch sanity run on a class subset, not a reproduction."
    else:
        overrides = _synthetic_overrides(smoke)
        note = ("Data: no CUB folder found, so the built-in synthetic fine-grained dataset (see data/README.md), "
                "fine-tuned from the shipped backbone with fgvc demo's settings.")
    lines = [note] + [f"  {key} = {value}" for key, value in overrides.items()]
    return load_recipe(name, overrides), "\n".join(lines)


def _synthetic_overrides(smoke: bool) -> dict[str, Any]:
    """Recipe overrides that fine-tune from the shipped synthetic backbone on synthetic data with
    ``fgvc.studies.demo.FULL``'s settings (``smoke``: a few images, one epoch): its model and fit options
    under their recipe keys, the recipe's own paper settings (SGD, warmup, batch-scaled lr, steps, resize,
    stochastic depth) switched off."""
    from dataclasses import replace

    from .demo import FULL

    run = replace(FULL, train=64, val=32, test=32, epochs=1) if smoke else FULL
    fit_options = {k: v for k, v in run.fit_options().items() if k != "seed"}  # the recipe's seeds say which
    return {
        **{f"model.{k}": v for k, v in run.model_options().items()},
        "model.drop_path_rate": 0.0, "model.backbone_kwargs": {},  # the shipped weights' own mean and std
        **{f"train.{k}": v for k, v in fit_options.items()},
        "train.optimizer": "adamw", "train.warmup_steps": None, "train.lr_base_batch_size": None, "train.steps": None,
        "data.dataset": "synthetic", "data.resize": None,
        "data.options": {k: v for k, v in run.data_options().items() if k != "image_size"},  # drawn at img_size
    }


def parse_checkpoints(spec: str | Mapping[str, Any] | None) -> dict[tuple[str, str], Path]:
    """Checkpoints by ``(dataset, method)`` from ``"cub:glsim=a.safetensors,cars:vit=b.safetensors"`` (what
    ``FGVC_CHECKPOINTS`` holds) or from a dict ``{"cub": {"glsim": path}}``. Empty or None: none."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        return {(d, m): Path(p) for d, by_method in spec.items() for m, p in by_method.items()}
    out: dict[tuple[str, str], Path] = {}
    for item in str(spec).split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, path = item.partition("=")
        dataset, colon, method = key.partition(":")
        if not sep or not colon or not dataset.strip() or not method.strip() or not path.strip():
            raise ValueError(f"checkpoint {item!r} is not dataset:method=path (e.g. cub:glsim=best.safetensors)")
        out[(dataset.strip(), method.strip())] = Path(path.strip()).expanduser()
    return out


@dataclass
class Evaluated:
    """Results, models and test splits by ``(dataset label, method)``; ``tests`` by dataset label."""

    results: dict[tuple[str, str], Any] = field(default_factory=dict)
    models: dict[tuple[str, str], Any] = field(default_factory=dict)
    tests: dict[str, Any] = field(default_factory=dict)


def evaluate_checkpoints(
    checkpoints: str | Mapping[str, Any] | Mapping[tuple[str, str], Any] | None,
    roots: Mapping[str, str | os.PathLike | None],
    *,
    device: str | None = None,
    verbose: bool = True,
) -> Evaluated:
    """Evaluate each checkpoint on the test split of its dataset's folder (``roots[dataset]``), as
    ``fgvc eval`` does: the checkpoint's own test transform and class subset (``recipe.checkpoint_split``).

    Checkpoints whose file or dataset folder is missing are skipped and named (``verbose``).
    """
    from .recipe import _evaluate_split, checkpoint_split

    if isinstance(checkpoints, Mapping) and checkpoints and all(isinstance(k, tuple) for k in checkpoints):
        pairs = {k: Path(v) for k, v in checkpoints.items()}
    else:
        pairs = parse_checkpoints(checkpoints)  # type: ignore[arg-type]
    out = Evaluated()
    skipped: dict[str, list[str]] = {}
    for (dataset, method), path in pairs.items():
        root = roots.get(dataset)
        if root is None or not Path(path).is_file():
            why = f"no {dataset} data folder" if root is None else "no checkpoint file"
            skipped.setdefault(why, []).append(f"{dataset}:{method}")
            continue
        model, test = checkpoint_split(path, root, dataset=dataset)
        out.results[(dataset, method)] = _evaluate_split(model, test, {}, device=device)
        out.models[(dataset, method)] = model
        out.tests[dataset] = test  # one test split per dataset: the checkpoints of a dataset share it
        if verbose:
            print(f"{dataset}:{method}: {path} on {len(test)} test images, {model.num_classes} classes")
    if verbose:
        for why, keys in skipped.items():
            print(f"skipped ({why}): {', '.join(keys)}")
    return out


class StandIns:
    """Small models trained one method at a time (one notebook cell each, so that no cell runs long) when there
    is no checkpoint to evaluate, and evaluated on their test split; ``runs`` collects them as
    ``evaluate_checkpoints`` does.

    On the real CUB subset (a class subset): from scratch, a few epochs, so they show the tools, not the
    methods. Without it, on synthetic data: fine-tuned from the shipped backbone with ``fgvc demo``'s settings,
    so their maps show learned behaviour.

        stand_ins = StandIns()      # picks the data and prints which
        stand_ins.train("vit")      # trains, evaluates, adds to stand_ins.runs
    """

    def __init__(self, *, smoke: bool = False, epochs: int | None = None, device: str | None = None) -> None:
        self.smoke, self.device = smoke, device
        split = self._cub_subset(epochs) or self._synthetic(epochs)
        self.label, self.train_data, self.val_data, test = split
        self.runs = Evaluated(tests={self.label: test})
        print(f"Stand-ins on {self.label}: {self.fit_options['epochs']} epoch(s) each, "
              f"{self.model_options['img_size']} px.")

    def _cub_subset(self, epochs: int | None) -> tuple[str, Any, Any, Any] | None:
        from ..data import build_dataset, build_transforms, cub_subset, subset_classes, train_val_split
        from ..methods import create_model
        from ..methods.base import BASELINE

        subset = cub_subset()
        if subset is None:
            return None
        size, classes = (64, 5) if self.smoke else (112, 20)
        self.model_options = dict(backbone="vit_tiny_patch16_224", num_classes=classes, img_size=size,
                                  backbone_kwargs=dict(depth=2 if self.smoke else 6))
        self.fit_options = dict(epochs=epochs or (1 if self.smoke else 8), batch_size=32, lr=1e-3)
        probe = create_model(BASELINE, **self.model_options)
        train_tf = build_transforms(probe, train=True, img_size=size, resize=round(size * 1.15))
        test_tf = build_transforms(probe, train=False, img_size=size, resize=round(size * 1.15))
        train = subset_classes(build_dataset("cub", subset, "train"), classes)
        train, val = train_val_split(train, 0.1, train_transform=train_tf, val_transform=test_tf)
        test = subset_classes(build_dataset("cub", subset, "test", test_tf), classes)
        return f"cub-subset ({classes} classes, from scratch)", train, val, test

    def _synthetic(self, epochs: int | None) -> tuple[str, Any, Any, Any]:
        from dataclasses import replace

        from .demo import FULL

        run = replace(FULL, train=64, val=32, test=32, epochs=1) if self.smoke else FULL
        self.model_options = dict(backbone=run.backbone, pretrained=run.pretrained, num_classes=run.num_classes,
                                  img_size=run.img_size)
        self.fit_options = dict(epochs=epochs or run.epochs, batch_size=run.batch_size, lr=run.lr,
                                backbone_lr_scale=run.backbone_lr_scale, weight_decay=run.weight_decay,
                                seed=run.seed)
        data = run.splits()
        label = f"synthetic ({run.num_classes} classes, fine-tuned from {run.backbone})"
        return label, data["train"], data["val"], data["test"]

    def train(self, method: str) -> Any:
        """Train and evaluate the stand-in for ``method``; returns its ``EvalResult`` (also kept in ``runs``)."""
        from ..data import classes_of
        from ..engine.evaluate import evaluate
        from ..engine.train import fit, seed_everything
        from ..methods import create_model
        from ..methods.base import model_class
        from ..storage.checkpoint import load_model

        test = self.runs.tests[self.label]
        seed_everything(self.fit_options.get("seed", 0))  # the same initialisation of the head on every run
        options = dict(self.model_options)
        if not options.get("pretrained"):
            options.update(model_class(method).small_input_options)
        model = create_model(method, **options)
        with tempfile.TemporaryDirectory() as run_dir:  # the checkpoint chosen on validation, as fgvc demo does
            fit(model, self.train_data, self.val_data, device=self.device, progress=not self.smoke,
                out_dir=run_dir, **self.fit_options)
            model = load_model(Path(run_dir) / "best.safetensors", device=self.device or "cpu")
        if classes_of(test):
            model.class_names = list(test.classes)
        result = self.runs.results[(self.label, method)] = evaluate(model, test, retrieval=True)
        self.runs.models[(self.label, method)] = model
        return result


def quick_stand_ins(
    methods: Sequence[str], *, smoke: bool = False, epochs: int | None = None, device: str | None = None
) -> Evaluated:
    """``StandIns`` for every method of ``methods``, trained in turn (in one call)."""
    stand_ins = StandIns(smoke=smoke, epochs=epochs, device=device)
    for method in methods:
        stand_ins.train(method)
    return stand_ins.runs


def examples(test: Any, n: int = 3, *, start: int = 0) -> dict[str, Any]:
    """``n`` test items spread over the split (from ``start``), as ``viz.plot_maps`` takes them: ``images``
    (n, 3, H, W), ``targets``, ``gt_boxes`` (n, 4) in input pixels or None, ``indices``."""
    import torch

    from ..data import input_boxes_of

    step = max(1, len(test) // max(n, 1))
    indices = [(start + k * step) % len(test) for k in range(min(n, len(test)))]
    images = torch.stack([torch.as_tensor(test[i][0]) for i in indices])
    h, w = images.shape[-2:]
    boxes = input_boxes_of(test)
    gt = None if boxes is None else torch.as_tensor(boxes)[indices].float() * torch.tensor([w, h, w, h])
    return {"images": images, "targets": [int(test[i][1]) for i in indices], "gt_boxes": gt, "indices": indices}
