"""Cost of the methods, measured the same way for every one and set beside the plain ViT's (``fgvc benchmark``).

Users choose a method by accuracy *and* cost, and the methods' papers argue by cost (GLSim: its selection is
almost free next to attention-based selection). ``benchmark`` measures, for every method and input size, on one
backbone with the same random weights (cost needs no pretrained weights):

* **parameters**;
* **MACs per image** (multiply-accumulates of matmul-type ops: linear, conv, bmm; counted on two images of
  the batch, as every method's cost per image does not depend on the batch size), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` with attention on the math backend (``sdpa_kernel(MATH)``):
  fused CPU attention is an op the counter has no formula for, so it would silently drop the two attention
  matmuls. Inference (eval mode) and one training step (forward + the method's loss + backward). For the
  plain ViT the count equals ``vit_macs``, the formula written from the architecture (tested exactly);
* **inference throughput** (images/s) and **training-step time** (forward, loss, backward, AdamW step):
  medians of ``repeats`` runs after ``warmup`` runs, with their range (fastest and slowest run),
  ``inference_mode`` for inference, the device synchronized around each run, optionally under autocast
  (``amp="bf16"``; no grad scaler, the step is timed, not trained). The models take turns run by run (one
  run of each, then the next round), so that a change in a shared machine's load reaches every ratio alike;
  each ratio to the ViT is the median of the rounds' own ratios (both runs of a round saw the same load),
  with its range. The machine's 1-minute load average before and after the run is kept in the setup;
* **peak memory** of one inference batch and of the first training step (gradients and AdamW state
  included), *above the memory the idle model and its input already hold*: on CUDA from
  ``max_memory_allocated``; on the CPU from the process RSS (``fgvc.studies.memory``: each figure is that step's own
  growth, whatever ran before it in the process; NaN where there is no /proc);
* **the selection step alone**, as a share of one encoder forward (fused attention, as the methods run it),
  in wall time and in MACs: GLSim's CLS-patch similarity + top-k + box, DCAL's CLS-row attention rollout +
  top-R, TransFG's part selection (CLS row of the attention product); for reference also the full-matrix
  versions (all rows of the rollout, the official TransFG product of whole T x T maps), which is what the
  GLSim paper counts. Selection MACs are matmuls plus reductions (sum, mean, norm: one per element read),
  since GLSim's cosine similarity and the rollout's head mean have no matmul; the encoder's count is the
  matmul-only one above, so the shares are if anything overstated.

With ``grad_checkpointing="both"`` every model is also measured with activation checkpointing on
(``FGVCModel.set_grad_checkpointing``; timm's own for the ``timm`` row), as a row ``<label>+ckpt`` built with
the same weights, taking its turn in the same rounds: the training step's time, MACs (the recomputation is
counted) and peak memory with it off and on, and a table of the two side by side (``"on"``: every model
checkpointed, rows ``<label>+ckpt`` only). Evaluation never checkpoints: those rows' inference figures are
the same computation measured again.

Every ratio is to the plain ViT measured in the same run; ``timm``'s own model of the same name and options is
timed beside fgvc's ``vit`` (the wrapper should add nothing). The result prints as markdown, writes CSV and
plots accuracy against throughput when accuracies are given.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..backbones.vit import ViTBackbone, to_2tuple
from ..engine.precision import autocast_dtype
from ..methods import SHIPPED_METHODS
from ..methods.base import BASELINE, FGVCModel, create_model, list_models, method_variants
from .memory import peak_memory_mib

__all__ = [
    "VARIANTS",
    "method_variants",
    "MethodCost",
    "BenchmarkResult",
    "SelectionCost",
    "count_macs",
    "count_train_macs",
    "benchmark",
    "timed_rounds",
    "vit_macs",
]

DEFAULT_METHODS = SHIPPED_METHODS
TIMM = "timm"  # the label of timm's own model (reference for the plain ViT)
#: ``benchmark(grad_checkpointing=...)``: measure the models without it, with it, or both ways in one run
GRAD_CHECKPOINTING = ("off", "on", "both")
CKPT = "+ckpt"  # the label suffix of a row measured with activation checkpointing on


#: The variants of the methods registered when fgvc is imported (``method_variants()``: also later ones).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = method_variants()
# the GLSim paper (Rios et al., 2024): selection FLOPs as a share of the backbone's, 224 to 448 px
PAPER_SHARES = "GLSim about 0.003%, attention rollout about 1-14%, TransFG part selection about 47-781%"


# ------------------------------------------------------------------------------------------- counting
def vit_macs(backbone: ViTBackbone, num_classes: int) -> int:
    """Multiply-accumulates per image of the plain ViT (``vit`` method), written from the architecture.

    Patch embedding: a P x P convolution, one (C P P)-long dot product per patch and output channel. Per
    block (T = prefix + patch tokens): the qkv, proj, fc1 and fc2 linears (T x in x out each) and the two
    attention matmuls q k^T and A v (heads x T x T x head_dim each). The head: one linear on the pooled token.
    Norms, softmax, GELU, biases and the residual adds are not multiply-accumulates of a matmul and are not
    counted (as ``FlopCounterMode`` does not).
    """
    conv = backbone.vit.patch_embed.proj
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"vit_macs expects a Conv2d patch embedding, got {type(conv).__name__}")
    rows, cols = backbone.grid_size
    n = rows * cols  # patch tokens
    t = backbone.num_prefix_tokens + n  # all tokens
    d = backbone.embed_dim
    kh, kw = conv.kernel_size
    macs = n * conv.out_channels * conv.in_channels * kh * kw  # patch embedding
    for block in backbone.blocks:
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        linears = [getattr(attn, "qkv", None), getattr(attn, "proj", None), getattr(mlp, "fc1", None),
                   getattr(mlp, "fc2", None)]
        if not all(isinstance(m, nn.Linear) for m in linears):
            raise TypeError(
                f"vit_macs expects timm blocks with attn.qkv / attn.proj / mlp.fc1 / mlp.fc2 linears, got "
                f"{type(block).__name__}"
            )
        macs += sum(t * m.in_features * m.out_features for m in linears)  # qkv, proj, fc1, fc2
        macs += 2 * attn.num_heads * t * t * attn.head_dim  # q k^T (B, H, T, T) and A v (B, H, T, hd)
    return macs + d * num_classes  # head on the pooled (B, D) token


def count_macs(fn: Callable[[], Any], *, reductions: bool = False) -> int:
    """Multiply-accumulates of ``fn()`` without gradient, attention on the math backend (two counted bmm).

    ``FlopCounterMode`` counts matmul-type ops (2 FLOPs per MAC). ``reductions=True`` also counts sum, mean
    and vector norms as one MAC per element read (for selection steps that have no matmul).
    """
    custom = {op: _reduction_flops for op in (torch.ops.aten.sum, torch.ops.aten.mean,
                                               torch.ops.aten.linalg_vector_norm)} if reductions else None
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False, custom_mapping=custom) as c:
        fn()
    return c.get_total_flops() // 2


def _reduction_flops(input_shape: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """FlopCounterMode formula: a reduction reads every element once; 2 FLOPs = 1 MAC per element."""
    return 2 * math.prod(input_shape)


def count_train_macs(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Multiply-accumulates of one forward + loss + backward of ``model`` in training mode (math attention)."""
    was_training = model.training
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _loss(model, model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() // 2


def _loss(model: nn.Module, output: Any, y: Tensor) -> Tensor:
    """The method's own loss; cross-entropy for timm's model."""
    return model.loss(output, y) if isinstance(model, FGVCModel) else F.cross_entropy(output, y)


# ------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one ``fn()``, the device synchronized before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def timed_rounds(
    fns: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds of each ``fn()`` in each of ``repeats`` rounds after ``warmup``; the functions take turns run by
    run, so that a change in the machine's load reaches every figure alike and the ratios hold."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t = _timed_once(fn, device)
            if i >= warmup:
                times[name].append(t)
    return times


def _timed_in_turn(
    fns: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds of each ``fn()`` (``timed_rounds``)."""
    return {name: statistics.median(t) for name, t in timed_rounds(fns, device, repeats, warmup).items()}


@dataclass(frozen=True)
class _Timing:
    """One model's runs against the ViT's of the same rounds: median and range of time and of the ratio."""

    median: float
    fastest: float
    slowest: float
    ratio: float  # median over rounds of (ViT's time / this model's time)
    ratio_lo: float
    ratio_hi: float

    @classmethod
    def of(cls, times: Sequence[float], vit: Sequence[float]) -> _Timing:
        ratios = [v / t for v, t in zip(vit, times, strict=True)]
        return cls(statistics.median(times), min(times), max(times), statistics.median(ratios), min(ratios),
                   max(ratios))


_NO_TIMING = _Timing(*[math.nan] * 6)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _train_step(model: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype | None = None) -> Callable[[], None]:
    """One optimizer step of ``model`` on (x, y): forward and the method's loss (under autocast to ``dtype``
    when given), backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        with _autocast(x.device, dtype):
            loss = _loss(model, model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------------------------------- memory
def _peak_memory(model: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(inference, first training step) peak memory in MiB above what the idle model and its input hold.

    ``fgvc.studies.memory.peak_memory_mib`` of each step. The training step is the first one of a fresh AdamW: gradients
    and optimizer state are included.
    """
    model.eval()
    with torch.inference_mode(), _autocast(x.device, dtype):
        model(x)  # warm-up: the runtime's one-time allocations are not the model's
        infer = peak_memory_mib(lambda: model(x), x.device)
    model.train()
    model.zero_grad(set_to_none=True)
    train = peak_memory_mib(_train_step(model, x, y, dtype), x.device)  # the optimizer goes with its closure
    model.zero_grad(set_to_none=True)
    model.eval()
    return infer, train


# ------------------------------------------------------------------------------------------- results
@dataclass
class MethodCost:
    """Cost of one method at one input size (times per batch, MACs and memory per image or per step).

    Ratios are to the plain ViT of the same run: ``throughput_ratio`` > 1 is faster, ``train_ratio`` and
    ``macs_ratio`` > 1 are costlier; each time ratio is the median over the timing rounds, ``*_lo`` / ``*_hi`` its
    range. ``select_*``: the method's own selection step as a % of one encoder forward (NaN for methods
    without one). Memory: MiB above what the idle model and its input hold. ``amp``: the autocast dtype.
    """

    method: str
    img_size: str
    batch_size: int
    params_m: float
    gmacs: float
    macs_ratio: float
    train_gmacs: float
    train_macs_ratio: float
    infer_ms: float
    throughput: float
    throughput_ratio: float
    train_ms: float
    train_ratio: float
    infer_mem_mib: float
    train_mem_mib: float
    select_time_pct: float = math.nan
    select_macs_pct: float = math.nan
    throughput_lo: float = math.nan  # images/s of the slowest and the fastest timed run
    throughput_hi: float = math.nan
    throughput_ratio_lo: float = math.nan  # range over rounds of the ratio to the ViT
    throughput_ratio_hi: float = math.nan
    train_throughput: float = math.nan  # images/s of the training step (median)
    train_throughput_lo: float = math.nan
    train_throughput_hi: float = math.nan
    train_ratio_lo: float = math.nan
    train_ratio_hi: float = math.nan
    amp: str = "fp32"


@dataclass
class SelectionCost:
    """One selection step at one input size, against one encoder forward of the same batch."""

    img_size: str
    method: str
    step: str
    reference: bool  # a full-matrix version for comparison, not what the method runs
    ms: float
    time_pct: float
    mmacs: float
    macs_pct: float


@dataclass
class BenchmarkResult:
    """What ``benchmark`` measured: one ``MethodCost`` per method and size, and the selection steps."""

    rows: list[MethodCost]
    selection: list[SelectionCost]
    setup: dict[str, Any] = field(default_factory=dict)

    def row(self, method: str, img_size: int | Sequence[int]) -> MethodCost:
        """The row of ``method`` (a label such as ``"glsim"`` or ``"timm"``) at ``img_size``."""
        size = _size_label(img_size)
        for r in self.rows:
            if r.method == method and r.img_size == size:
                return r
        raise KeyError(f"no row for {method!r} at {size}; rows: {[(r.method, r.img_size) for r in self.rows]}")

    def to_csv(self, path: str | os.PathLike, table: str = "methods") -> Path:
        """Write the ``"methods"`` or the ``"selection"`` table as CSV; returns the path."""
        if table not in ("methods", "selection"):
            raise ValueError(f"table must be 'methods' or 'selection', got {table!r}")
        rows, cls = (self.rows, MethodCost) if table == "methods" else (self.selection, SelectionCost)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(cls)])
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
        return path

    def to_markdown(self) -> str:
        """The setup line, the methods table and the selection table as markdown."""
        s = self.setup
        load = s.get("loadavg") or [math.nan, math.nan]
        lines = [
            f"device {s.get('device_name')}, {s.get('threads')} torch threads, torch {s.get('torch')}, timm "
            f"{s.get('timm')}; backbone {s.get('backbone')}{_kwargs_label(s.get('backbone_kwargs'))} (random "
            f"weights), batch {s.get('batch_size')}, {s.get('amp') or 'fp32'}, median (range) of "
            f"{s.get('repeats')} runs after {s.get('warmup')} warm-up, models taking turns; load average "
            f"{_fmt(load[0], '.2f')} before, {_fmt(load[1], '.2f')} after ({s.get('cpus')} CPUs)"
            + ("" if s.get("grad_checkpointing", "off") == "off" else
               f"; activation checkpointing {s['grad_checkpointing']} (rows {CKPT}: on)"),
            "",
            "| method | size | params (M) | GMACs/img | x ViT | train GMACs/img | x ViT | img/s | x ViT "
            "| train step (ms) | x ViT | infer mem (MiB) | train mem (MiB) | selection % of encoder (time / MACs) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            sel = "-" if math.isnan(r.select_macs_pct) else f"{r.select_time_pct:.3g} / {r.select_macs_pct:.3g}"
            lines.append(
                f"| {r.method} | {r.img_size} | {r.params_m:.2f} | {r.gmacs:.3f} | {r.macs_ratio:.2f} | "
                f"{_fmt(r.train_gmacs, '.3f')} | {_fmt(r.train_macs_ratio, '.2f')} | "
                f"{_ranged(r.throughput, r.throughput_lo, r.throughput_hi, '.3g')} | "
                f"{_ranged(r.throughput_ratio, r.throughput_ratio_lo, r.throughput_ratio_hi, '.2f')} | "
                f"{_fmt(r.train_ms, '.0f')} | {_ranged(r.train_ratio, r.train_ratio_lo, r.train_ratio_hi, '.2f')} | "
                f"{_fmt(r.infer_mem_mib, '.0f')} | {_fmt(r.train_mem_mib, '.0f')} | {sel} |"
            )
        lines += self._checkpointing_lines()
        if self.selection:
            lines += [
                "",
                "| size | step | ms / batch | % encoder time | MMACs / batch | % encoder MACs |",
                "|---|---|---|---|---|---|",
            ]
            for c in self.selection:
                step = f"{c.method}: {c.step}" if c.method else c.step
                lines.append(f"| {c.img_size} | {step} | {c.ms:.3g} | {c.time_pct:.3g} | {c.mmacs:.4g} | "
                             f"{c.macs_pct:.3g} |")
            lines += ["", f"The GLSim paper's shares of backbone FLOPs (224-448 px): {PAPER_SHARES}."]
        return "\n".join(lines)

    def _checkpointing_lines(self) -> list[str]:
        """The training step of each model with activation checkpointing off and on, where both were measured."""
        off = {(r.method, r.img_size): r for r in self.rows}
        pairs = [(off[r.method.removesuffix(CKPT), r.img_size], r) for r in self.rows
                 if r.method.endswith(CKPT) and (r.method.removesuffix(CKPT), r.img_size) in off]
        if not pairs:
            return []
        lines = [
            "",
            "Activation checkpointing, training step (forward, loss, backward, AdamW): off -> on",
            "",
            "| method | size | train mem off (MiB) | on | memory saved | train step off (ms) | on | time x |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for off, on in pairs:
            saved = 1 - on.train_mem_mib / off.train_mem_mib if off.train_mem_mib else math.nan
            lines.append(
                f"| {off.method} | {off.img_size} | {_fmt(off.train_mem_mib, '.0f')} | {_fmt(on.train_mem_mib, '.0f')} "
                f"| {_fmt(100 * saved, '.0f')}% | {_fmt(off.train_ms, '.0f')} | {_fmt(on.train_ms, '.0f')} | "
                f"{_fmt(on.train_ms / off.train_ms, '.2f')} |"
            )
        return lines

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, accuracies: Mapping[str, float], ax: Any = None) -> Any:
        """Accuracy against inference throughput, one point per row that has an accuracy; returns the axes.

        accuracies: top-1 (%) by method (``"glsim"``: every size) or by method and size (``"glsim@448"``).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        unknown = [k for k in accuracies if not any(k in (r.method, f"{r.method}@{r.img_size}") for r in self.rows)]
        if unknown:
            raise ValueError(f"accuracies for {unknown} match no measured method@size; rows: "
                             f"{sorted({f'{r.method}@{r.img_size}' for r in self.rows})}")
        for r in self.rows:
            acc = accuracies.get(f"{r.method}@{r.img_size}", accuracies.get(r.method))
            if acc is None:
                continue
            ax.scatter(r.throughput, acc)
            ax.annotate(f"{r.method} {r.img_size}", (r.throughput, acc), textcoords="offset points", xytext=(4, 4))
        s = self.setup
        ax.set_xlabel(f"inference throughput (images/s, {s.get('device_name')}, batch {s.get('batch_size')})")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"accuracy against cost, {s.get('backbone')}")
        ax.grid(alpha=0.3)
        return ax

    def save(self, out_dir: str | os.PathLike, accuracies: Mapping[str, float] | None = None) -> list[Path]:
        """Write ``methods.csv``, ``selection.csv``, ``benchmark.md`` (and ``accuracy_vs_throughput.png``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [self.to_csv(out / "methods.csv"), self.to_csv(out / "selection.csv", "selection")]
        (out / "benchmark.md").write_text(self.to_markdown() + "\n")
        paths.append(out / "benchmark.md")
        if accuracies:
            import matplotlib.pyplot as plt

            ax = self.plot(accuracies)
            ax.figure.tight_layout()
            ax.figure.savefig(out / "accuracy_vs_throughput.png", dpi=120)
            plt.close(ax.figure)
            paths.append(out / "accuracy_vs_throughput.png")
        return paths


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _ranged(value: float, lo: float, hi: float, spec: str) -> str:
    """``0.80 (0.78-0.82)``: a median and its range; the median alone when the range is unknown or empty."""
    if math.isnan(lo) or math.isnan(hi) or format(lo, spec) == format(hi, spec):
        return _fmt(value, spec)
    return f"{format(value, spec)} ({format(lo, spec)}-{format(hi, spec)})"


def _size_label(size: int | Sequence[int]) -> str:
    h, w = to_2tuple(size)
    return str(h) if h == w else f"{h}x{w}"


def _kwargs_label(kwargs: Mapping[str, Any] | None) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""


# ------------------------------------------------------------------------------------------ benchmark
@dataclass(frozen=True)
class _Spec:
    """A row: its label, the registered method (or ``TIMM``) and the method's options."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False


def _resolve(methods: Sequence[str | tuple[str, str, dict[str, Any]]], timm_reference: bool,
             grad_checkpointing: str = "off") -> list[_Spec]:
    """Method names, variant names (``method_variants``) or (label, method, options) -> specs, the plain ViT
    first; with ``grad_checkpointing`` "on" each spec checkpointed (label ``+ckpt``), "both" each followed by
    its checkpointed twin."""
    specs = []
    variants = method_variants()
    for m in methods:
        if isinstance(m, tuple):
            label, method, options = m
            spec = _Spec(label, method, dict(options))
        elif m in variants:
            spec = _Spec(m, *variants[m])
        else:
            spec = _Spec(m, m, {})
        if spec.method not in list_models():
            raise ValueError(f"unknown method {spec.method!r}; available: {', '.join(list_models())}, variants: "
                             f"{', '.join(variants)}, or a (label, method, options) tuple")
        if spec.label == TIMM or spec.label in [s.label for s in specs]:
            raise ValueError(f"method label {spec.label!r} is reserved or given twice")
        specs.append(spec)
    if BASELINE not in [s.label for s in specs]:
        specs.insert(0, _Spec(BASELINE, BASELINE, {}))  # every ratio is to it
    specs.sort(key=lambda s: s.label != BASELINE)
    if timm_reference:
        specs.insert(1, _Spec(TIMM, TIMM, {}))
    if grad_checkpointing == "off":
        return specs
    ckpt = [_Spec(s.label + CKPT, s.method, s.options, grad_checkpointing=True) for s in specs]
    if grad_checkpointing == "on":
        return ckpt
    return [s for pair in zip(specs, ckpt, strict=True) for s in pair]  # each model, then its checkpointed twin


def _build(spec: _Spec, backbone: str, backbone_kwargs: dict[str, Any] | None, img_size: tuple[int, int],
           num_classes: int, device: torch.device) -> nn.Module:
    """The model of a spec with seed-0 random weights (the same backbone weights for every method)."""
    torch.manual_seed(0)
    if spec.method == TIMM:
        model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, img_size=img_size,
                                  **(backbone_kwargs or {}))
    else:
        model = create_model(spec.method, backbone=backbone, num_classes=num_classes, img_size=img_size,
                             pretrained=False, backbone_kwargs=backbone_kwargs, **spec.options)
    if spec.grad_checkpointing:  # fgvc's hook (FGVCModel), timm's own for timm's model
        model.set_grad_checkpointing(True)
    return model.to(device).eval()


