"""``fgvc.benchmark`` / ``fgvc benchmark``: the figures are produced and consistent (never how fast they are)."""

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

import fgvc
from fgvc.cli import main
from fgvc.studies.benchmark import MethodCost, count_macs, vit_macs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
QUICK = dict(backbone=TINY["backbone"], backbone_kwargs=TINY["backbone_kwargs"], batch_size=2, warmup=0,
             repeats=1)


@pytest.mark.parametrize(
    "backbone, kwargs, size",
    [
        ("test_vit", dict(depth=2), (64, 96)),  # non-square
        ("test_vit", dict(depth=2), 160),
        ("deit_tiny_patch16_224", {}, 224),
        ("deit_tiny_patch16_224", {}, (224, 160)),
    ],
)
def test_plain_vit_macs_equal_the_formula(backbone, kwargs, size):
    """FlopCounterMode under math attention counts exactly the architecture's matmul MACs."""
    model = fgvc.create_model("vit", backbone=backbone, backbone_kwargs=kwargs, num_classes=200, img_size=size)
    h, w = model.img_size
    x = torch.randn(2, 3, h, w)
    assert count_macs(lambda: model.eval()(x)) == 2 * vit_macs(model.backbone, 200)


def test_vit_macs_formula_by_hand():
    """DeiT-Ti at 224 px with 1000 classes: the 1.3 GMACs usually quoted, written out term by term."""
    model = fgvc.create_model("vit", backbone="deit_tiny_patch16_224", num_classes=1000, img_size=224)
    n, t, d, hidden, depth = 196, 197, 192, 768, 12
    expected = n * d * 3 * 16 * 16 + depth * (t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * hidden) + d * 1000
    assert vit_macs(model.backbone, 1000) == expected == 1_253_683_200


@pytest.fixture(scope="module")
def tiny_benchmark():
    torch.manual_seed(0)
    return fgvc.benchmark(["glsim", "dcal", "transfg", "dcal_nopwca"], img_sizes=[64, (64, 96)], memory=False, **QUICK)


def test_benchmark_rows_and_ratios(tiny_benchmark):
    r = tiny_benchmark
    labels = ["vit", "timm", "glsim", "dcal", "transfg", "dcal_nopwca"]  # the ViT is added, timm beside it
    assert [(row.method, row.img_size) for row in r.rows] == [(m, s) for s in ("64", "64x96") for m in labels]
    for size in (64, (64, 96)):
        vit, timm_row = r.row("vit", size), r.row("timm", size)
        assert vit.throughput_ratio == vit.macs_ratio == vit.train_ratio == vit.train_macs_ratio == 1.0
        assert timm_row.gmacs == vit.gmacs and timm_row.params_m == vit.params_m  # the wrapper adds nothing
        for row in r.rows:
            assert isinstance(row, MethodCost)
            for value in (row.params_m, row.gmacs, row.train_gmacs, row.infer_ms, row.throughput, row.train_ms):
                assert math.isfinite(value) and value > 0
            assert row.throughput == pytest.approx(row.batch_size / row.infer_ms * 1e3)
        h, w = (64, 64) if size == 64 else size
        assert vit.gmacs * 1e9 == vit_macs(fgvc.create_model("vit", **TINY, num_classes=200, img_size=size).backbone,
                                           200)
        glsim, dcal, nopwca = r.row("glsim", size), r.row("dcal", size), r.row("dcal_nopwca", size)
        assert glsim.macs_ratio > 2.0  # two encoder passes plus the aggregator block
        assert dcal.gmacs == nopwca.gmacs and dcal.train_gmacs > nopwca.train_gmacs  # PWCA is training-only
        assert math.isnan(vit.select_macs_pct) and glsim.select_macs_pct > 0


def test_selection_table(tiny_benchmark):
    steps = {(c.img_size, c.method, c.reference) for c in tiny_benchmark.selection}
    for size in ("64", "64x96"):
        assert {(size, "", False), (size, "glsim", False), (size, "dcal", False), (size, "dcal", True),
                (size, "transfg", False), (size, "transfg", True)} == {s for s in steps if s[0] == size}
    encoder = [c for c in tiny_benchmark.selection if c.step == "encoder forward"]
    assert all(c.time_pct == c.macs_pct == 100.0 and c.mmacs > 0 for c in encoder)


