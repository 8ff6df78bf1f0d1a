"""fgvc's shipped backbone (``fgvc_synth_vit_tiny``) and the pretraining that makes it (``fgvc.studies.pretrain``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import fgvc
import fgvc.backbones.shipped
from fgvc.backbones.shipped import SHIPPED_BACKBONES, list_shipped
from fgvc.data.synthetic import SyntheticFGVC, grid_class_names
from fgvc.studies.pretrain import (
    HELD_OUT_CLASSES,
    PRETRAIN_VOCABULARY,
    PretrainSettings,
    detail_coverage,
    grow_boxes,
    pretrain,
)

NAME = "fgvc_synth_vit_tiny"
SHIPPED = SHIPPED_BACKBONES[NAME]


def test_the_weights_ship_inside_the_package_small_with_a_model_card():
    assert NAME in list_shipped()
    assert SHIPPED.weights.stat().st_size <= 5 * 2**20
    card = SHIPPED.model_card.read_text()
    for section in ("## Data", "## Objective", "## Settings", "## Validation", "fgvc pretrain"):
        assert section in card


@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_every_method_loads_the_shipped_backbone_offline(method):
    model = fgvc.create_model(method, backbone=NAME, pretrained=True, num_classes=10, img_size=128)
    saved = load_file(str(SHIPPED.weights))
    own = model.backbone.vit.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.mlp.fc2.weight", "norm.weight", "pos_embed", "cls_token"):
        assert torch.equal(own[key], saved[key]), key
    assert model.data_config["mean"] == (0.5, 0.5, 0.5)
    out = model.eval()(torch.zeros(2, 3, 128, 128))
    assert out.logits.shape == (2, 10)


def test_position_embeddings_resample_to_other_sizes():
    model = fgvc.create_model("glsim", backbone=NAME, pretrained=True, num_classes=5, img_size=(64, 96))
    assert model.backbone.grid_size == (8, 12)
    assert model.backbone.vit.pos_embed.shape == (1, 1 + 8 * 12, 96)
    saved = load_file(str(SHIPPED.weights))
    assert torch.equal(model.backbone.vit.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])
    assert model.eval()(torch.zeros(1, 3, 64, 96)).logits.shape == (1, 5)


def test_without_pretrained_the_architecture_is_built_with_random_weights():
    model = fgvc.create_model("vit", backbone=NAME, pretrained=False, num_classes=3, img_size=128)
    saved = load_file(str(SHIPPED.weights))
    assert not torch.equal(model.backbone.vit.patch_embed.proj.weight, saved["patch_embed.proj.weight"])


def test_a_missing_weight_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(fgvc.backbones.shipped, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="fgvc_synth_vit_tiny are missing.*fgvc pretrain|model card"):
        fgvc.create_model("vit", backbone=NAME, pretrained=True, num_classes=3, img_size=128)
    assert NAME not in list_shipped()


# ----------------------------------------------------------------------------- what pretraining sees


def test_pretraining_never_sees_the_classes_of_the_default_grids():
    assert len(HELD_OUT_CLASSES) == 16 and len(PRETRAIN_VOCABULARY) == 48
    for k in range(2, 17):
        assert not set(grid_class_names(k)) & set(PRETRAIN_VOCABULARY), k
    # and every shape and every colour still appears in pretraining
    shapes = {c.split("-")[1] for c in PRETRAIN_VOCABULARY}
    colours = {c.split("-")[0] for c in PRETRAIN_VOCABULARY}
    assert len(shapes) == 8 and len(colours) == 8


def test_detail_coverage_is_the_share_of_each_patch_under_the_box():
    boxes = torch.tensor([[8.0, 16.0, 16.0, 24.0], [4.0, 0.0, 12.0, 8.0]])  # one whole patch; two halves
    cover = detail_coverage(boxes, (4, 4), 8)
    assert cover.shape == (2, 4, 4)
    assert cover[0, 2, 1] == 1 and cover[0].sum() == 1
    assert cover[1, 0, 0] == 0.5 and cover[1, 0, 1] == 0.5 and cover[1].sum() == 1


def test_small_details_target_a_compact_region_grown_about_their_centre():
    boxes = torch.tensor([[60.0, 60.0, 67.0, 67.0], [0.0, 0.0, 7.0, 7.0], [10.0, 10.0, 41.0, 41.0]])
    grown = grow_boxes(boxes, 24, (128, 128))
    assert torch.equal(grown[0], torch.tensor([51.5, 51.5, 75.5, 75.5]))  # same centre, 24 px a side
    assert torch.equal(grown[1], torch.tensor([0.0, 0.0, 24.0, 24.0]))  # shifted inside at the border
    assert torch.equal(grown[2], boxes[2])  # a detail already larger is left as it is


def test_pretraining_writes_loadable_weights_a_card_and_is_deterministic(tmp_path):
    tiny = replace(
        PretrainSettings(),
        detail_sides=(7, 31),
        images_per_side=8,
        val_per_side=4,
        steps=3,
        batch_size=8,
        warmup_steps=1,
        threads=1,
    )
    first = pretrain(tmp_path / "a", tiny, progress=False)
    pretrain(tmp_path / "b", tiny, progress=False)
    a, b = (load_file(str(tmp_path / d / f"{NAME}.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(first) == {f"{m}_{s}px" for m in ("top1", "pointing", "glsim_box_iou", "rollout_pointing") for s in (7, 31)}
    card = (tmp_path / "a" / f"{NAME}.md").read_text()
    assert "fgvc pretrain --out runs/pretrain" in card and "--steps 3" in card and "--detail-sides 7,31" in card
    model = fgvc.create_model(
        "glsim", backbone=NAME, checkpoint_path=tmp_path / "a" / f"{NAME}.safetensors", num_classes=4, img_size=128
    )
    assert torch.equal(model.backbone.vit.norm.weight, a["norm.weight"])


def test_the_rollout_term_pulls_the_attention_rollout_onto_the_detail():
    """DCAL's and TransFG's selection read the attention rollout: pretraining trains it to land on the detail."""
    from fgvc.studies.pretrain import _Pretrainer

    torch.manual_seed(0)
    s = replace(PretrainSettings(), img_size=32, threads=1)
    model = _Pretrainer(s, num_classes=3)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [16.0, 16.0, 32.0, 32.0]])
    _, _, _, roll = model(x, rollout=True)
    assert roll.shape == (2, 16) and torch.all(roll > 0)

    def loc(weight: float) -> torch.Tensor:
        model.s = replace(s, rollout_weight=weight)
        return model.losses(x, y, boxes)[1]

    without, with_rollout = loc(0.0), loc(1.0)
    assert with_rollout > without  # the rollout term adds a cross-entropy, which is positive
    with_rollout.backward()
    qkv = model.backbone.vit.blocks[0].attn.qkv.weight.grad
    assert qkv is not None and qkv.abs().sum() > 0  # it trains the attention of the first block too
    model.zero_grad()
    loc(0.0).backward()
    first_block = model.backbone.vit.blocks[0].attn.qkv.weight.grad
    assert not torch.allclose(first_block, qkv)


def test_a_second_stage_continues_from_earlier_weights_and_its_card_gives_both_commands(tmp_path):
    tiny = replace(PretrainSettings(), detail_sides=(31,), images_per_side=8, val_per_side=4, steps=2,
                   batch_size=8, warmup_steps=1, threads=1)
    pretrain(tmp_path / "stage1", tiny, progress=False)
    first = tmp_path / "stage1" / f"{NAME}.safetensors"
    pretrain(tmp_path / "stage2", replace(tiny, init=str(first), lr=1e-12, min_lr=1e-12), progress=False)
    a, b = load_file(str(first)), load_file(str(tmp_path / "stage2" / f"{NAME}.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # a rate of 1e-12 leaves the start as it was
    card = (tmp_path / "stage2" / f"{NAME}.md").read_text()
    stage1, stage2 = [line for line in card.splitlines() if line.startswith("fgvc pretrain")]
    assert stage1.startswith("fgvc pretrain --out runs/pretrain_stage1 --detail-sides 31") and "--init" not in stage1
    assert stage2.startswith(f"fgvc pretrain --out runs/pretrain --init runs/pretrain_stage1/{NAME}.safetensors")
    assert "--lr 1e-12" in stage2 and "--lr" not in stage1
    assert "second stage" in card


def test_pretraining_images_come_from_the_pretraining_vocabulary():
    from fgvc.studies.pretrain import _Views

    views = _Views(replace(PretrainSettings(), detail_sides=(10,)), "train", 6)
    part = views.parts[0]
    assert part.classes == list(PRETRAIN_VOCABULARY) and part.side == 10
    assert isinstance(part, SyntheticFGVC) and part.seed == PretrainSettings().seed


def test_fgvc_pretrain_command_line_sets_the_settings(tmp_path, monkeypatch):
    import fgvc.studies.pretrain
    from fgvc.cli import build_parser

    seen = {}
    def fake(out, s, progress, overwrite):
        seen.update(out=out, s=s, overwrite=overwrite)
        return {}

    monkeypatch.setattr(fgvc.studies.pretrain, "pretrain", fake)
    args = build_parser().parse_args(
        ["pretrain", "--out", str(tmp_path), "--steps", "7", "--detail-sides", "7,31", "--rollout-weight", "0.5",
         "--no-progress"]
    )
    assert args.func(args) == 0
    want = replace(PretrainSettings(), steps=7, detail_sides=(7, 31), rollout_weight=0.5)
    assert seen["s"] == want and seen["out"] == str(tmp_path) and seen["overwrite"] is False
