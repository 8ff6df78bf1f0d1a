"""`fgvc demo` and the command line, on a tiny budget."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from fgvc.cli import build_parser
from fgvc.data.synthetic import SyntheticFGVC
from fgvc.studies.demo import FULL, HARD, QUICK, run_demo

TINY = replace(QUICK, train=40, val=20, test=20, epochs=1, batch_size=20)


def test_demo_fine_tunes_every_method_from_the_shipped_backbone(tmp_path, capsys):
    rows = run_demo(out_dir=tmp_path, settings=TINY, progress=False)
    assert [r["method"] for r in rows] == ["vit", "glsim", "dcal", "transfg_nodropout"]
    for r in rows:
        assert 0 <= r["top1"] <= r["top5"] <= 100 and r["params_m"] > 0 and r["train_minutes"] > 0
        assert (tmp_path / r["method"] / "best.safetensors").exists()
    by = {r["method"]: r for r in rows}
    assert by["vit"]["crop_iou"] is None and 0 <= by["glsim"]["crop_iou"] <= 1
    assert by["glsim"]["pointing_game"] is not None and by["dcal"]["pointing_game"] is not None
    printed = capsys.readouterr().out
    assert "| method | seed | top-1 (%) | top-5 (%) | crop IoU | pointing game (%) | params (M) |" in printed
    assert "chance 10%" in printed and "from the shipped fgvc_synth_vit_tiny" in printed
    assert (tmp_path / "where_they_look.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == rows and saved["settings"]["epochs"] == 1
    assert {"fgvc", "torch", "timm", "threads"} <= set(saved["versions"])


def test_the_same_demo_twice_gives_identical_metrics(tmp_path):
    settings = replace(TINY, methods=("vit", "glsim"))
    first = run_demo(out_dir=tmp_path / "a", settings=settings, progress=False)
    second = run_demo(out_dir=tmp_path / "b", settings=settings, progress=False)
    keys = ("top1", "top5", "crop_iou", "pointing_game")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]


def test_the_demo_fine_tunes_the_backbone_gently_and_the_new_layers_fast():
    """The pretrained backbone at 1e-7, nearly frozen (the rate every README figure was measured at), the layers
    each method adds at 1e-3."""
    assert FULL.lr * FULL.backbone_lr_scale == pytest.approx(1e-7) and FULL.lr == 1e-3
    assert HARD.lr == FULL.lr and HARD.backbone_lr_scale == FULL.backbone_lr_scale


def test_quick_and_hard_are_variants_of_the_full_demo():
    assert QUICK.train < FULL.train and QUICK.epochs <= FULL.epochs
    assert QUICK.backbone == FULL.backbone == HARD.backbone and QUICK.img_size == FULL.img_size == HARD.img_size
    assert FULL.pretrained and HARD.detail_px < FULL.detail_px
    assert SyntheticFGVC(2, image_size=HARD.img_size, detail_fraction=HARD.detail_fraction).side == HARD.detail_px
    assert SyntheticFGVC(2, image_size=FULL.img_size, detail_fraction=FULL.detail_fraction).side == FULL.detail_px


def test_cli_parses_demo_options():
    args = build_parser().parse_args(
        ["demo", "--quick", "--hard", "--out", "somewhere", "--methods", "vit,dcal", "--seeds", "0,1,2",
         "--backbone-lr-scale", "0.1"]
    )
    assert args.quick and args.hard and args.out == "somewhere" and args.methods == ("vit", "dcal")
    assert args.seeds == [0, 1, 2] and args.backbone_lr_scale == 0.1 and args.func.__name__ == "_demo"
    assert build_parser().parse_args(["demo"]).backbone_lr_scale is None  # the settings' own


def test_the_backbone_rate_can_be_changed_and_is_printed_and_saved(tmp_path, capsys):
    settings = replace(TINY, methods=("vit",), train=20, val=10, test=10)
    run_demo(out_dir=tmp_path, settings=settings, backbone_lr_scale=0.1, progress=False)
    assert "(lr 0.001, backbone x 0.1)" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["backbone_lr_scale"] == 0.1


def test_several_seeds_add_a_mean_and_std_table(tmp_path):
    settings = replace(TINY, methods=("vit",), train=20, val=10, test=10)
    rows = run_demo(out_dir=tmp_path, settings=settings, seeds=[0, 1], progress=False)
    assert [r["seed"] for r in rows] == [0, 1]
    text = (tmp_path / "results.md").read_text()
    assert "Mean +- std over seeds 0, 1" in text and "| vit | 2 |" in text
    assert (tmp_path / "seed0" / "where_they_look.png").exists()
    with pytest.raises(ValueError, match=r"unknown demo\.methods \['vitt'\]"):
        run_demo(out_dir=tmp_path, settings=settings, methods=["vitt"], progress=False)


def test_python_dash_m_fgvc_help():
    out = subprocess.run([sys.executable, "-m", "fgvc", "demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--quick" in out.stdout



def test_the_hard_setting_adds_glsims_compact_box_variant(tmp_path):
    from fgvc import load_model
    from fgvc.methods.base import resolve_method

    assert HARD.methods == ("vit", "glsim", "glsim_top2", "dcal", "transfg") and HARD.detail_px == 7
    assert resolve_method("glsim_top2") == ("glsim", {"top_k": 2, "inclusive_box": True})
    rows = run_demo(out_dir=tmp_path, settings=TINY, methods=["glsim_top2"], progress=False)
    assert [r["method"] for r in rows] == ["glsim_top2"] and 0 <= rows[0]["crop_iou"] <= 1
    model = load_model(tmp_path / "glsim_top2" / "best.safetensors")
    assert (model.top_k, model.inclusive_box) == (2, True)
