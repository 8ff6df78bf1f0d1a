"""Plots of numbers: training curves of several methods in one figure, per-class accuracy against chance, and
reliability diagrams (confidence against accuracy).

Every function returns a matplotlib Figure (save it with ``fig.savefig``); none only shows it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .core import _new_figure
from .figures import pretty_name

__all__ = ["plot_histories", "plot_per_class", "plot_reliability"]

#: Curves with at most this many points get a marker on each.
FEW_POINTS = 30


def _marker(n: int) -> str | None:
    return "o" if n <= FEW_POINTS else None


def plot_histories(histories: Mapping[str, Any], *, chance: float | None = None, pyplot: bool = True) -> Any:
    """Loss and top-1 per epoch of several runs (``fgvc.fit``'s ``History`` by method) overlaid in one figure.

    One colour per method; training solid, validation dashed; a marker on every point of a short curve;
    ``chance`` (top-1 %, e.g. ``100 / num_classes``) as a grey line on the accuracy panel. Axes show plain
    values (no offset such as ``1e-6 + 2.30258`` when a loss barely moves).
    """
    import matplotlib as mpl

    fig = _new_figure((9.0, 3.2), pyplot=pyplot)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (method, history) in enumerate(histories.items()):
        color = colors[k % len(colors)]
        for key, ax in (("loss", ax_loss), ("top1", ax_acc)):
            for split, style in (("train", "-"), ("val", "--")):
                pts = [(e, v) for e, v in enumerate(history[f"{split}_{key}"], start=1) if np.isfinite(v)]
                if not pts:
                    continue
                epochs, values = zip(*pts, strict=True)
                ax.plot(epochs, values, style, color=color, marker=_marker(len(values)), ms=4,
                        label=f"{method} ({split})")
    if chance is not None:
        ax_acc.axhline(chance, color="grey", ls=":", lw=1.2, label=f"chance ({chance:.1f}%)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="top-1", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    # One legend beside both panels, off the curves: a colour per method, then what the line styles mean.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[k % len(colors)], lw=2, label=str(m))
               for k, m in enumerate(histories)]
    handles += [Line2D([], [], color="black", ls="-", label="train"),
                Line2D([], [], color="black", ls="--", label="validation")]
    if chance is not None:
        handles.append(Line2D([], [], color="grey", ls=":", lw=1.2, label=f"chance ({chance:.1f}%)"))
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.83, 0.5), fontsize=8, frameon=False)
    return fig


def plot_per_class(
    results: Mapping[str, Any],
    class_names: Sequence[str] | None = None,
    *,
    worst: int = 8,
    title: str | None = None,
    pyplot: bool = True,
) -> Any:
    """The ``worst`` classes (lowest mean top-1 over the methods) of one dataset, one bar per method, side by
    side in one axes, with each bar's value written at its end (a 0% bar is visible as "0%"), full class
    names, and chance (100 / classes) as a line.

    results: ``fgvc.evaluate`` results by method, all on the same test split.
    """
    if not results:
        raise ValueError("plot_per_class needs at least one result")
    methods = list(results)
    acc = np.stack([np.asarray(results[m].per_class_accuracy, dtype=np.float64) for m in methods])  # (M, C)
    num_classes = acc.shape[1]
    seen = np.isfinite(acc).any(0)  # classes with test images (NaN: none)
    mean = np.full(num_classes, np.nan)
    mean[seen] = np.nanmean(acc[:, seen], axis=0)
    order = [c for c in np.argsort(np.nan_to_num(mean, nan=np.inf), kind="stable") if np.isfinite(mean[c])][:worst]
    names = [pretty_name(class_names[c]) if class_names else f"class {c}" for c in order]
    labels = [textwrap.fill(n, 36) for n in names]
    per_class = [max(0.15 * (label.count("\n") + 1), 0.14 * len(methods)) + 0.12 for label in labels]
    height = 1.3 + sum(per_class)
    fig = _new_figure((8.5, height), pyplot=pyplot)
    ax = fig.subplots(1, 1)
    bar = 0.8 / len(methods)
    y = np.arange(len(order))
    for k, method in enumerate(methods):
        values = acc[k, order]
        pos = y - 0.4 + bar * (k + 0.5)
        bars = ax.barh(pos, values, height=bar, label=method)
        for p, v in zip(pos, values, strict=True):  # the value in the bar's colour: a 0% bar is still seen
            ax.text(min(v, 100) + 1, p, f"{v:.0f}%", va="center", fontsize=6, color=bars.patches[0].get_facecolor())
    chance = 100.0 / num_classes
    ax.axvline(chance, color="grey", ls=":", lw=1.2, label=f"chance ({chance:.1f}%)")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 108), xlabel="top-1 on the class's test images (%)")
    ax.set_title(title or f"The {len(order)} hardest of {num_classes} classes", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside, never on a bar
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_reliability(
    results: Mapping[str, Any] | Any,
    *,
    calibrated: bool = False,
    bins: int = 15,
    ax: Any = None,
    title: str | None = None,
    pyplot: bool = True,
) -> Any:
    """Reliability diagram: accuracy against top-1 confidence in ``bins`` equal-width bins, one line per
    method, the diagonal (a calibrated model's), and the images per bin as a bar strip below (a bin of three images
    says little). Each line's label gives its ECE.

    results: ``fgvc.evaluate`` results (or ``fgvc.engine.calibration.Reliability`` bins) by method, or one of
    them; ``calibrated``: the results' confidences after temperature scaling (``EvalResult.reliability``).
    ``ax``: draw into it (the strip is split off its bottom); else a new figure.
    """
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    from ..engine.calibration import Reliability

    if not isinstance(results, Mapping):
        results = {"model": results}
    if not results:
        raise ValueError("plot_reliability needs at least one result")
    curves = {name: r if isinstance(r, Reliability) else r.reliability(calibrated=calibrated, bins=bins)
              for name, r in results.items()}
    if ax is None:
        fig = _new_figure((5.2, 5.4), pyplot=pyplot)
        ax = fig.subplots(1, 1)
    fig = ax.figure
    strip = make_axes_locatable(ax).append_axes("bottom", size="28%", pad=0.12, sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="_diagonal")
    width = 1.0 / len(next(iter(curves.values())).count) / len(curves)
    for k, (name, curve) in enumerate(curves.items()):
        seen = curve.count > 0
        (line,) = ax.plot(curve.confidence[seen], curve.accuracy[seen], marker="o", ms=4, lw=1.5,
                          label=f"{name} (ECE {curve.ece:.3f})")
        left = curve.edges[:-1] + width * k
        strip.bar(left, curve.count, width=width, align="edge", color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy in the bin", aspect="auto")
    ax.set_title(title or "Reliability (diagonal: confidence = accuracy)", fontsize=9)
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)  # where it covers the fewest points
    strip.set(xlabel="top-1 confidence", ylabel="images")
    strip.grid(axis="y", alpha=0.3)
    return fig
