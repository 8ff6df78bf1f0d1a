"""Which parts each method looks at: ``fgvc.evaluate(parts=True)``'s per-part scores of several methods in one
figure (``plot_parts``).

Every function returns a matplotlib Figure (save it with ``fig.savefig``); none only shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .core import _new_figure

__all__ = ["SCORES", "part_map", "plot_parts"]

#: What each score of ``plot_parts`` measures, for its axis label (r: the radius in grid cells).
SCORES = {
    "peak": "images whose map peaks within {r:g} cell(s) of the part (%)",
    "mass": "share of the map's mass within {r:g} cell(s) of the part (%)",
}
#: Maps every method's explanation has, in the order ``part_map`` prefers them after a method's own map.
_GENERIC_MAPS = ("attention", "rollout")


def part_map(result: Any, score: str = "peak") -> str:
    """The map ``plot_parts`` draws for ``result`` by default: the method's own map with a ``score`` column
    (GLSim's ``similarity``, DCAL's ``glca_attention``, TransFG's ``parts`` mask for ``mass``), else the
    last block's CLS attention (the map the classifying token reads), else the rollout."""
    row = next(iter(_parts_of(result).values()))
    names = [key[: -len(score) - 1] for key in row if key.endswith(f"_{score}")]
    own = [name for name in names if name not in _GENERIC_MAPS]
    candidates = own + [n for n in _GENERIC_MAPS if n in names]
    if candidates:
        return candidates[0]
    raise ValueError(f"this result has no map with a {score!r} score (its columns: {', '.join(row)})")


def _parts_of(result: Any) -> dict[str, dict[str, float]]:
    parts = getattr(result, "parts", None)
    if not parts:
        raise ValueError("plot_parts needs results of fgvc.evaluate(..., parts=True); one has no part scores")
    return parts


def plot_parts(
    results: Mapping[str, Any],
    score: str = "peak",
    *,
    maps: str | Mapping[str, str] | None = None,
    title: str | None = None,
    pyplot: bool = True,
) -> Any:
    """Which parts each method looks at: one row per part, one bar (and colour) per method, the value at
    each bar's end, and what a map that looks nowhere in particular scores as a grey tick per part.

    results: ``fgvc.evaluate(..., parts=True)`` results by method, on the same test split and radius.
    score: ``"peak"`` (the share of images whose map peaks near the part) or ``"mass"`` (the share of the
    map's mass near it); "near": within the results' ``part_radius`` grid cells. The tick is a flat map's mass,
    which is also the chance that a random peak lands near the part.
    maps: the map drawn per method (a name for all, or method -> name); default ``part_map``'s choice.
    Parts with no visible image are left out.
    """
    if score not in SCORES:
        raise ValueError(f"plot_parts: score is one of {sorted(SCORES)}, got {score!r}")
    if not results:
        raise ValueError("plot_parts needs at least one result")
    methods = list(results)
    tables = {m: _parts_of(results[m]) for m in methods}
    radii = {float(results[m].part_radius) for m in methods}
    if len(radii) != 1:
        raise ValueError(f"plot_parts: the results were scored within different radii {sorted(radii)}")
    radius = radii.pop()
    chosen = {m: (maps if isinstance(maps, str) else (maps or {}).get(m)) or part_map(results[m], score)
              for m in methods}
    first = tables[methods[0]]
    parts = [p for p in first if first[p]["visible"] > 0]
    if not parts:
        raise ValueError("plot_parts: no part is visible in any test image")
    values = np.full((len(methods), len(parts)), np.nan)  # (M, P) percent
    for k, m in enumerate(methods):
        key = f"{chosen[m]}_{score}"
        if key not in next(iter(tables[m].values())):
            raise ValueError(f"plot_parts: {m}'s result has no {key!r} score")
        if list(tables[m]) != list(first):
            raise ValueError(f"plot_parts: {m}'s parts differ from {methods[0]}'s (same test split needed)")
        values[k] = [tables[m][p][key] for p in parts]
    flat = np.array([first[p]["uniform_mass"] for p in parts])  # (P,)

    bar = 0.8 / len(methods)
    fig = _new_figure((8.0, 1.4 + len(parts) * max(0.35, 0.16 * len(methods))), pyplot=pyplot)
    ax = fig.subplots(1, 1)
    y = np.arange(len(parts))
    for k, m in enumerate(methods):
        pos = y - 0.4 + bar * (k + 0.5)
        label = m if chosen[m] == m else f"{m} ({chosen[m].replace('_', ' ')})"  # the map drawn, if not named
        bars = ax.barh(pos, np.nan_to_num(values[k]), height=bar, label=label)
        colour = bars.patches[0].get_facecolor()
        for p, v in zip(pos, values[k], strict=True):  # the value in the bar's colour: a 0% bar is still seen
            ax.text((0 if np.isnan(v) else v) + 1, p, "-" if np.isnan(v) else f"{v:.0f}%", va="center",
                    fontsize=7, color=colour)
    ax.vlines(flat, y - 0.45, y + 0.45, color="grey", lw=2, label="a flat map (random peak)")
    names = [f"{p} ({first[p]['visible']:.0f} images)" for p in parts]
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 110), xlabel=SCORES[score].format(r=radius))
    ax.set_title(title or f"Which parts each method looks at: map {score} within {radius:g} grid cell(s)",
                 fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    order = [k for k, label in enumerate(labels) if not label.startswith("a flat map")] + [
        k for k, label in enumerate(labels) if label.startswith("a flat map")]  # the methods, then the reference
    ax.legend([handles[k] for k in order], [labels[k] for k in order], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
