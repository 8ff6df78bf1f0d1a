"""``benchmarks/gpu_check.sh``: its ``--dry-run`` (a tiny model on the CPU) runs every step a GPU run would."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"vit", "timm", "glsim", "glsim_half", "glsim_half_pe", "glsim_tokens", "glsim_glance", "dcal", "dcal_T6",
           "transfg"}


def run_check(*args: str) -> subprocess.CompletedProcess:
    # seconds on an idle machine; the hard limit is raised so that a busy one does not cut the dry run short
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", FGVC_GPU_CHECK_LIMIT_S="1100")
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=1200)


def test_dry_run_benchmarks_every_method_dtype_and_batch_and_resumes_each_method(tmp_path):
    result = run_check("--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["status"] for r in rows} == {"ok"}
    combos = {(r["amp"], r["batch"], r["method"], r["img_size"]) for r in rows}
    assert combos == {(a, b, m, s) for a in ("bf16", "fp32") for b in ("2", "4") for m in METHODS for s in ("96", "128")}
    for r in rows:
        for key in ("throughput", "train_throughput", "throughput_ratio", "train_ratio"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0
        assert r["amp"] == "bf16" or float(r["train_mem_mib"]) > 0 or math.isnan(float(r["train_mem_mib"]))
    md = (tmp_path / "summary.md").read_text()
    assert "| bf16 | 2 | glsim_glance | 96 |" in md and "| fp32 | 4 | dcal_T6 | 128 |" in md
    for amp in ("bf16", "fp32"):
        for b in (2, 4):
            for size in (96, 128):
                assert (tmp_path / f"{amp}_b{b}_{size}" / "benchmark.md").is_file()
    with open(tmp_path / "train_resume.csv") as f:
        resumed = list(csv.DictReader(f))
    assert {r["method"] for r in resumed} == {"vit", "glsim", "glsim_half", "glsim_half_pe", "glsim_tokens", "glsim_glance", "dcal",
                                          "transfg"}
    assert {r["status"] for r in resumed} == {"ok"}
    crop = (tmp_path / "crop_batched.md").read_text()
    assert crop.count("\n| ") == 5 and "failed" not in crop  # header + 2 batches x 2 crop sizes


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine would run the real check")
def test_without_a_gpu_the_real_check_refuses_and_names_the_dry_run(tmp_path):
    result = run_check("--out", str(tmp_path))
    assert result.returncode == 2 and "--dry-run" in result.stderr
