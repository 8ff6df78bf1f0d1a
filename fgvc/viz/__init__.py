"""Seeing what a model looks at: attention maps, rollout, GLSim's crop, DCAL's GLCA, TransFG's parts,
overlays at any resolution, batch grids, Grad-CAM / FinerCAM (optional), error analysis, which parts each
method looks at (``plot_parts``), GLSim's glance and its close look (``plot_glance``), and an interactive explorer
for Jupyter.

    from fgvc import viz
    maps = viz.attention_maps(model, images)      # every map of a batch, read by kind / layer / head
    fig = viz.plot_maps(model, images)            # image | each map | crop, one row per image
    fig.savefig("maps.png")
    viz.explore({"vit": vit, "glsim": glsim}, data["test"])   # the widget (needs ipywidgets)

Every plotting function returns a matplotlib Figure; none only shows it.
"""

from __future__ import annotations

from typing import Any

from .core import denormalize, draw_box, grid_extent, overlay_map, upsample_map
from .figures import (
    ConfusedPair,
    confused_pairs,
    plot_confused_pair,
    plot_layer_heads,
    plot_maps,
    plot_selection,
    pretty_name,
)
from .glance import plot_glance
from .gradcam import grad_cam
from .maps import AttentionMaps, attention_maps, available_maps, map_box
from .parts import plot_parts
from .plots import plot_histories, plot_per_class, plot_reliability

__all__ = [
    "AttentionMaps",
    "ConfusedPair",
    "attention_maps",
    "available_maps",
    "confused_pairs",
    "denormalize",
    "draw_box",
    "explore",
    "grad_cam",
    "grid_extent",
    "map_box",
    "overlay_map",
    "plot_confused_pair",
    "plot_glance",
    "plot_histories",
    "plot_layer_heads",
    "plot_maps",
    "plot_parts",
    "plot_per_class",
    "plot_reliability",
    "plot_selection",
    "pretty_name",
    "upsample_map",
]


def explore(model_or_models: Any, data: Any, **kwargs: Any) -> Any:
    """The interactive explorer widget (``fgvc.viz.explorer.explore``; needs ipywidgets)."""
    try:
        from .explorer import explore as _explore
    except ImportError as err:
        if "ipywidgets" not in str(err):
            raise
        raise ImportError(
            "fgvc.viz.explore needs ipywidgets: pip install ipywidgets (or pip install 'fgvc[notebooks]')"
        ) from err
    return _explore(model_or_models, data, **kwargs)
