"""ONNX export (``fgvc export --onnx``, ``fgvc.storage.onnx``): every method exports with a free batch axis, and
onnxruntime gives PyTorch's logits (within 1e-4) and GLSim's boxes (exactly); the file carries what prediction
needs, ``fgvc predict --onnx`` runs it without fgvc model code; what cannot be exported is refused in one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fgvc
from fgvc.cli import main
from fgvc.data import build_transforms
from fgvc.methods.base import FGVCModel, model_class
from fgvc.storage.onnx import ONNX_MISSING, OnnxExportError, OnnxModel, export_onnx

SMALL = dict(backbone="vit_tiny_patch16_224", backbone_kwargs={"depth": 2}, num_classes=5, img_size=64,
             pretrained=False)
METHODS = ["vit", "glsim", "glsim_top2", "glsim_tokens", "glsim_glance_top2", "dcal", "transfg"]  # glance: 2 x 2 cells at 64 px


def small_model(method: str) -> FGVCModel:
    """A tiny model of ``method`` (``name_variant`` for a variant) with every weight random, heads included."""
    name, _, variant = method.partition("_")
    torch.manual_seed(0)
    model = fgvc.create_model(name, **model_class(name).variants.get(variant, {}), **SMALL)
    with torch.no_grad():
        for p in model.parameters():  # the heads start at zero: logits would be equal whatever the export does
            p.add_(torch.randn_like(p) * 0.05)
    model.class_names = ["ash", "birch", "cedar", "elm", "fir"]
    return model.eval()


@pytest.fixture(scope="module", params=METHODS)
def exported(request, tmp_path_factory):
    model = small_model(request.param)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx", batch_size=2)
    return request.param, model, OnnxModel(path)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_gives_the_torch_logits_and_boxes_at_other_batch_sizes(exported, batch):
    method, model, onnx_model = exported
    images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(images)
    out = onnx_model(images.numpy())
    assert out["logits"].shape == (batch, 5)
    np.testing.assert_allclose(out["logits"], ref.logits.numpy(), atol=1e-4, rtol=0)
    if method.startswith("glsim"):
        assert out["boxes"].dtype == np.int64
        np.testing.assert_array_equal(out["boxes"], ref.boxes.numpy())
    else:
        assert set(out) == {"logits"}


def test_the_file_carries_what_prediction_needs(tmp_path):
    model = small_model("vit")
    model.temperature = 1.5
    onnx_model = OnnxModel(export_onnx(model, tmp_path / "m.onnx", resize=(80, 72)))
    assert onnx_model.method == "vit"
    assert onnx_model.metadata["backbone"] == "vit_tiny_patch16_224"
    assert onnx_model.class_names == model.class_names
    assert onnx_model.img_size == (64, 64)
    assert onnx_model.temperature == 1.5
    assert onnx_model.metadata["resize"] == [80, 72]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 100, 3), dtype=np.uint8))
    torch.testing.assert_close(onnx_model.test_transform()(image),
                               build_transforms(model, train=False, img_size=(64, 64), resize=(80, 72))(image))


@pytest.mark.slow
def test_fgvc_predict_onnx_prints_the_checkpoints_top_classes_without_building_a_model(tmp_path, capsys, monkeypatch):
    model = small_model("glsim")
    checkpoint = fgvc.save_model(model, tmp_path / "glsim.safetensors")
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        images.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(images[-1])
    assert main(["export", str(checkpoint), str(tmp_path / "glsim.onnx"), "--onnx"]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), *images, "--topk", "2"]) == 0
    torch_lines = capsys.readouterr().out.splitlines()

    def no_model(*args, **kwargs):
        raise AssertionError("fgvc predict --onnx built an fgvc model")

    monkeypatch.setattr(FGVCModel, "__init__", no_model)
    assert main(["predict", "--onnx", str(tmp_path / "glsim.onnx"), *images, "--topk", "2"]) == 0
    onnx_lines = capsys.readouterr().out.splitlines()

    def classes(lines):  # "  41.20%  cedar (2)" -> "cedar (2)"; image lines as they are
        return [line.split("%", 1)[1].strip() if "%" in line else line for line in lines]

    assert len(torch_lines) == 3 * 3
    assert classes(onnx_lines) == classes(torch_lines)


class _NoOnnxHead(nn.Module):
    """A head with an op the ONNX exporter has no conversion for (``kthvalue``)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, C)
        return self.head(x) - torch.kthvalue(x, 2, dim=-1, keepdim=True).values


def test_an_op_onnx_lacks_is_refused_in_one_line_naming_the_model_and_the_op(tmp_path):
    model = small_model("vit")
    model.head = _NoOnnxHead(model.head)
    with pytest.raises(OnnxExportError) as info:
        export_onnx(model, tmp_path / "m.onnx")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot export vit (vit_tiny_patch16_224) to ONNX: op aten.kthvalue")


def test_a_missing_onnx_extra_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    for module in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ImportError, match=ONNX_MISSING.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        export_onnx(small_model("vit"), tmp_path / "m.onnx")
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fgvc: error: {ONNX_MISSING}") and err.count("\n") == 1
