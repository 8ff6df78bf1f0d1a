"""``fgvc demo``: every method fine-tuned from fgvc's shipped backbone on synthetic fine-grained data, on a CPU.

Each method (default: vit, glsim, glsim_inclusive, dcal, transfg_nodropout: GLSim as published and with its
box's last row and column kept, TransFG without the dropout fgvc's backbone was not pretrained with) starts from
the same pretrained backbone
(``fgvc_synth_vit_tiny``, see ``fgvc.studies.pretrain``: pretrained on synthetic classes disjoint from the demo's)
and gets the same data, schedule and seed; the checkpoint is chosen on the validation split and the test
split is evaluated once. The table gives top-1 / top-5, the crop IoU (GLSim's box against the true detail
box), the pointing game (the peak of the map a method selects with inside the detail), parameters and
training time; a figure shows where each method looks on the same test images.

Two settings: the default, a 31 px detail on a 128 px image, where every method should learn and find the
detail; and ``hard=True``, a 7 px detail on the same 128 px image (smaller than one 8 px patch's worth of
legible pixels), the fine-grained regime in which reading a magnified crop should pay. A method named
``METHOD@SIZE`` (e.g. ``vit@64``) is trained and tested on the same pictures downscaled to SIZE px
(``Downscaled``), and ``vocabulary`` picks the classes by name.

Reproducible: a fixed thread count (``threads``), deterministic algorithms and seeded everything, so a given
seed prints the same numbers on every run of the same machine type and torch version. The methods are
independent runs: with ``workers`` > 1 they train side by side in spawned processes, each at the same
``threads``, so the table does not depend on how many run at once.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import timm
import torch

from ..data import synthetic_splits
from ..data.contract import FGVCDataset
from ..data.synthetic import all_class_names
from ..engine.evaluate import evaluate
from ..engine.train import fit, reproducible, seed_everything
from ..methods.base import create_model, list_models, method_variants, resolve_method
from ..settings import Settings, TrainConfig, at_least, flag, like, option, text
from ..storage.checkpoint import load_model
from ..version import __version__

__all__ = ["DemoSettings", "Downscaled", "FULL", "HARD", "QUICK", "demo_settings", "downscale", "format_table",
           "run_demo", "split_input_size", "summarize_seeds"]


def split_input_size(method: str) -> tuple[str, int | None]:
    """``"vit@64"`` -> ``("vit", 64)``: the method and the side its model's input is downscaled to (None:
    the images' own size); ``"vit"`` -> ``("vit", None)``."""
    name, at, size = str(method).partition("@")
    if not at:
        return name, None
    if not size.isdigit() or int(size) < 16:
        raise ValueError(f"method {method!r}: the size after '@' must be an integer side in pixels >= 16")
    return name, int(size)


def _method_names(name: str, value: Any) -> None:
    """Methods of ``fgvc.list_models()`` or their named variants (``method_variants``), at least one; each
    may end in ``@SIZE`` (``split_input_size``)."""
    variants = method_variants()  # named option sets of a method, e.g. ``glsim_top2``
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a list of method names, got {value!r}")
    known = {m: split_input_size(m)[0] for m in value}
    unknown = [m for m, base in known.items() if base not in list_models() and base not in variants]
    if unknown or not value:
        raise ValueError(f"unknown {name} {unknown}; available: {', '.join(list_models())}; "
                         f"variants: {', '.join(variants)}; any of them may end in @SIZE (e.g. vit@64)")


def _vocabulary(name: str, value: Any) -> None:
    """Empty (the default grid of ``num_classes`` classes) or at least two distinct class names."""
    names = set(all_class_names())
    if not isinstance(value, (tuple, list)) or len(value) == 1 or len(set(value)) != len(value) or any(
        v not in names for v in value
    ):
        raise ValueError(f"{name} must be empty or at least 2 distinct 'colour-shape' names (e.g. "
                         f"red-circle,red-ring), got {value!r}")


