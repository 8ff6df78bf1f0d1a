"""The glance study's setting: ``fgvc demo``'s ``method@SIZE`` (the same pictures at a lower input resolution)
and ``vocabulary`` (which classes), and ``benchmarks/glance_study.py`` on a tiny budget."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fgvc.cli import build_parser
from fgvc.settings import flag_changes
from fgvc.studies.demo import FULL, QUICK, DemoSettings, Downscaled, run_demo, split_input_size

TINY = replace(QUICK, img_size=64, detail_px=12, train=24, val=12, test=12, epochs=1, batch_size=12)
SHAPES = ("red-circle", "red-ring", "red-square")


def test_a_method_may_name_the_side_its_input_is_downscaled_to():
    assert split_input_size("vit@64") == ("vit", 64)
    assert split_input_size("glsim_half_pe") == ("glsim_half_pe", None)
    with pytest.raises(ValueError, match="after '@'"):
        split_input_size("vit@small")
    assert DemoSettings(methods=("vit", "vit@64")).methods == ("vit", "vit@64")
    with pytest.raises(ValueError, match=r"unknown demo.methods \[.vitt@64.\]"):
        DemoSettings(methods=("vitt@64",))


def test_the_vocabulary_sets_the_classes_and_defaults_to_the_grid():
    assert FULL.vocabulary == () and FULL.class_count == FULL.num_classes == 10
    assert "vocabulary" not in FULL.data_options()
    s = replace(FULL, vocabulary=SHAPES)
    assert s.class_count == 3 and s.data_options()["vocabulary"] == list(SHAPES)
    assert s.splits()["test"].classes == list(SHAPES)
    with pytest.raises(ValueError, match="vocabulary"):
        DemoSettings(vocabulary=("red-circle", "red-blob"))


def test_the_demo_flags_take_sized_methods_and_a_vocabulary():
    argv = ["demo", "--methods", "vit,vit@64,glsim", "--vocabulary", ",".join(SHAPES)]
    args = build_parser().parse_args(argv)
    s = DemoSettings.from_mapping(flag_changes(DemoSettings, args), base=FULL)
    assert s.methods == ("vit", "vit@64", "glsim") and s.vocabulary == SHAPES


def test_downscaled_keeps_labels_and_boxes_and_shrinks_the_pictures():
    data = TINY.splits()["test"]
    small = Downscaled(data, 32)
    image, label = small[3]
    assert image.shape == (3, 32, 32) and label == data[3][1]
    assert torch.equal(small.input_boxes, data.input_boxes) and small.targets == data.targets
    assert image.mean().item() == pytest.approx(data[3][0].mean().item(), abs=0.02)  # a resize, not a crop


def test_a_tiny_demo_trains_a_model_on_downscaled_pictures(tmp_path):
    settings = replace(TINY, methods=("vit", "vit@32"), vocabulary=SHAPES)
    rows = run_demo(out_dir=tmp_path, settings=settings, progress=False)
    assert [r["method"] for r in rows] == ["vit", "vit@32"]
    from fgvc.storage.checkpoint import load_model

    assert tuple(load_model(tmp_path / "vit@32" / "best.safetensors").img_size) == (32, 32)
    assert tuple(load_model(tmp_path / "vit" / "best.safetensors").img_size) == (64, 64)
    assert (tmp_path / "where_they_look.png").exists()


def test_the_glance_study_prints_accuracy_and_throughput_ratios_and_writes_json(tmp_path, capsys):
    study = _study()
    out = tmp_path / "glance.json"
    study.main(["--methods", "vit,vit@32,glsim_k1", "--variant", "glsim_k1 top_k=1", "--seeds", "0",
                "--img-size", "64", "--detail-px", "12", "--train", "24", "--val", "12", "--test", "12",
                "--epochs", "1", "--batch-size", "4", "--repeats", "1", "--warmup", "0",
                "--out", str(tmp_path / "runs"), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert [r["method"] for r in saved["results"]] == ["vit", "vit@32", "glsim_k1"]
    speed, summary = saved["throughput"], saved["summary"]
    assert speed["vit"]["infer_ratio"] == 1.0 and speed["vit@32"]["train_ratio"] > 0
    assert summary["vit@32"]["input_px"] == 32 and summary["glsim_k1"]["crop_iou_mean"] is not None
    printed = capsys.readouterr().out
    assert "| vit@32 | 32 |" in printed and "x ViT" in printed
    from fgvc.methods.base import method_variants

    assert "glsim_k1" not in method_variants()  # the study's variants are its own


def _study():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "glance_study.py"
    spec = importlib.util.spec_from_file_location("glance_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_the_verdict_checks_the_three_target_clauses():
    """A glance at >= 1.5x the full-size ViT's inference throughput, top-1 at least the ViT's and at most 1
    point below official GLSim's; no speed-up is judged when the ratios are not to the ViT."""
    study = _study()
    summary = {m: dict(top1_mean=t) for m, t in [("vit", 50.0), ("glsim", 60.0), ("glsim_glance", 59.5),
                                                  ("glsim_glance_top2", 49.0)]}
    speed = {"glsim_glance": dict(infer_ratio=1.6), "glsim_glance_top2": dict(infer_ratio=1.4)}
    checks = study.verdict(summary, speed)
    assert checks["glsim_glance"] == dict(speedup=1.6, speedup_ok=True, minus_vit=9.5, top1_ok_vs_vit=True,
                                          minus_glsim=-0.5, top1_ok_vs_glsim=True)
    top2 = checks["glsim_glance_top2"]
    assert not top2["speedup_ok"] and not top2["top1_ok_vs_vit"] and not top2["top1_ok_vs_glsim"]
    no_vit = study.verdict({m: summary[m] for m in ("glsim", "glsim_glance")}, speed)
    assert no_vit["glsim_glance"]["speedup"] is None and no_vit["glsim_glance"]["minus_vit"] is None
