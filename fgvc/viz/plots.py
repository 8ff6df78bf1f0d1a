"""Plots of numbers: training curves of several methods in one figure, and per-class accuracy against chance.

Every function returns a matplotlib Figure (save it with ``fig.savefig``); none only shows it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .core import _new_figure
from .figures import pretty_name

__all__ = ["plot_histories", "plot_per_class"]

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