@dataclass(frozen=True)
class DemoSettings(Settings):
    """Everything the demo trains with (one place, printed with the results; ``fgvc demo`` has a flag for
    each). The training options mean what ``fgvc.TrainConfig``'s of the same name mean, checked alike."""

    section: ClassVar[str] = "demo"

    #: The four methods; GLSim as published (top-8 patches, the box's last row and column dropped). TransFG
    #: without dropout: the official 0.1 matches the pretraining of Google's ViT, and fgvc's backbone was
    #: pretrained without it (docs/results.md compares the two). The variants, such as ``glsim_inclusive``
    #: (the box's last row and column kept, so that its crop covers the detail), run with ``--methods``.
    methods: tuple[str, ...] = option(("vit", "glsim", "dcal", "transfg_nodropout"), _method_names,
                                      "methods or variants such as glsim_top2 (fgvc list methods); "
                                      "METHOD@SIZE: its input downscaled to SIZE px, e.g. vit@64")
    backbone: str = option("fgvc_synth_vit_tiny", text("fgvc_synth_vit_tiny"), "the backbone fine-tuned")
    pretrained: bool = option(True, flag(), "start from the backbone's pretrained weights")
    img_size: int = option(128, at_least(16), "image side in pixels")
    detail_px: int = option(31, at_least(1), "side of the class-deciding detail in pixels at img_size")
    num_classes: int = option(10, at_least(2), "classes")
    #: The classes by name (``SyntheticFGVC``'s ``vocabulary``), e.g. one colour and several shapes, so that
    #: the shape, a few pixels, decides; empty: the default grid of ``num_classes`` classes.
    vocabulary: tuple[str, ...] = option((), _vocabulary, "class names, e.g. red-circle,red-ring; empty: the "
                                         "grid of num_classes classes")
    num_distractors: int = option(4, at_least(0), "distractor shapes per image")
    train: int = option(1500, at_least(1), "training images")
    val: int = option(300, at_least(1), "validation images (the checkpoint is chosen on them)")
    test: int = option(1000, at_least(1), "test images")
    epochs: int = like(TrainConfig, "epochs", 2)
    batch_size: int = like(TrainConfig, "batch_size", 32)
    lr: float = like(TrainConfig, "lr", 1e-3, help="learning rate of the layers each method adds (heads, "
                     "aggregator, GLCA, TransFG's part block)")
    weight_decay: float = like(TrainConfig, "weight_decay", 0.05)
    #: The pretrained backbone at 1e-7, nearly frozen: the new layers learn on the selection pretraining
    #: taught (docs/results.md: "The backbone's rate").
    backbone_lr_scale: float = like(TrainConfig, "backbone_lr_scale", 1e-4)
    seed: int = like(TrainConfig, "seed", 0)
    threads: int = option(2, at_least(1), "CPU threads (fixed, so that the numbers repeat on the same machine)")

    def fit_options(self) -> dict[str, Any]:
        """The settings that are ``fgvc.fit`` options (``TrainConfig``'s names): a recipe's ``train`` section."""
        return {name: getattr(self, name) for name in self.names() if name in TrainConfig.names()}

    @property
    def class_count(self) -> int:
        """The number of classes: the vocabulary's length when one is given, else ``num_classes``."""
        return len(self.vocabulary) if self.vocabulary else self.num_classes

    def model_options(self) -> dict[str, Any]:
        """The settings that are ``fgvc.create_model`` options: a recipe's ``model`` section, less the method."""
        return dict(backbone=self.backbone, pretrained=self.pretrained, img_size=self.img_size)

    @property
    def detail_fraction(self) -> float:
        """The generator's ``detail_fraction`` that gives a ``detail_px`` detail at ``img_size``."""
        return (self.detail_px**2 + 0.5) / self.img_size**2

    def data_options(self) -> dict[str, Any]:
        """``synthetic_splits``' arguments for these settings (also a recipe's ``data.options``)."""
        options = dict(num_classes=self.num_classes, image_size=self.img_size, train=self.train, val=self.val,
                       test=self.test, seed=self.seed, num_distractors=self.num_distractors,
                       detail_fraction=self.detail_fraction)
        if self.vocabulary:
            options.update(num_classes=len(self.vocabulary), vocabulary=list(self.vocabulary))
        return options

    def splits(self) -> dict[str, Any]:
        """The train / val / test datasets these settings describe."""
        return synthetic_splits(**self.data_options())


#: The demo's settings (``fgvc demo``).
FULL = DemoSettings()
QUICK = replace(FULL, train=600, val=100, test=300, epochs=1)
#: A 7 px detail: GLSim also with fgvc's compact-box variant (top-2 patches), since the default top-8 box of a
#: detail one or two patches wide is mostly background and the crop is hardly magnified.
HARD = replace(FULL, train=2000, detail_px=7, methods=("vit", "glsim", "glsim_top2", "dcal", "transfg"))


def demo_settings(*, quick: bool = False, hard: bool = False, base: DemoSettings | None = None) -> DemoSettings:
    """The settings ``run_demo`` trains with: ``base`` (default ``HARD`` or ``FULL``), with ``QUICK``'s data
    sizes and epochs when ``quick``."""
    s = base or (HARD if hard else FULL)
    return replace(s, train=QUICK.train, val=QUICK.val, test=QUICK.test, epochs=QUICK.epochs) if quick else s