def _inputs(
    batch_size: int, img_size: tuple[int, int], num_classes: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Seeded random images (B, 3, H, W) and labels (B,)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, 3, *img_size, generator=g).to(device)  # (B, 3, H, W)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)  # (B,)
    return x, y


def _selection_steps(
    models: Mapping[str, nn.Module], specs: Sequence[_Spec], x: Tensor
) -> tuple[ViTBackbone, list[tuple[str, str, bool, Callable[[], Any]]]]:
    """The selection steps of the methods present (``FGVCModel.selection_steps``, the first model of each method:
    its options set the step) on one pass of the plain ViT's encoder: (method, step, reference, fn)."""
    bb: ViTBackbone = models[specs[0].label].backbone  # the plain ViT (first: ``_resolve``)
    first: dict[str, FGVCModel] = {}
    for s in specs:
        if isinstance(models[s.label], FGVCModel):
            first.setdefault(s.method, models[s.label])
    with torch.inference_mode():
        enc = bb(x, return_attention=any(m.selection_reads_attention for m in first.values()))
    # tokens (B, T, D); attentions per block (B, H, T, T) or None
    steps = [(method, step.name, step.reference, step.run)
             for method, model in first.items() for step in model.selection_steps(enc.tokens, enc.attentions)]
    return bb, steps