def test_markdown_csv_and_plot(tiny_benchmark, tmp_path):
    md = tiny_benchmark.to_markdown()
    assert "| method | size |" in md and "| glsim | 64x96 |" in md and "torch threads" in md
    assert "Targets" not in md and ": met" not in md and "NOT met" not in md  # no verdicts in users' reports
    path = tiny_benchmark.to_csv(tmp_path / "m.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(tiny_benchmark.rows) and {"method", "img_size", "gmacs", "throughput_ratio"} <= set(rows[0])
    written = tiny_benchmark.save(tmp_path / "out", accuracies={"vit": 80.0, "glsim@64": 82.0})
    assert {p.name for p in written} == {"methods.csv", "selection.csv", "benchmark.md", "accuracy_vs_throughput.png"}
    assert all(p.stat().st_size > 0 for p in written)
    with pytest.raises(ValueError, match="match no measured"):
        tiny_benchmark.plot({"resnet": 70.0})


def _benchmark_targets():
    """``benchmarks/_targets.py``: the development targets the cost benchmarks print (not part of the package)."""
    spec = importlib.util.spec_from_file_location("_targets", BENCHMARKS / "_targets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_targets"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmarks_check_their_targets_on_the_ratios(tiny_benchmark):
    targets = _benchmark_targets()
    checks = targets.check_targets(tiny_benchmark.rows)
    names = {(t.name, t.img_size) for t in checks}
    assert ("glsim inference throughput x ViT", "64") in names
    assert ("dcal inference MACs x ViT", "64x96") in names
    assert ("fgvc vit throughput x timm's model", "64") in names
    assert all(t.met in (True, False) for t in checks)
    assert targets.targets_markdown(tiny_benchmark.rows).startswith("\n\nTargets (ratios of this run):\n\n- ")


def test_glsim_selection_is_under_a_thousandth_of_the_encoder():
    """At a realistic size (DeiT-Ti, 224 px) GLSim's selection is < 0.1% of the encoder's MACs, while the
    rollout over full T x T maps and TransFG's official product are much larger shares."""
    r = fgvc.benchmark(["glsim", "dcal", "transfg"], backbone="deit_tiny_patch16_224", img_sizes=[224], batch_size=2,
                     warmup=0, repeats=1, train=False, memory=False, timm_reference=False)
    shares = {(c.method, c.reference): c.macs_pct for c in r.selection}
    assert 0 < r.row("glsim", 224).select_macs_pct == shares[("glsim", False)] < 0.1
    assert shares[("dcal", True)] > 10 * shares[("glsim", False)]
    assert shares[("transfg", True)] > 10 * shares[("glsim", False)]
    assert r.row("dcal", 224).macs_ratio <= 1.15  # DCAL's inference: one extra GLCA block over R queries


def test_memory_is_measured():
    r = fgvc.benchmark(["vit"], img_sizes=[64], timm_reference=False, **QUICK)
    row = r.row("vit", 64)
    if math.isnan(row.train_mem_mib):
        pytest.skip("no /proc on this system: CPU memory is not measured")
    assert row.train_mem_mib > 0 and row.infer_mem_mib >= 0


def test_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown method 'resnet'"):
        fgvc.benchmark(["resnet"], **QUICK)
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        fgvc.benchmark(["vit"], **dict(QUICK, batch_size=1))


def test_cli_benchmark(tmp_path, capsys):
    code = main([
        "benchmark", "--methods", "vit,glsim", "--backbone", "test_vit", "--depth", "2", "--img-size", "64",
        "64x96", "--batch-size", "2", "--warmup", "0", "--repeats", "1", "--no-memory", "--no-progress", "--amp",
        "bf16",
        "--out", str(tmp_path), "--accuracy", "vit=50,glsim=55.5",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "| glsim | 64x96 |" in out and "| timm | 64 |" in out and "written:" in out
    for name in ("methods.csv", "selection.csv", "benchmark.md", "accuracy_vs_throughput.png"):
        assert (tmp_path / name).is_file()


def test_cli_benchmark_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--accuracy", "vit:83"])
    assert "METHOD=TOP1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--img-size", "448by336"])
    assert "N or HxW" in capsys.readouterr().err


def test_ranges_bracket_the_medians_and_options_are_rows():
    """Each timing is a median with the range of its runs; each ratio the median of the rounds' own ratios;
    GLSim's cheaper crop passes and DCAL's PWCA in fewer blocks are rows like the methods."""
    r = fgvc.benchmark(["glsim", "glsim_half", "glsim_tokens", ("dcal_T1", "dcal", dict(pwca_blocks=1))],
                     img_sizes=[64], memory=False, selection=False, timm_reference=False,
                     **dict(QUICK, repeats=3))
    assert [row.method for row in r.rows] == ["vit", "glsim", "glsim_half", "glsim_tokens", "dcal_T1"]
    assert r.selection == []
    for row in r.rows:
        assert row.throughput_lo <= row.throughput <= row.throughput_hi
        assert row.throughput_ratio_lo <= row.throughput_ratio <= row.throughput_ratio_hi
        assert row.train_throughput_lo <= row.train_throughput <= row.train_throughput_hi
        assert row.train_ratio_lo <= row.train_ratio <= row.train_ratio_hi
        assert row.train_throughput == pytest.approx(row.batch_size / row.train_ms * 1e3)
    vit = r.row("vit", 64)
    assert vit.throughput_ratio_lo == vit.throughput_ratio_hi == vit.train_ratio_lo == vit.train_ratio_hi == 1.0
    glsim, half = r.row("glsim", 64), r.row("glsim_half", 64)
    assert half.macs_ratio < 0.7 * glsim.macs_ratio  # the crop pass at a quarter of the tokens
    assert r.row("glsim_tokens", 64).macs_ratio <= glsim.macs_ratio
    assert ("glsim_half inference throughput x ViT", "64") in {
        (t.name, t.img_size) for t in _benchmark_targets().check_targets(r.rows)}
    load = r.setup["loadavg"]
    assert len(load) == 2 and "load average" in r.to_markdown()


def test_benchmark_under_bf16_autocast():
    r = fgvc.benchmark(["glsim"], img_sizes=[64], memory=False, selection=False, timm_reference=False, amp="bf16",
                     **QUICK)
    assert {row.amp for row in r.rows} == {"bfloat16"} and "bfloat16" in r.to_markdown()
    assert all(math.isfinite(row.throughput) and math.isfinite(row.train_ms) for row in r.rows)