def run_demo(
    *,
    quick: bool = False,
    hard: bool = False,
    out_dir: str | os.PathLike = "fgvc_demo",
    settings: DemoSettings | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    device: str | None = None,
    progress: bool = True,
    backbone_lr_scale: float | None = None,
    workers: int | None = 1,
) -> list[dict[str, Any]]:
    """Fine-tune and compare the demo's methods; writes checkpoints, ``results.md``/``.json`` and a figure.

    Each method's run goes to ``out_dir/<method>/`` (``out_dir/seed<N>/<method>/`` with several seeds) and
    replaces an earlier demo's run there (``fit(overwrite=True)``), so the demo can be run again into one folder.

    ``methods`` overrides the settings' methods (any of ``fgvc.list_models()``, or a variant such as
    ``glsim_top2``: ``fgvc.methods.base.method_variants()``); ``seeds`` runs every method
    once per seed (data and training both follow the seed) and adds a mean +- std table.
    ``backbone_lr_scale`` overrides the settings' (the pretrained backbone's rate over the new layers').
    ``workers``: how many methods train at once, each in a spawned process at the settings' ``threads`` (the
    same numbers as one at a time); ``None`` picks one per ``threads`` CPU cores on the CPU and 1 on a GPU.
    A script that calls this with several workers needs the ``if __name__ == "__main__":`` guard that
    spawned processes need.
    """
    s = demo_settings(quick=quick, hard=hard, base=settings)
    if backbone_lr_scale is not None:
        s = replace(s, backbone_lr_scale=float(backbone_lr_scale))
    if methods is not None:
        s = replace(s, methods=tuple(methods))
    seeds = [s.seed] if seeds is None else [int(x) for x in seeds]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start_from = f"the shipped {s.backbone}" if s.pretrained else "scratch"
    print(
        f"fgvc demo: synthetic fine-grained data, {s.class_count} classes (chance {100 / s.class_count:.0f}%), "
        f"{s.detail_px} px detail on {s.img_size} px images, {s.train}/{s.val}/{s.test} train/val/test; "
        f"{s.epochs} epochs from {start_from} (lr {s.lr:g}, backbone x {s.backbone_lr_scale:g}), "
        f"seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}; writing to {out}/"
    )
    runs = {seed: (replace(s, seed=seed), out if len(seeds) == 1 else out / f"seed{seed}") for seed in seeds}
    jobs = [(method, run, run_dir) for run, run_dir in runs.values() for method in run.methods]
    workers = _count_workers(workers, len(jobs), s.threads, device)
    with reproducible(s.threads):
        rows = [] if workers == 1 else _train_in_workers(jobs, device, workers)
        for run, run_dir in runs.values():
            if workers == 1:  # one method after another in this process, on splits drawn once per seed
                data, models = run.splits(), {}
                for method in run.methods:
                    row, models[method] = _train_one(method, run, data, run_dir, device, progress)
                    rows.append(row)
                    print(format_table([row], header=len(rows) == 1), flush=True)
            else:
                data = {"test": run.splits()["test"]}
                models = {method: _load_best(run_dir, method, device) for method in run.methods}
            figure = run_dir / "where_they_look.png"
            save_looks_figure(models, data["test"], figure)
            print(f"figure: {figure} (where each method looks on the same test images; green: the true detail)")
    table = format_table(rows)
    text = f"Test split (checkpoint chosen on validation), chance {100 / s.class_count:.0f}% top-1:\n\n{table}"
    if len(seeds) > 1:
        text += "\n\nMean +- std over seeds " + ", ".join(map(str, seeds)) + ":\n\n" + summarize_seeds(rows)
    print("\n" + text)
    (out / "results.md").write_text(text + "\n")
    versions = dict(
        fgvc=__version__, torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        machine=platform.machine(), threads=s.threads,
    )
    (out / "results.json").write_text(
        json.dumps(dict(settings=asdict(s), seeds=seeds, versions=versions, workers=workers, results=rows),
                   indent=2)
    )
    return rows


def _count_workers(workers: int | None, jobs: int, threads: int, device: str | None) -> int:
    """The number of processes to train in: ``workers``, or (``None``) one per ``threads`` usable CPU cores,
    1 on a GPU; never more than there are runs."""
    if workers is None:
        on_gpu = torch.device(device).type != "cpu" if device else torch.cuda.is_available()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = 1 if on_gpu else cores // max(1, threads)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return max(1, min(workers, jobs))