def _measure_size(
    specs: Sequence[_Spec], size: tuple[int, int], setup: dict[str, Any], device: torch.device,
    inference: bool, train: bool, memory: bool, selection_steps: bool, dtype: torch.dtype | None,
    log: Callable[[str], None],
) -> tuple[list[MethodCost], list[SelectionCost]]:
    """Every figure at one input size."""
    label = _size_label(size)
    base = specs[0].label  # the plain ViT (``_resolve``): every ratio is to it
    b, repeats, warmup = setup["batch_size"], setup["repeats"], setup["warmup"]
    build = dict(backbone=setup["backbone"], backbone_kwargs=setup["backbone_kwargs"], img_size=size,
                 num_classes=setup["num_classes"], device=device)
    models = {s.label: _build(s, **build) for s in specs}
    x, y = _inputs(b, size, setup["num_classes"], device)

    infer = {k: _NO_TIMING for k in models}
    if inference:
        log(f"[{label}] inference timing")
        with torch.inference_mode(), _autocast(device, dtype):
            runs = timed_rounds({k: (lambda m=m: m(x)) for k, m in models.items()}, device, repeats, warmup)
        infer = {k: _Timing.of(t, runs[base]) for k, t in runs.items()}
    train_t: dict[str, _Timing] = {}
    if train:
        log(f"[{label}] training-step timing")
        for m in models.values():
            m.train()
        runs = timed_rounds({k: _train_step(m, x, y, dtype) for k, m in models.items()}, device, repeats, warmup)
        train_t = {k: _Timing.of(t, runs[base]) for k, t in runs.items()}
        for m in models.values():
            m.zero_grad(set_to_none=True)  # the optimizers went with their closures
            m.eval()

    selection = _measure_selection(models, specs, x, label, device, repeats, warmup, log) if selection_steps else []

    log(f"[{label}] MACs" + (" and memory" if memory else ""))
    raw: dict[str, dict[str, float]] = {}
    xm, ym = x[:2], y[:2]  # MACs per image do not depend on the batch: counted on two images
    for s in specs:
        model = models[s.label]
        macs = count_macs(lambda m=model: m(xm)) / len(xm)
        train_macs = count_train_macs(model, xm, ym) / len(xm) if train else math.nan
        mem = _peak_memory(model, x, y, dtype) if memory else (math.nan, math.nan)
        raw[s.label] = dict(macs=macs, train_macs=train_macs, mem_infer=mem[0], mem_train=mem[1],
                            params=sum(p.numel() for p in model.parameters()))
    own = {c.method: c for c in selection if c.method and not c.reference}  # each method's own step
    vit = raw[base]
    amp = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    rows = []
    for s in specs:
        r, inf, tr = raw[s.label], infer[s.label], train_t.get(s.label, _NO_TIMING)
        sel = own.get(s.method)
        rows.append(MethodCost(
            method=s.label, img_size=label, batch_size=b, params_m=r["params"] / 1e6,
            gmacs=r["macs"] / 1e9, macs_ratio=r["macs"] / vit["macs"],
            train_gmacs=r["train_macs"] / 1e9, train_macs_ratio=r["train_macs"] / vit["train_macs"],
            infer_ms=inf.median * 1e3, throughput=b / inf.median, throughput_ratio=inf.ratio,
            train_ms=tr.median * 1e3, train_ratio=1 / tr.ratio,
            infer_mem_mib=r["mem_infer"], train_mem_mib=r["mem_train"],
            select_time_pct=sel.time_pct if sel else math.nan, select_macs_pct=sel.macs_pct if sel else math.nan,
            throughput_lo=b / inf.slowest, throughput_hi=b / inf.fastest,
            throughput_ratio_lo=inf.ratio_lo, throughput_ratio_hi=inf.ratio_hi,
            train_throughput=b / tr.median, train_throughput_lo=b / tr.slowest, train_throughput_hi=b / tr.fastest,
            train_ratio_lo=1 / tr.ratio_hi, train_ratio_hi=1 / tr.ratio_lo, amp=amp,
        ))
    return rows, selection


