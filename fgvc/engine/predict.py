"""Top-k predictions with class names for image files (what ``fgvc predict`` prints and writes)."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..methods.base import FGVCModel

__all__ = ["Prediction", "expand_images", "predict", "predict_onnx", "save_predictions"]


@dataclass
class Prediction:
    """The top-k classes of one image: ``(label, class name, probability)`` in decreasing probability.

    ``temperature``: the calibration temperature the probabilities were divided by (None: none, i.e. 1).
    """

    source: str
    top: list[tuple[int, str, float]]
    tta: str | None = None
    temperature: float | None = None

    def __str__(self) -> str:
        t = self.temperature
        calibrated = f"  (calibrated, temperature {t:.3g})" if t is not None else ""
        return self.source + calibrated + "\n" + "\n".join(f"  {p:6.2%}  {name} ({label})" for label, name, p in self.top)


@torch.inference_mode()
def predict(
    model: FGVCModel,
    images: Sequence[str | os.PathLike | Image.Image],
    *,
    topk: int = 5,
    transform: Callable[[Image.Image], Any] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    tta: str | None = None,
    temperature: float | None = None,
) -> list[Prediction]:
    """Classify image files (or PIL images) with ``model``; class names from ``model.class_names``.

    ``transform`` defaults to the model's test transform (``build_transforms(model, train=False)``: resize,
    center crop, the backbone's normalization). Unreadable files raise an error naming the file; a model whose
    output is not finite (corrupt or diverged weights) raises ``FloatingPointError`` rather than predicting NaN.
    ``tta="hflip"`` averages the probabilities of each image and its mirror image (``fgvc.engine.evaluate.tta_forward``).
    The probabilities are ``softmax(logits / temperature)``: ``temperature`` defaults to the model's
    (``model.temperature``, from ``fgvc.calibrate`` or its checkpoint; 1 when it has none), so a calibrated
    checkpoint reports calibrated probabilities; ``temperature=1`` gives the raw ones. The ranking never
    changes.
    """
    from ..data import build_transforms, load_rgb
    from .calibration import check_temperature, temperature_of
    from .evaluate import tta_forward

    temperature = temperature_of(model) if temperature is None else check_temperature(temperature)

    if transform is None:
        transform = build_transforms(model, train=False, img_size=tuple(model.img_size))
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk!r}")
    names = model.class_names or [str(c) for c in range(model.num_classes)]
    k = min(topk, model.num_classes)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    out: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pil = [im if isinstance(im, Image.Image) else load_rgb(im) for im in chunk]
        batch = torch.stack([transform(im) for im in pil]).to(device)  # (b, 3, H, W)
        probs = (tta_forward(model, batch, tta).logits.float() / temperature).softmax(1).cpu()  # (b, C)
        out.extend(_top_classes(chunk, probs, names, k, tta, temperature))
    model.train(was_training)
    return out


def _top_classes(
    chunk: Sequence[Any], probs: torch.Tensor, names: Sequence[str], k: int, tta: str | None, temperature: float
) -> list[Prediction]:
    """The top-k ``Prediction`` of each image from its probabilities (b, C); non-finite ones are an error."""
    bad = [str(src) for src, ok in zip(chunk, torch.isfinite(probs).all(1).tolist(), strict=True) if not ok]
    if bad:  # a NaN "probability" is no prediction: never print one as a result
        raise FloatingPointError(
            f"the model's output is not finite (NaN or inf) for {', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}: its weights are corrupt or diverged "
            f"(or the image holds NaN); no prediction is given"
        )
    out = []
    values, labels = probs.topk(k, dim=1)
    for src, v, lab in zip(chunk, values.tolist(), labels.tolist(), strict=True):
        source = str(src) if not isinstance(src, Image.Image) else "<image>"
        top = [(c, names[c], p) for c, p in zip(lab, v, strict=True)]
        calibrated = None if temperature == 1.0 else temperature
        out.append(Prediction(source, top, tta=tta, temperature=calibrated))
    return out


def predict_onnx(
    model: Any,
    images: Sequence[str | os.PathLike | Image.Image],
    *,
    topk: int = 5,
    batch_size: int = 16,
) -> list[Prediction]:
    """``predict`` with an exported model (``fgvc.storage.onnx.OnnxModel``, onnxruntime): no torch model code.

    Images get the test transform recorded in the file (``OnnxModel.test_transform``), class names and the
    calibration temperature come from its metadata.
    """
    from ..data import load_rgb

    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk!r}")
    transform = model.test_transform()
    k, temperature = min(topk, model.num_classes), model.temperature
    out: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = torch.stack([transform(im if isinstance(im, Image.Image) else load_rgb(im)) for im in chunk])
        logits = torch.from_numpy(model(batch.numpy())["logits"])  # (b, C)
        out.extend(_top_classes(chunk, (logits.float() / temperature).softmax(1), model.class_names, k, None,
                                temperature))
    return out


def expand_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files from files, folders (every image below them, sorted) and glob patterns (``**`` recursive).

    Duplicates are dropped, order kept; a path that does not exist or a pattern or folder without images is
    an error naming it (with near misses for a mistyped file).
    """
    from ..data.common import IMAGE_EXTENSIONS
    from ..hints import similar_files

    found: list[str] = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            files = sorted(
                str(p) for p in Path(item).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
            if not files:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {item}")
        elif os.path.isfile(item):
            files = [item]
        elif glob.has_magic(item):
            files = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not files:
                raise FileNotFoundError(f"no files match {item!r}")
        else:
            raise FileNotFoundError(f"image not found: {item}{similar_files(item)}")
        found.extend(files)
    return list(dict.fromkeys(found))


def save_predictions(
    predictions: Sequence[Prediction], path: str | os.PathLike, *, info: dict[str, Any] | None = None
) -> Path:
    """Write predictions as CSV (one row per image: image, tta, then class, label, probability per rank) or
    JSON (``{**info, "predictions": [{"image", "tta", "top": [{"label", "class", "probability"}]}]}``, and
    ``"temperature"`` per image when the probabilities are calibrated), chosen by the file's ending."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        items = [
            dict(image=p.source, tta=p.tta,
                 top=[dict(label=c, **{"class": n}, probability=q) for c, n, q in p.top],
                 **({} if p.temperature is None else {"temperature": p.temperature}))
            for p in predictions
        ]
        path.write_text(json.dumps(dict(info or {}, predictions=items), indent=2))
        return path
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--out {path}: predictions are written as .csv or .json")
    k = max((len(p.top) for p in predictions), default=0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "tta"] + [f"{col}_{r}" for r in range(1, k + 1) for col in ("class", "label", "probability")])
        for p in predictions:
            w.writerow([p.source, p.tta or ""] + [x for c, n, q in p.top for x in (n, c, f"{q:.6f}")])
    return path
