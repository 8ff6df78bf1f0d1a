"""An interactive explorer (ipywidgets): pick an image, a method, a map, a layer and a head; see the map, the
crop and the top-5 predictions; then list the most confused classes with examples.

    explorer = fgvc.viz.explore({"vit": vit, "glsim": glsim}, data["test"])
    explorer            # last line of a notebook cell: shows it

The explorer is itself a widget (``Explorer``, an ``ipywidgets.VBox``). Its controls are attributes
(``method``, ``source``, ``index``, ``cls``, ``upload``, ``kind``, ``layer``, ``head``; in the error view
``analyse`` and ``pairs``), so code and tests can set them; after every change ``figure`` holds the
matplotlib Figure drawn, ``image`` its PNG, ``info`` the predictions (HTML). For a GLSim model with
``glance_size`` the map choices end with ``"glance"``: ``plot_glance``'s three panels (the glance with its
similarity and box, the box on the full image, the crop) for the current image.
"""

from __future__ import annotations

import contextlib
import html
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import torch
from torch import Tensor

from ..data.contract import classes_of, input_boxes_of, targets_of
from ..methods.base import FGVCModel
from .core import denormalize
from .figures import (
    confused_pairs,
    draw_footer,
    draw_panels,
    is_mask,
    plot_confused_pair,
    resolve_stats,
    row_title,
    rows_figure,
)
from .glance import GLANCE_KIND, draw_glance_row, glance_label, glance_looks, glance_row_title, has_glance
from .maps import AttentionMaps, attention_maps

__all__ = ["Explorer", "explore"]


