"""ONNX export of any fgvc model, and an onnxruntime runner that needs no fgvc model code (``fgvc export --onnx``).

``export_onnx`` writes the model's evaluation forward (GLSim's similarity, box and crop included, as tensor
ops) with a free batch axis through ``torch.onnx.export(dynamo=True)``: the ``torch.export`` based exporter,
the default in torch 2.9 and later (the TorchScript one is deprecated). Input ``images`` (B, 3, H, W),
normalized as the test transform leaves them; outputs ``logits`` (B, C) and, for methods that crop (GLSim),
``boxes`` (B, 4) int64 input pixels (x0, y0, x1, y1). The file's ``metadata_props`` carry what prediction
needs (``METADATA_KEYS``: the method, class names, input size, the test transform's resize and normalization,
the calibration temperature), so that ``OnnxModel`` and ``fgvc predict --onnx`` preprocess and label images
without building an fgvc model. Needs the ``onnx`` extra (``pip install fgvc[onnx]``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..methods.base import FGVCModel
from ..version import __version__

__all__ = ["METADATA_KEYS", "ONNX_MISSING", "OnnxExportError", "OnnxModel", "export_onnx"]

ONNX_MISSING = "ONNX export needs `pip install fgvc[onnx]` (onnx, onnxruntime)"
#: The metadata_props keys an fgvc ONNX file has (values are JSON).
METADATA_KEYS = ("fgvc_version", "method", "backbone", "num_classes", "class_names", "img_size", "resize",
                 "mean", "std", "interpolation", "temperature", "outputs")


class OnnxExportError(RuntimeError):
    """A model that torch.onnx cannot export (an op ONNX lacks, a data-dependent shape)."""


def _require(module: str) -> Any:
    """Import an optional dependency of the ``onnx`` extra, or raise ImportError with the install line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(ONNX_MISSING) from err


class _Exported(nn.Module):
    """The evaluation forward as plain tensors: logits (B, C), and boxes (B, 4) for methods that crop."""

    def __init__(self, model: FGVCModel, with_boxes: bool) -> None:
        super().__init__()
        self.model, self.with_boxes = model, with_boxes

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return (out.logits, out.boxes) if self.with_boxes else (out.logits,)


def _culprit(err: BaseException) -> str:
    """What in an exporter error names the cause: the op ONNX lacks, else the source line that failed."""
    text = "\n".join(str(e) for e in _chain(err))
    op = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>", text)
    if op:
        return f"op {op[1]}.{op[2]} has no ONNX conversion"
    node = re.search(r"target=torch\.ops\.([\w.]+)\]", text)
    if node:
        return f"op {node[1]} failed to convert"
    where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    own = [w for w in where if "fgvc" in w[0]] or where
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    if own:
        file, line, func = own[-1]
        return f"{first[:160]} (in {func}, {Path(file).name}:{line})"
    return first[:200]


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def export_onnx(
    model: FGVCModel,
    path: str | os.PathLike,
    *,
    batch_size: int = 2,
    opset: int | None = None,
    resize: int | tuple[int, int] | None = None,
) -> Path:
    """Write ``model``'s evaluation forward to ``path`` as ONNX with a dynamic batch axis; returns the path.

    batch_size: the example batch traced (any batch size runs afterwards; 2 keeps the batch axis symbolic).
    opset: the ONNX opset (None: the exporter's default). resize: the test transform's resize recorded for
    prediction (None: ``fgvc.data.transforms.default_resize`` of the input size, as ``build_transforms``).
    Raises ``OnnxExportError`` naming the method, the backbone and the op or line that cannot be exported.
    """
    _require("onnx")
    from ..data.transforms import default_resize

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    h, w = model.img_size
    example = torch.randn(batch_size, 3, h, w, device=device)  # (b, 3, H, W)
    with torch.no_grad():
        with_boxes = model(example).boxes is not None
    outputs = ["logits", "boxes"] if with_boxes else ["logits"]
    name = f"{model.method} ({model.config['backbone']})"
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter's progress lines
            program = torch.onnx.export(
                _Exported(model, with_boxes).eval(), (example,), dynamo=True, input_names=["images"],
                output_names=outputs, dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                verbose=False,
            )
    except Exception as err:
        raise OnnxExportError(f"cannot export {name} to ONNX: {_culprit(err)}") from err
    finally:
        model.train(was_training)
    data = model.data_config
    resize = default_resize((h, w)) if resize is None else resize
    meta = dict(
        fgvc_version=__version__, method=model.method, backbone=model.config["backbone"],
        num_classes=model.num_classes,
        class_names=model.class_names or [str(c) for c in range(model.num_classes)],
        img_size=[h, w], resize=resize if isinstance(resize, int) else list(resize),
        mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]],
        interpolation=str(data.get("interpolation", "bicubic")),
        temperature=float(getattr(model, "temperature", 1.0)), outputs=outputs,
    )
    program.model.metadata_props.update({k: json.dumps(v) for k, v in meta.items()})
    program.save(path)
    return path


class OnnxModel:
    """An exported fgvc model run by onnxruntime: ``OnnxModel(path)(images) -> {"logits": ..., ["boxes": ...]}``.

    ``metadata``: the file's ``metadata_props`` (``METADATA_KEYS``, decoded); ``data_config`` the mean, std,
    interpolation and input size that ``fgvc.data.build_transforms`` reads, so that images are preprocessed
    as the test transform of the exported model. ``providers``: onnxruntime's (default CPU); ``threads``: its
    thread count (default: onnxruntime's, one per core).
    """

    def __init__(
        self, path: str | os.PathLike, *, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        if threads is not None:  # onnxruntime's own thread pool (it does not read OMP_NUM_THREADS)
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=providers or ["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("method", "class_names", "img_size", "mean", "std") if k not in props]
        if missing:
            raise ValueError(f"{self.path} is not an fgvc ONNX export (no {', '.join(missing)} in its metadata)")
        self.metadata: dict[str, Any] = {k: json.loads(v) for k, v in props.items() if k in METADATA_KEYS}
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def method(self) -> str:
        return self.metadata["method"]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.metadata["class_names"])

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.metadata["img_size"])

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("temperature", 1.0))

    @property
    def data_config(self) -> dict[str, Any]:
        """What ``build_transforms`` reads: mean, std, interpolation, input_size."""
        m = self.metadata
        return dict(mean=m["mean"], std=m["std"], interpolation=m.get("interpolation", "bicubic"),
                    input_size=(3, *m["img_size"]))

    def test_transform(self) -> Any:
        """The exported model's test transform (``build_transforms(train=False)`` with its recorded resize)."""
        from ..data import build_transforms

        resize = self.metadata.get("resize")
        return build_transforms(self.data_config, train=False, img_size=self.img_size,
                                resize=tuple(resize) if isinstance(resize, list) else resize)

    def __call__(self, images: np.ndarray | Tensor) -> dict[str, np.ndarray]:
        """(B, 3, H, W) float32 normalized images -> {"logits": (B, C), "boxes": (B, 4) for methods that crop}."""
        if isinstance(images, Tensor):
            images = images.detach().cpu().numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, *self.img_size):
            raise ValueError(f"expected images of shape (B, 3, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got {tuple(images.shape)}")
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: images}), strict=True))
