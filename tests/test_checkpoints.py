"""Weights in and out: local pretrained files with resampled position embeddings, fgvc checkpoints."""

import pytest
import timm
import torch
from conftest import TINY
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import fgvc


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_from_local_file_resamples_position_embeddings(tmp_path, suffix):
    # a "pretrained" timm model at 32 px (2x2 patches) with a 1000-class head
    source = timm.create_model("test_vit", img_size=32, depth=2, num_classes=1000)
    path = tmp_path / f"weights{suffix}"
    state = source.state_dict()
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    model = fgvc.create_model("glsim", num_classes=12, img_size=(64, 48), checkpoint_path=path, top_k=4, **TINY)
    bb = model.backbone.vit
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=(4, 3), num_prefix_tokens=1)
    assert bb.pos_embed.shape == (1, 1 + 4 * 3, 64)
    assert torch.allclose(bb.pos_embed, expected)
    assert torch.equal(bb.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    assert torch.equal(bb.cls_token, state["cls_token"])
    assert model.head.out_features == 12  # the new class count, not the file's 1000
    assert model(torch.randn(1, 3, 64, 48)).logits.shape == (1, 12)


def test_missing_backbone_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=tmp_path / "nope.pth", **TINY)


@pytest.mark.parametrize("method,options", [("vit", {}), ("glsim", dict(top_k=3, inclusive_box=True))])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, method, options):
    model = fgvc.create_model(method, num_classes=6, img_size=(32, 48), **options, **TINY).eval()
    for p in model.parameters():  # make every weight (also the zero-initialised head) matter
        torch.nn.init.normal_(p, std=0.2)
    names = [f"class {i}" for i in range(6)]
    path = fgvc.save_model(model, tmp_path / "m.safetensors", class_names=names, extra=dict(epoch=3))
    meta = fgvc.read_metadata(path)
    assert meta["method"] == method and meta["options"] == model.config["options"] and meta["epoch"] == 3

    loaded = fgvc.load_model(path)
    assert type(loaded) is type(model) and loaded.class_names == names and not loaded.training
    x = torch.randn(2, 3, 32, 48)
    a, b = model(x), loaded(x)
    assert torch.equal(a.logits, b.logits)
    if method == "glsim":
        assert torch.equal(a.boxes, b.boxes) and loaded.inclusive_box is True


def test_class_count_mismatch_is_a_clear_error(tmp_path):
    model = fgvc.create_model("vit", num_classes=6, img_size=32, **TINY)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="class-count mismatch: .* 6 classes, but num_classes=200"):
        fgvc.load_model(path, num_classes=200)
    other = fgvc.create_model("vit", num_classes=200, img_size=32, **TINY)
    with pytest.raises(ValueError, match="class-count mismatch"):
        fgvc.load_weights(other, path)
    bigger = fgvc.create_model("vit", num_classes=6, img_size=64, **TINY)
    with pytest.raises(ValueError, match="pos_embed has shape"):
        fgvc.load_weights(bigger, path)


def test_saving_over_a_checkpoint_is_atomic(tmp_path, monkeypatch):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fgvc.io.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        fgvc.save_model(model, path)
    assert path.read_bytes() == before  # the previous checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors is not a readable safetensors checkpoint"):
        fgvc.load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        fgvc.load_model(tmp_path / "missing.safetensors")