def _png(fig: Any, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _as_models(model_or_models: FGVCModel | Sequence[FGVCModel] | Mapping[str, FGVCModel]) -> dict[str, FGVCModel]:
    if isinstance(model_or_models, FGVCModel):
        return {model_or_models.method: model_or_models}
    if isinstance(model_or_models, Mapping):
        models = dict(model_or_models)
    else:
        models = {}
        for m in model_or_models:
            name, n = m.method, 2
            while name in models:
                name, n = f"{m.method}-{n}", n + 1
            models[name] = m
    if not models or not all(isinstance(m, FGVCModel) for m in models.values()):
        raise TypeError("explore() needs an fgvc model, a list of them, or a dict name -> model")
    return models


class Explorer(w.VBox):
    """The explorer widget; build it with ``explore`` (see the module doc)."""

    def __init__(
        self,
        models: dict[str, FGVCModel],
        data: Any,
        *,
        class_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        results: Mapping[str, Any] | None = None,
        examples: int = 4,
    ) -> None:
        self.models = models
        self.data = data
        first = next(iter(models.values()))
        self.class_names = list(class_names or classes_of(data) or first.class_names or [])
        self.mean, self.std = resolve_stats(first, data, mean, std)
        targets = targets_of(data)
        self.targets = np.asarray([data[i][1] for i in range(len(data))] if targets is None else targets)
        self.results: dict[str, Any] = dict(results or {})
        self.examples = examples
        self.figure: Any = None
        self.error_figure: Any = None
        self._cache: dict[tuple, AttentionMaps] = {}
        self._upload: tuple[Any, str] | None = None  # (PIL image, file name)
        self._hold = False

        style = {"description_width": "70px"}
        layout = w.Layout(width="300px")
        self.method = w.Dropdown(options=list(models), description="method", style=style, layout=layout)
        self.source = w.ToggleButtons(
            options=["index", "class", "upload"], description="image", style=style,
            tooltips=["pick by index", "pick by class", "an uploaded file"],
        )
        self.source.style.button_width = "70px"
        self.index = w.IntSlider(
            value=0, min=0, max=max(len(data) - 1, 0), description="index", continuous_update=False,
            style=style, layout=layout,
        )
        self.cls = w.Dropdown(
            options=[(self._name(c), c) for c in range(len(self.class_names) or first.num_classes)],
            description="class", style=style, layout=layout,
        )
        self.next_of_class = w.Button(description="next of class", layout=w.Layout(width="120px"))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.kind = w.Dropdown(description="map", style=style, layout=layout)
        self.layer = w.IntSlider(
            value=1, min=1, max=1, description="layer", continuous_update=False, style=style, layout=layout
        )
        self.head = w.Dropdown(description="head", style=style, layout=layout)
        self.image = w.Image(format="png", layout=w.Layout(max_width="760px"))
        self.info = w.HTML()
        self._set_model_controls(first=True)

        # error analysis
        self.analyse = w.Button(description="find confused classes", layout=w.Layout(width="200px"))
        self.pairs = w.Select(options=[], rows=8, description="pairs", style=style, layout=w.Layout(width="420px"))
        self.error_image = w.Image(format="png", layout=w.Layout(max_width="760px"))
        self.error_info = w.HTML("Evaluates the chosen method on the data, then lists its most frequent "
                                 "mistakes (true class -> predicted class).")

        controls = w.VBox([
            self.method, self.source, self.index, w.HBox([self.cls, self.next_of_class]), self.upload,
            self.kind, self.layer, self.head,
        ])
        explore_tab = w.VBox([w.HBox([controls, self.info]), self.image])
        errors_tab = w.VBox([w.HBox([self.analyse, self.error_info]), self.pairs, self.error_image])
        self.tabs = w.Tab(children=[explore_tab, errors_tab])
        self.tabs.titles = ("Explore", "Errors")
        super().__init__([self.tabs])
        self.add_class("fgvc-explorer")

        for control in (self.source, self.index, self.kind, self.layer, self.head):
            control.observe(self._on_change, names="value")
        self.method.observe(self._on_method, names="value")
        self.cls.observe(self._on_class, names="value")
        self.next_of_class.on_click(lambda _: self._on_class(None))
        self.upload.observe(self._on_upload, names="value")
        self.analyse.on_click(lambda _: self.find_confused())
        self.pairs.observe(self._on_pair, names="value")
        if self.method.value in self.results:
            self.find_confused()
        self.render()

    # ------------------------------------------------------------------ state
    @property
    def model(self) -> FGVCModel:
        return self.models[self.method.value]

    def _name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else str(c)

    def _set_model_controls(self, first: bool = False) -> None:
        """Kinds, layers and heads of the chosen model (keeps the current choice where it exists; the first
        time: the last layer)."""
        bb = self.model.backbone
        kinds = [(info.title, k) for k, info in self.model.map_info().items()]
        if has_glance(self.model):  # not a map: the two looks, drawn by plot_glance's panels
            kinds.append(("glance, then look closely", GLANCE_KIND))
        keep_kind = self.kind.value
        self.kind.options = kinds
        self.kind.value = keep_kind if keep_kind in [k for _, k in kinds] else "attention"
        keep_layer = self.layer.value
        self.layer.max = bb.depth
        self.layer.value = bb.depth if first else min(keep_layer, bb.depth)
        keep_head = self.head.value
        heads = [("mean", "mean")] + [(str(h), str(h)) for h in range(bb.num_heads)]
        self.head.options = heads
        self.head.value = keep_head if keep_head in [h for _, h in heads] else "mean"
        self._enable_layer_and_head()

    def _enable_layer_and_head(self) -> None:
        """The layer slider for kinds with layers, the head choice for kinds with heads (``MapInfo``)."""
        info = self.model.map_info().get(self.kind.value)
        self.layer.disabled = info is None or not info.per_layer
        self.head.disabled = info is None or not info.per_head

    def current(self) -> tuple[Tensor, int | None, str]:
        """(3, H, W) normalized image, its label (None for an upload) and a caption."""
        if self.source.value == "upload" and self._upload is not None:
            img, name = self._upload
            return self._to_input(img), None, f"uploaded {name}"
        i = int(self.index.value)
        x, y = self.data[i]
        return torch.as_tensor(x), int(y), f"#{i}"

    def _maps(self, x: Tensor) -> AttentionMaps:
        key = (self.method.value, self.source.value == "upload" and self._upload is not None,
               int(self.index.value), id(self._upload))
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = attention_maps(self.model, x[None])
        return self._cache[key]

    # ------------------------------------------------------------------ drawing
    def render(self) -> None:
        """Redraw the figure and the predictions for the current choices."""
        if self._hold:
            return
        x, label, caption = self.current()
        model = self.model
        if tuple(x.shape[-2:]) != tuple(model.img_size):
            self.info.value = (f"<b>image is {x.shape[-2]}x{x.shape[-1]}, {self.method.value} expects "
                               f"{model.img_size[0]}x{model.img_size[1]}</b>")
            return
        maps = self._maps(x)
        kind = self.kind.value
        layer = int(self.layer.value) - 1
        head = None if self.head.value == "mean" else int(self.head.value)
        h, wd = x.shape[-2:]
        gt = None
        boxes = input_boxes_of(self.data)
        if label is not None and boxes is not None:
            gt = torch.as_tensor(boxes[int(self.index.value)], dtype=torch.float32) * torch.tensor([wd, h, wd, h])
        if kind == GLANCE_KIND:
            self._render_glance(x, maps, label, caption, gt)
            return
        shown = denormalize(x[None].float(), self.mean, self.std)[0]
        fig, subs, axes, footer = rows_figure(1, 3, h / wd, panel=2.5, pyplot=False)
        draw_panels(axes[0], maps, 0, shown, x[None], [kind], layer=layer, head=head, mean=self.mean,
                    std=self.std, gt_box=gt, title=caption)
        pred = int(maps.output.logits[0].argmax())
        text, color = row_title(self.method.value, None, pred, label, self.class_names, fig.get_figwidth())
        subs[0].suptitle(text, fontsize=9, color=color)
        fig.suptitle(f"{self.method.value}: {maps.describe(kind, layer, head)}", fontsize=9)
        draw_footer(footer, true_box=gt is not None, outlines=is_mask(maps, kind), colorbar=not is_mask(maps, kind))
        self.figure = fig
        self.image.value = _png(fig)
        self.info.value = self._predictions_html(maps, label)

    def _render_glance(self, x: Tensor, maps: AttentionMaps, label: int | None, caption: str,
                       gt: Tensor | None) -> None:
        """``plot_glance``'s row for the current image (x: (3, H, W) normalized), from the cached output."""
        model = self.model
        looks = glance_looks(model, x[None], output=maps.output)
        h, wd = x.shape[-2:]
        fig, subs, axes, footer = rows_figure(1, 3, h / wd, panel=2.5, pyplot=False)
        draw_glance_row(axes[0], model, looks, 0, mean=self.mean, std=self.std, full_image=x, gt_box=gt,
                        class_names=self.class_names)
        pred = int(looks.logits[0].argmax())
        text, color = glance_row_title(self.method.value, caption, pred, label, self.class_names,
                                       fig.get_figwidth())
        subs[0].suptitle(text, fontsize=9, color=color)
        fig.suptitle(f"{self.method.value}: {glance_label(model)}, then the crop at full resolution",
                     fontsize=9)
        draw_footer(footer, true_box=gt is not None)
        self.figure = fig
        self.image.value = _png(fig)
        self.info.value = self._predictions_html(maps, label)

    def _predictions_html(self, maps: AttentionMaps, label: int | None) -> str:
        probs = maps.output.logits[0].float().softmax(-1)
        top = probs.topk(min(5, probs.numel()))
        rows = []
        for p, c in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            mark = " &#10003;" if label is not None and c == label else ""
            rows.append(f"<tr><td>{html.escape(self._name(c))}{mark}</td><td>{100 * p:.1f}%</td></tr>")
        truth = "unknown (uploaded)" if label is None else html.escape(self._name(label))
        return (f"<div class='fgvc-info'><b>true label:</b> {truth}<br><b>top-5 ({html.escape(self.method.value)})"
                f"</b><table>{''.join(rows)}</table></div>")

    # ------------------------------------------------------------------ events
    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """Change several controls without a redraw for each."""
        self._hold = True
        try:
            yield
        finally:
            self._hold = False

    def _on_change(self, change: dict) -> None:
        if change["owner"] is self.index and not self._hold and self.source.value == "upload":
            with self._held():  # moving the index slider leaves the uploaded image
                self.source.value = "index"
        if change["owner"] is self.kind:
            self._enable_layer_and_head()
        self.render()

    def _on_method(self, change: dict) -> None:
        with self._held():
            self._set_model_controls()
        if self.method.value in self.results:
            self.find_confused()
        self.render()

    def _on_class(self, change: dict | None) -> None:
        """Jump to the next image of the chosen class (after the current index, wrapping around)."""
        found = np.nonzero(self.targets == int(self.cls.value))[0]
        if len(found) == 0:
            self.info.value = f"<b>no image of class {html.escape(self._name(int(self.cls.value)))}</b>"
            return
        after = found[found > int(self.index.value)] if change is None else found
        nxt = int(after[0]) if len(after) else int(found[0])
        with self._held():
            self.source.value = "class"
            self.index.value = nxt
        self.render()

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        self.load_image(bytes(item["content"]), name=item.get("name", "upload"))

    def load_image(self, content: bytes, name: str = "upload") -> None:
        """Show an image file's bytes (resized to each model's input, normalized like the data)."""
        from PIL import Image

        self._upload = (Image.open(io.BytesIO(content)).convert("RGB"), name)
        with self._held():
            self.source.value = "upload"
        self.render()

    def _to_input(self, img: Any) -> Tensor:
        """PIL image -> (3, H, W) at the chosen model's input size (stretched), normalized with mean / std."""
        from PIL import Image

        h, wd = self.model.img_size
        arr = np.asarray(img.resize((wd, h), Image.BILINEAR), dtype=np.float32) / 255.0  # (H, W, 3)
        x = torch.from_numpy(arr).permute(2, 0, 1)  # (3, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    # ------------------------------------------------------------------ error analysis
    def find_confused(self, k: int = 10) -> None:
        """Evaluate the chosen method on the data (once), list its most confused class pairs."""
        from ..engine.evaluate import evaluate

        name = self.method.value
        if name not in self.results:
            self.error_info.value = f"evaluating {html.escape(name)} on {len(self.data)} images..."
            self.results[name] = evaluate(self.model, self.data)
        result = self.results[name]
        pairs = confused_pairs(result.confusion_matrix, k)
        self._pairs = pairs
        self.error_info.value = (f"{html.escape(name)}: top-1 {result.top1:.1f}% on {result.num_samples} images; "
                                 f"{len(pairs)} most frequent mistakes (true -> predicted)")
        self.pairs.options = [
            (f"{self._name(p.true)} -> {self._name(p.predicted)}: {p.count} ({100 * p.rate:.0f}%)", j)
            for j, p in enumerate(pairs)
        ]
        if pairs:
            self.pairs.value = 0
            self._show_pair(0)
        else:
            self.error_image.value = b""

    def _on_pair(self, change: dict) -> None:
        if change["new"] is not None:
            self._show_pair(int(change["new"]))

    def _show_pair(self, j: int) -> None:
        result = self.results[self.method.value]
        fig = plot_confused_pair(self.data, self._pairs[j], result.predictions, n=self.examples,
                                 class_names=self.class_names or None, mean=self.mean, std=self.std,
                                 pyplot=False)
        self.error_figure = fig
        self.error_image.value = _png(fig)




def explore(
    model_or_models: FGVCModel | Sequence[FGVCModel] | Mapping[str, FGVCModel],
    data: Any,
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    results: Mapping[str, Any] | None = None,
    examples: int = 4,
) -> Any:
    """The interactive explorer widget for one model, a list, or a dict name -> model, over ``data``.

    data: items ``(normalized image (3, H, W), label)`` at the models' input size; ``classes``, ``targets``
    and ``input_boxes`` (the true boxes, drawn green) are used when present. mean / std: the normalization
    to undo for display (default: ``data.mean`` / ``data.std``, else the model's). results: precomputed
    ``fgvc.evaluate`` results per model name for the error view (else computed on demand).
    """
    if len(data) == 0:
        raise ValueError("explore() needs a non-empty dataset")
    return Explorer(
        _as_models(model_or_models), data, class_names=class_names, mean=mean, std=std, results=results,
        examples=examples,
    )