Job = tuple[str, DemoSettings, Path]  # (method, settings with the run's seed, the run's folder)


def _train_in_workers(jobs: list[Job], device: str | None, workers: int) -> list[dict[str, Any]]:
    """The runs in ``workers`` spawned processes, each row printed as it finishes; the rows in ``jobs``'
    order."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from ..methods.plugins import import_plugins, plugin_modules

    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    registered = (resolve_method(split_input_size(method)[0])[0] for method, _, _ in jobs)
    plugins = plugin_modules(registered)  # a spawned worker imports them
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=import_plugins,
                             initargs=(plugins,)) as pool:
        futures = {pool.submit(_train_in_worker, *job, device): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures)):
            rows[futures[future]] = row = future.result()
            print(format_table([row], header=done == 0), flush=True)
    return rows  # type: ignore[return-value]


def _train_in_worker(method: str, run: DemoSettings, run_dir: Path, device: str | None) -> dict[str, Any]:
    """One run in a worker process, at the settings' thread count (no progress bars: the runs print side by
    side)."""
    with reproducible(run.threads):
        return _train_one(method, run, _worker_splits(run), run_dir, device, progress=False)[0]


@functools.lru_cache(maxsize=1)
def _worker_splits(s: DemoSettings) -> dict[str, Any]:
    """``s.splits()`` once per worker process for the runs it trains on them (the images are cached as drawn);
    the worker's cache goes with the worker."""
    return s.splits()


class Downscaled(FGVCDataset):
    """``data``'s images downscaled to ``size`` x ``size`` (``downscale``), its labels and boxes as they are
    (fractions of the image, which the resize does not move): the demo's ``method@SIZE``, a model that reads
    the same pictures at a lower resolution."""

    def __init__(self, data: Any, size: int) -> None:
        self.data, self.size = data, int(size)
        self.targets = data.targets
        self.classes = getattr(data, "classes", None)
        self.boxes = getattr(data, "boxes", None)
        self.input_boxes = getattr(data, "input_boxes", None)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.data[i]  # (3, H, W)
        return downscale(image[None], (self.size, self.size))[0], label  # (3, size, size)


def downscale(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) images -> (B, 3, *size): bilinear with antialiasing, as a lower-resolution camera sees."""
    return torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                           antialias=True)


def _load_best(run_dir: Path, method: str, device: str | None) -> Any:
    return load_model(run_dir / method / "best.safetensors", device=device or "cpu")


def _train_one(
    method: str, s: DemoSettings, data: dict[str, Any], out: Path, device: str | None, progress: bool
) -> tuple[dict[str, Any], Any]:
    seed_everything(s.seed)  # the new layers' initialisation does not depend on what ran before
    name, size = split_input_size(method)  # "vit@64": the plain ViT on the same images downscaled to 64 px
    registered, options = resolve_method(name)  # a variant is a method with named options
    model_options = s.model_options() if size is None else {**s.model_options(), "img_size": size}
    model = create_model(registered, num_classes=s.class_count, **model_options, **options)
    if size is not None:
        data = {split: Downscaled(d, size) for split, d in data.items()}
    start = time.perf_counter()
    fit(
        model,
        data["train"],
        data["val"],
        **s.fit_options(),
        device=device,
        out_dir=out / method,
        progress=progress,
        overwrite=True,  # the demo's own folder: a new demo replaces the method's earlier run there
    )
    train_seconds = time.perf_counter() - start
    best = _load_best(out, method, device)
    result = evaluate(best, data["test"])
    row = dict(
        method=method,
        seed=s.seed,
        top1=result.top1,
        top5=result.top5,
        crop_iou=result.mean_iou,
        pointing_game=result.pointing_game,
        params_m=sum(p.numel() for p in best.parameters()) / 1e6,
        train_minutes=train_seconds / 60,
    )
    return row, best


def format_table(rows: list[dict[str, Any]], *, header: bool = True) -> str:
    """Markdown table of demo results (``-``: the method has no crop box / no selection map)."""
    lines = [
        "| method | seed | top-1 (%) | top-5 (%) | crop IoU | pointing game (%) | params (M) | training (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iou = "-" if r["crop_iou"] is None else f"{r['crop_iou']:.2f}"
        pg = "-" if r["pointing_game"] is None else f"{r['pointing_game']:.1f}"
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['top1']:.1f} | {r['top5']:.1f} | {iou} | {pg} | "
            f"{r['params_m']:.2f} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines if header else lines[2:])


def mean_std(values: Sequence[float | None], fmt: str) -> str:
    """``"mean +- sample std"`` (ddof=1; 0 for one value) of the values that are not None, "-" for none."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):{fmt}} +- {sd:{fmt}}"