def _measure_selection(
    models: Mapping[str, nn.Module], specs: Sequence[_Spec], x: Tensor, label: str, device: torch.device,
    repeats: int, warmup: int, log: Callable[[str], None],
) -> list[SelectionCost]:
    """The selection steps of the methods present, timed and counted against one encoder forward."""
    log(f"[{label}] selection steps")
    bb, steps = _selection_steps(models, specs, x)
    fns: dict[str, Callable[[], Any]] = {"encoder": lambda: bb(x)}
    calls: dict[str, int] = {"encoder": 1}
    with torch.inference_mode():
        for method, step, _, fn in steps:  # small steps run many times per timing, above the timer's resolution
            key = f"{method}: {step}"
            calls[key] = max(1, min(100, int(1e-2 / max(_timed_once(fn, device), 1e-7))))
            fns[key] = lambda f=fn, c=calls[key]: [f() for _ in range(c)]
        sel_t = {k: t / calls[k] for k, t in _timed_in_turn(fns, device, repeats, warmup).items()}
    enc_macs = count_macs(lambda: bb(x))
    selection = [SelectionCost(label, "", "encoder forward", False, sel_t["encoder"] * 1e3, 100.0,
                               enc_macs / 1e6, 100.0)]
    for method, step, reference, fn in steps:
        t = sel_t[f"{method}: {step}"]
        macs = count_macs(fn, reductions=True)
        selection.append(SelectionCost(label, method, step, reference, t * 1e3, 100 * t / sel_t["encoder"],
                                       macs / 1e6, 100 * macs / enc_macs))
    return selection


