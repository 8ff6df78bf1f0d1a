"""`fgvc demo` and the command line, on a tiny budget."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from fgvc.cli import build_parser
from fgvc.demo import FULL, QUICK, run_demo


def test_demo_writes_table_checkpoints_and_figure(tmp_path, capsys):
    tiny = replace(
        QUICK, train=64, val=32, test=32, epochs=1, batch_size=32,
        backbone_kwargs=dict(QUICK.backbone_kwargs, depth=1),
    )
    rows = run_demo(out_dir=tmp_path, settings=tiny, progress=False)
    assert [r["method"] for r in rows] == ["vit", "glsim"]
    for r in rows:
        assert 0 <= r["top1"] <= r["top5"] <= 100 and r["params_m"] > 0 and r["train_minutes"] > 0
    assert rows[0]["crop_iou"] is None and 0 <= rows[1]["crop_iou"] <= 1
    printed = capsys.readouterr().out
    assert "| method | top-1 (%) | top-5 (%) | params (M) | training (min) | crop IoU |" in printed
    assert (tmp_path / "vit" / "best.safetensors").exists() and (tmp_path / "glsim" / "best.safetensors").exists()
    assert (tmp_path / "glsim_crops.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == rows and saved["settings"]["epochs"] == 1


def test_quick_demo_is_a_smaller_version_of_the_full_one():
    assert QUICK.train < FULL.train and QUICK.epochs <= FULL.epochs
    assert QUICK.backbone == FULL.backbone and QUICK.img_size == FULL.img_size


def test_cli_parses_demo_options():
    args = build_parser().parse_args(["demo", "--quick", "--out", "somewhere", "--methods", "vit,dcal"])
    assert args.quick and args.out == "somewhere" and args.methods == "vit,dcal" and args.func.__name__ == "_demo"


def test_demo_can_compare_every_method(tmp_path):
    tiny = replace(
        QUICK, train=32, val=16, test=16, epochs=1, batch_size=16,
        backbone_kwargs=dict(QUICK.backbone_kwargs, depth=2),
    )
    rows = run_demo(out_dir=tmp_path, settings=tiny, methods=["dcal", "transfg"], progress=False)
    assert [r["method"] for r in rows] == ["dcal", "transfg"]
    assert not (tmp_path / "glsim_crops.png").exists()  # the crop figure is GLSim's
    with pytest.raises(ValueError, match="unknown demo methods \\['vitt'\\]"):
        run_demo(out_dir=tmp_path, settings=tiny, methods=["vitt"], progress=False)


def test_python_dash_m_fgvc_help():
    out = subprocess.run([sys.executable, "-m", "fgvc", "demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--quick" in out.stdout