def summarize_seeds(rows: list[dict[str, Any]]) -> str:
    """Mean +- sample std (ddof=1) per method over the seeds in ``rows``."""
    lines = [
        "| method | seeds | top-1 (%) | crop IoU | pointing game (%) |",
        "|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        lines.append(
            f"| {method} | {len(mine)} | {mean_std([r['top1'] for r in mine], '.1f')} | "
            f"{mean_std([r['crop_iou'] for r in mine], '.2f')} | {mean_std([r['pointing_game'] for r in mine], '.1f')} |"
        )
    return "\n".join(lines)


def save_looks_figure(models: dict[str, Any], data: Any, path: str | os.PathLike, n: int = 6) -> None:
    """Write ``looks_figure(models, data, n)`` to ``path`` (PNG)."""
    fig = looks_figure(models, data, n)
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def looks_figure(models: dict[str, Any], data: Any, n: int = 6) -> Any:
    """Where each method looks, as a matplotlib Figure.

    Rows: the same ``n`` test images. First column: the image in colour (its colour decides the class, so the
    reader must see it), its true class and the true detail box in green. Then one column per method
    (``fgvc.viz.overlay_map``): the map the method selects with (its ``selection_map`` output: GLSim's CLS-patch
    similarity, DCAL's rollout) or, for methods without one, its attention rollout, normalised per panel, over
    a grey copy of the image; the true detail box in green, the model's crop box in blue (methods whose output
    has ``boxes``) and the prediction below (green when right, red when wrong)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..viz import attention_maps, denormalize, overlay_map
    from ..viz.core import TRUE_COLOR, draw_box, heat_colorbar

    images = torch.stack([data[i][0] for i in range(n)])
    targets = [data[i][1] for i in range(n)]
    names = list(data.classes)
    first = next(iter(models.values()))
    rgb = denormalize(images, first.data_config["mean"], first.data_config["std"])  # (n, H, W, 3) in [0, 1]
    h, w = images.shape[-2:]
    gt = (data.input_boxes[:n] * torch.tensor([w, h, w, h])).tolist()
    cols = 1 + len(models)
    fig, axes = plt.subplots(n, cols, figsize=(1.75 * cols + 0.9, 1.95 * n + 0.5), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(rgb[i])
        draw_box(ax, gt[i], TRUE_COLOR)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"true: {names[targets[i]]}", fontsize=7.5)
    axes[0, 0].set_title("test image\n(in colour)", fontsize=8)
    croppers = []  # the methods that crop a box (drawn in blue)
    for col, (method, model) in enumerate(models.items(), start=1):
        model.eval()
        size = tuple(model.img_size)  # a ``method@SIZE`` model reads the images downscaled
        maps = attention_maps(model, images if size == (h, w) else downscale(images, size))
        to_input = (size[1] / w, size[0] / h, size[1] / w, size[0] / h)  # image pixels -> input pixels
        if maps.output.boxes is not None:
            croppers.append(method)  # the column's label: variants of one method stay apart
        selects = maps.output.selection_map is not None  # GLSim's similarity, DCAL's rollout
        heat = maps.output.selection_map if selects else maps.get("rollout")
        label = "CLS-patch similarity" if "similarity" in maps.kinds else "attention rollout"
        preds = maps.output.logits.argmax(-1).tolist()
        for i in range(n):
            ax = axes[i, col]
            overlay_map(
                rgb[i], heat[i], ax=ax, input_size=size, patch_size=model.backbone.patch_size, colorbar=False,
                true_box=[c * f for c, f in zip(gt[i], to_input, strict=True)],
                model_box=None if maps.output.boxes is None else maps.output.boxes[i].tolist(),
            )
            ok = preds[i] == targets[i]
            ax.set_xlabel(names[preds[i]], fontsize=7.5, color="green" if ok else "red")
        axes[0, col].set_title(f"{method}\n{label}", fontsize=8)
    boxes = f"; blue: the crop box of {', '.join(croppers)}" if croppers else ""
    fig.suptitle(f"Where each method looks (green: true detail{boxes}; below each map: its prediction, "
                 "green when right, red when wrong)", fontsize=8.5)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    heat_colorbar(fig, cax=fig.add_axes((0.945, 0.15, 0.012, 0.7)))
    return fig