def benchmark(
    methods: Sequence[str | tuple[str, str, dict[str, Any]]] = DEFAULT_METHODS,
    *,
    backbone: str = "deit_tiny_patch16_224",
    img_sizes: Sequence[int | tuple[int, int]] = (224, 448),
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    num_classes: int = 200,
    backbone_kwargs: dict[str, Any] | None = None,
    warmup: int = 1,
    repeats: int = 3,
    inference: bool = True,
    train: bool = True,
    memory: bool = True,
    selection: bool = True,
    timm_reference: bool = True,
    amp: str | None = None,
    threads: int | None = None,
    progress: bool = False,
    grad_checkpointing: str = "off",
) -> BenchmarkResult:
    """Measure the cost of ``methods`` beside the plain ViT on one backbone at each of ``img_sizes``.

    Args:
        methods: method names (``"glsim"``), variant names (``"dcal_nopwca"``, ``method_variants()``) or (label, method,
            options) tuples. The plain ViT is added when missing: every ratio is to it.
        backbone: timm ViT name; random weights (cost does not depend on them). ``backbone_kwargs`` go to timm
            (e.g. ``depth=2`` for quick runs).
        img_sizes: input sizes, int or (height, width).
        batch_size: images per timed batch (at least 2: DCAL's PWCA pairs images).
        device: ``"cpu"`` or ``"cuda"``.
        warmup, repeats: runs before timing, and timed runs (the median is kept).
        inference: time inference (off: training figures only).
        train: also time the training step and count its MACs.
        memory: also measure peak memory (CPU: the process RSS, Linux only).
        selection: also time and count each method's selection step against one encoder forward.
        timm_reference: also time timm's own model of ``backbone`` (row ``"timm"``).
        amp: None (fp32), ``"bf16"`` or ``"fp16"``: inference and training step under ``torch.autocast``.
        threads: torch CPU threads during the run (default: as set).
        progress: print what is being measured to stderr.
        grad_checkpointing: ``"off"``; ``"on"``: every model with activation checkpointing (rows ``<label>+ckpt``);
            ``"both"``: each model without and with it in the same rounds, and the two side by side.
    Returns a ``BenchmarkResult``: ``.rows``, ``.selection``, ``.to_markdown()``, ``.to_csv()``,
    ``.plot()``, ``.save()``.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (DCAL's PWCA pairs images in a batch), got {batch_size}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if not img_sizes:
        raise ValueError("img_sizes is empty: give at least one input size")
    if grad_checkpointing not in GRAD_CHECKPOINTING:
        raise ValueError(f"grad_checkpointing must be one of {', '.join(GRAD_CHECKPOINTING)}, got "
                         f"{grad_checkpointing!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no CUDA device")
    dtype = autocast_dtype(amp, device)
    specs = _resolve(methods, timm_reference, grad_checkpointing)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    setup = dict(
        backbone=backbone, backbone_kwargs=dict(backbone_kwargs or {}), batch_size=batch_size,
        num_classes=num_classes, warmup=warmup, repeats=repeats, device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        threads=torch.get_num_threads(), torch=torch.__version__, timm=timm.__version__,
        methods=[s.label for s in specs], amp="fp32" if dtype is None else str(dtype).removeprefix("torch."),
        cpus=os.cpu_count(), loadavg=[_loadavg(), math.nan], grad_checkpointing=grad_checkpointing,
    )

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    rows: list[MethodCost] = []
    steps: list[SelectionCost] = []
    try:
        for size in img_sizes:
            r, s = _measure_size(specs, to_2tuple(size), setup, device, inference, train, memory, selection, dtype,
                                 log)
            rows += r
            steps += s
    finally:
        torch.set_num_threads(saved_threads)
    setup["loadavg"][1] = _loadavg()
    return BenchmarkResult(rows=rows, selection=steps, setup=setup)


def _loadavg() -> float:
    """The machine's 1-minute load average (NaN where the system has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return math.nan


def _cpu_name() -> str:
    """'CPU: <model name>, <n> cores' from /proc/cpuinfo where available."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({name}, {os.cpu_count()} cores)"
