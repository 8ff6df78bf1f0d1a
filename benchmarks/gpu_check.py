"""One-GPU check, ready to run: ``fgvc benchmark`` for every method, and a train-then-resume of each.

Run it through ``benchmarks/gpu_check.sh`` (which bounds it at 8 minutes):

    bash benchmarks/gpu_check.sh              # a CUDA machine: benchmarks/results/gpu_<device name>/
    bash benchmarks/gpu_check.sh --dry-run    # anywhere: a tiny model on the CPU, the same code paths, seconds

1. ``fgvc benchmark`` (the CLI's own code, called in this process) for vit, glsim, its cheaper crop passes
   (glsim_half, glsim_half_pe, glsim_tokens), its glance at half the input side (glsim_glance), dcal (PWCA in all blocks, and dcal_T6), transfg and timm's model, on ViT-B/16 (random
   weights) at 224 and 448 px, under bf16 autocast and in fp32 (TF32 off: PyTorch's default for matmuls), at
   batch 32 and 64: inference images/s, training-step time, peak memory, all as ratios to the ViT of the same
   run. One configuration (dtype, batch, size) after the other, bf16 first; one that fails (out of memory) is
   recorded and the next one runs; those left when the time budget runs out are skipped and said so.
2. Train and resume (run first), for each method: ``fgvc.fit`` one epoch (a few steps, bf16 autocast on the
   GPU), then a fresh model resumes it for a second epoch from ``train_state.safetensors``; passes when the
   losses are finite, the resumed history keeps epoch 1 as trained and the resumed run trained the second
   epoch only (the images it fetched are counted).
3. Activation checkpointing (run second): ``fgvc benchmark --grad-checkpointing both`` for vit, glsim,
   glsim_glance, dcal and transfg at the largest size, first dtype and batch (bf16, batch 32, 448 px): each method's training step
   with it off and on, taking turns; peak memory and step time side by side.
4. The batched crop (run third): ``benchmarks/crop_batched.py``'s comparison of GLSim's crop as one batched op
   against the per-image loop (448 px images to 224 and 448 px crops, batch 32 and 128), with the GPU's sync
   debug mode set to error during the batched op, so that a host sync in it fails the step.

Writes, into the output folder: ``summary.csv`` / ``summary.md`` (every configuration's rows, with amp and batch),
``<amp>_b<batch>_<size>/`` (each benchmark's own methods.csv, selection.csv, benchmark.md) and ``train_resume.csv`` /
``train_resume.md``, ``grad_checkpointing.csv`` / ``grad_checkpointing.md`` (step 3; its benchmark's own files in
``grad_checkpointing_<amp>_b<batch>_<size>/``), ``crop_batched.md`` (step 4). The summary is rewritten after each configuration, so an
interrupted run keeps what it did.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

import fgvc
from fgvc.cli import main as fgvc_main

METHODS = ("vit", "glsim", "glsim_half", "glsim_half_pe", "glsim_tokens", "glsim_glance", "dcal", "dcal_T6", "transfg")
TRAIN_METHODS = ("vit", "glsim", "glsim_half", "glsim_half_pe", "glsim_tokens", "glsim_glance", "dcal", "transfg")
CKPT_METHODS = ("vit", "glsim", "glsim_glance", "dcal", "transfg")  # measured with activation checkpointing off and on
MIN_START_S = 30  # a benchmark configuration starts only with this much of the time budget left


@dataclass(frozen=True)
class Plan:
    """What one check runs: the backbone, sizes, dtypes, batch sizes and the training check's size."""

    backbone: str
    depth: int | None
    sizes: tuple[str, ...]
    amps: tuple[str, ...]
    batches: tuple[int, ...]
    repeats: int
    warmup: int
    train_size: int
    train_batch: int
    train_images: int
    budget_s: float


REAL = Plan("vit_base_patch16_224", None, ("224", "448"), ("bf16", "fp32"), (32, 64), repeats=5, warmup=1,
            train_size=224, train_batch=16, train_images=48, budget_s=450)
# the same code paths on a tiny model (6 blocks so that dcal_T6 exists; 96 / 128 px hold GLSim's top-8 on the
# glance grid too, 3 x 3 and 4 x 4 patches of 16 px)
DRY = Plan("test_vit", 6, ("96", "128"), ("bf16", "fp32"), (2, 4), repeats=1, warmup=0, train_size=96, train_batch=4,
           train_images=8, budget_s=1200)


def device_dir_name(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"gpu_NVIDIA_H200"``: the results folder of a device."""
    return "gpu_" + (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "unknown")


# ------------------------------------------------------------------------------------------- benchmark
def run_benchmarks(plan: Plan, device: str, out: Path, deadline: float, log: list[str]) -> list[dict[str, Any]]:
    """``fgvc benchmark`` per (amp, batch, size), bf16 first; returns all rows with amp, batch and status.

    One size per call, so that an out-of-memory configuration loses that size only; every ratio is to the ViT of
    the same call. A configuration is started only with ``MIN_START_S`` of the budget left (the shell script's
    interrupt stops one that runs past 8 minutes; the summary then holds the configurations before it).
    """
    rows: list[dict[str, Any]] = []
    for amp in plan.amps:
        for b in plan.batches:
            for size in plan.sizes:
                left = deadline - time.monotonic()
                if left < MIN_START_S:
                    log.append(f"{amp} batch {b} {size} px: skipped ({left:.0f} s of the time budget left)")
                    rows.append(dict(amp=amp, batch=b, img_size=size, status="skipped: time budget"))
                    continue
                rows += benchmark_one(plan, device, out / f"{amp}_b{b}_{size}", amp, b, size, log)
                write_summary(out, rows, log)
    return rows


def benchmark_one(plan: Plan, device: str, sub: Path, amp: str, b: int, size: str, log: list[str],
                  methods: tuple[str, ...] = METHODS, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One ``fgvc benchmark`` call (the CLI's code, in this process); its rows, or one row saying why not.
    ``extra``: more of the command's flags."""
    args = ["benchmark", "--methods", ",".join(methods), "--backbone", plan.backbone, "--img-size", size,
            "--batch-size", str(b), "--amp", amp, "--device", device, "--repeats", str(plan.repeats),
            "--warmup", str(plan.warmup), "--out", str(sub), "--no-progress", *extra]
    if plan.depth is not None:
        args += ["--depth", str(plan.depth)]
    start = time.monotonic()
    try:
        fgvc_main(args)
        with open(sub / "methods.csv") as f:
            rows = [{**r, "amp": amp, "batch": b, "status": "ok"} for r in csv.DictReader(f)]
        status = "ok"
    except Exception as error:  # an out-of-memory configuration must not stop the others
        traceback.print_exc()
        message = str(error).splitlines()[0][:200] if str(error) else ""
        status = f"failed: {type(error).__name__}: {message}"
        rows = [dict(amp=amp, batch=b, img_size=size, status=status)]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    log.append(f"{amp} batch {b} {size} px: {status} ({time.monotonic() - start:.0f} s)")
    print(log[-1], flush=True)
    return rows


def run_checkpointing(plan: Plan, device: str, out: Path, log: list[str]) -> list[dict[str, Any]]:
    """Step 3: ``fgvc benchmark --grad-checkpointing both`` for ``CKPT_METHODS`` at the largest size, first dtype
    and batch; writes ``grad_checkpointing.csv`` (its rows) and ``grad_checkpointing.md`` (off against on)."""
    amp, b, size = plan.amps[0], plan.batches[0], plan.sizes[-1]
    sub = out / f"grad_checkpointing_{amp}_b{b}_{size}"
    rows = benchmark_one(plan, device, sub, amp, b, size, log, methods=CKPT_METHODS,
                         extra=("--grad-checkpointing", "both", "--no-timm", "--no-selection"))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / "grad_checkpointing.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Activation checkpointing: {ENV.get('device')}", "",
             f"{plan.backbone}{'' if plan.depth is None else f' (depth {plan.depth})'} (random weights), {amp}, batch "
             f"{b}, {size} px: fgvc benchmark --grad-checkpointing both", ""]
    table = (sub / "benchmark.md").read_text() if (sub / "benchmark.md").is_file() else ""
    pair = table.partition("Activation checkpointing, training step")[2].strip()
    lines += ["Training step " + pair if pair else f"not measured: {rows[0]['status']}"]
    (out / "grad_checkpointing.md").write_text("\n".join(lines) + "\n")
    return rows


def run_crop(plan: Plan, device: str, out: Path, log: list[str]) -> str:
    """Step 4: the batched crop against the loop (``crop_batched.compare``), no host sync allowed on CUDA;
    writes ``crop_batched.md``. Returns "ok" or why it failed."""
    from crop_batched import compare  # benchmarks/ is the script's folder

    from fgvc.layers.geometry import crop_and_resize_batched

    img = 448 if plan is REAL else 64
    cases = [(b, o) for b in ((32, 128) if plan is REAL else (2, 4)) for o in (img // 2, img)]
    lines = [f"# Batched crop: {ENV.get('device')}", "", f"{img} px images, boxes on 16 px patch borders (8 px in the "
             "dry run), median of the interleaved rounds (benchmarks/crop_batched.py)", "",
             "| batch | crop | loop (ms) | batched (ms) | loop / batched | max abs diff |", "|---:|---:|---:|---:|---:|---:|"]
    status = "ok"
    try:
        if device == "cuda":  # the batched op must not wait for the GPU: a sync inside it raises
            images = torch.randn(4, 3, img, img, device=device)
            boxes = torch.tensor([[0, 0, img, img], [16, 16, 64, 48], [0, 0, 16, 16], [32, 0, img, img]], device=device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                crop_and_resize_batched(images, boxes, (img // 2, img // 2))
            finally:
                torch.cuda.set_sync_debug_mode("default")
            lines[2] += "; no host sync in the batched op (CUDA sync debug mode: error)"
        for b, o in cases:
            r = compare(b, img, o, torch.device(device), 21 if plan is REAL else 3, 16 if plan is REAL else 8)
            lines.append(f"| {b} | {o} | {r['loop'] * 1e3:.2f} | {r['batched'] * 1e3:.2f} | {r['ratio']:.2f} | "
                         f"{r['diff']:.1e} |")
    except Exception as e:  # noqa: BLE001 - recorded, the check goes on
        status = f"failed: {type(e).__name__}: {e}"
        lines.append(status)
    (out / "crop_batched.md").write_text("\n".join(lines) + "\n")
    log.append(f"batched crop: {status}")
    print(log[-1], flush=True)
    return status


def write_summary(out: Path, rows: list[dict[str, Any]], log: list[str]) -> None:
    """``summary.csv`` (every column of every row) and ``summary.md`` (the columns one compares)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# GPU check: {ENV.get('device')}", "", ENV.get("line", ""), "",
             "| amp | batch | method | size | img/s | x ViT | train img/s | x ViT (time) | infer mem (MiB) "
             "| train mem (MiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['amp']} | {r['batch']} | {r['status']} | {r['img_size']} | | | | | | |")
            continue
        lines.append(
            f"| {r['amp']} | {r['batch']} | {r['method']} | {r['img_size']} | {_num(r['throughput'], '.1f')} | "
            f"{_num(r['throughput_ratio'], '.2f')} | {_num(r['train_throughput'], '.1f')} | "
            f"{_num(r['train_ratio'], '.2f')} | {_num(r['infer_mem_mib'], '.0f')} | {_num(r['train_mem_mib'], '.0f')} |"
        )
    lines += ["", "Log:", ""] + [f"- {line}" for line in log]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def _num(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else format(v, spec)


# ------------------------------------------------------------------------------------------- train + resume
class CountingImages(Dataset):
    """Seeded random images and labels; counts the items fetched (to see what a resumed run trains)."""

    def __init__(self, n: int, size: int, num_classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)  # (n, 3, size, size)
        self.targets = torch.randint(0, num_classes, (n,), generator=g).tolist()
        self.classes = [str(c) for c in range(num_classes)]
        self.fetched = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.fetched += 1
        return self.images[i], self.targets[i]


def train_and_resume(plan: Plan, device: str, work: Path) -> list[dict[str, Any]]:
    """Each method: one epoch, then a fresh model resumes for a second one; rows with the verdict."""
    from fgvc.studies.benchmark import VARIANTS

    rows = []
    for label in TRAIN_METHODS:
        method, options = VARIANTS.get(label, (label, {}))
        run = work / label
        kw = dict(backbone=plan.backbone, num_classes=4, img_size=plan.train_size,
                  backbone_kwargs=None if plan.depth is None else dict(depth=plan.depth), **options)
        fit = dict(batch_size=plan.train_batch, lr=1e-4, warmup_steps=1, device=device, out_dir=run, progress=False,
                   log_every_steps=1, amp="auto", seed=0)
        start = time.monotonic()
        try:
            torch.manual_seed(0)
            first = fgvc.fit(fgvc.create_model(method, **kw), CountingImages(plan.train_images, plan.train_size, 4),
                             epochs=1, **fit)
            data = CountingImages(plan.train_images, plan.train_size, 4)
            resumed = fgvc.fit(fgvc.create_model(method, **kw), data, epochs=2, resume=True, **fit)
            losses = resumed["train_loss"]
            trained_only_epoch_2 = data.fetched <= len(data) + 1  # + the one image the size check reads
            ok = (len(resumed) == 2 and all(math.isfinite(v) for v in losses) and trained_only_epoch_2
                  and resumed.epochs[0]["train_loss"] == first.epochs[0]["train_loss"])
            status = "ok" if ok else (f"FAILED: epochs {len(resumed)}, losses {losses}, images fetched by the "
                                      f"resumed run {data.fetched} of {len(data)}")
            rows.append(dict(method=label, status=status, epoch1_loss=losses[0], epoch2_loss=losses[-1],
                             resumed_images=data.fetched, seconds=round(time.monotonic() - start, 1)))
        except Exception as error:
            traceback.print_exc()
            rows.append(dict(method=label, status=f"FAILED: {type(error).__name__}: {error}"[:300],
                             seconds=round(time.monotonic() - start, 1)))
        print(f"train + resume {label}: {rows[-1]['status']} ({rows[-1]['seconds']} s)", flush=True)
    return rows


def write_train_resume(out: Path, rows: list[dict[str, Any]], plan: Plan) -> None:
    keys = ["method", "status", "epoch1_loss", "epoch2_loss", "resumed_images", "seconds"]
    with open(out / "train_resume.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Train and resume: {ENV.get('device')}", "",
             f"{plan.backbone}{'' if plan.depth is None else f' (depth {plan.depth})'} at {plan.train_size} px, "
             f"batch {plan.train_batch}, {plan.train_images} random images, amp auto (bf16 on a GPU): one epoch, then a "
             "fresh model resumes for epoch 2 from train_state.safetensors.", "",
             "| method | status | epoch 1 loss | epoch 2 loss | images fetched after resume | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['status']} | {_num(r.get('epoch1_loss'), '.4f')} | "
              f"{_num(r.get('epoch2_loss'), '.4f')} | {r.get('resumed_images', '-')} | {r['seconds']} |" for r in rows]
    (out / "train_resume.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- main
ENV: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU: checks the script, no figures")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results/gpu_<device name>; "
                        "a temporary folder for --dry-run)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole check (default: the "
                        "plan's; the shell script stops everything at 8 minutes)")
    args = parser.parse_args(argv)
    plan = DRY if args.dry_run else REAL
    if args.dry_run:
        device, name = "cpu", "dry-run on " + (platform.processor() or platform.machine() or "CPU")
    elif not torch.cuda.is_available():
        print("no CUDA device visible to torch: run with --dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    else:
        device, name = "cuda", torch.cuda.get_device_name(0)
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="fgvc_gpu_check_")) if args.dry_run
        else Path(__file__).resolve().parent / "results" / device_dir_name(name))
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + (args.budget_s or plan.budget_s)
    cuda = f", CUDA {torch.version.cuda}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}" if device == "cuda" else ""
    ENV.update(device=name, line=f"{name}; torch {torch.__version__}{cuda}; {plan.backbone} (random weights), "
               f"sizes {', '.join(plan.sizes)}, batches {plan.batches}, median of {plan.repeats} runs after "
               f"{plan.warmup} warm-up, models taking turns; methods {', '.join(METHODS)}")
    print(f"GPU check ({'dry run' if args.dry_run else name}) -> {out}", flush=True)
    log: list[str] = []
    rows: list[dict[str, Any]] = []
    resume: list[dict[str, Any]] = []
    ckpt: list[dict[str, Any]] = []
    crop = "not run"
    try:  # correctness first (train, resume), then the figures in the time left
        with tempfile.TemporaryDirectory(prefix="fgvc_resume_") as work:
            resume = train_and_resume(plan, device, Path(work))
        write_train_resume(out, resume, plan)
        ckpt = run_checkpointing(plan, device, out, log)
        crop = run_crop(plan, device, out, log)
        rows = run_benchmarks(plan, device, out, deadline, log)
    except KeyboardInterrupt:  # the shell script's 8-minute limit: keep what was measured
        log.append("interrupted (time limit): the configurations above are complete, the rest did not run")
    log.append(f"total {time.monotonic() - start:.0f} s")
    write_summary(out, rows, log)
    failed = [r for r in rows if r["status"].startswith("failed")] + [r for r in resume if r["status"] != "ok"]
    failed += [r for r in ckpt if r["status"].startswith("failed")] + ([{"status": crop}] if crop != "ok" else [])
    print(f"written: {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'train_resume.md'}, "
          f"{out / 'grad_checkpointing.md'}, {out / 'crop_batched.md'}; {len(failed)} failed; {time.monotonic() - start:.0f} s", flush=True)
    return 1 if any(r["status"] != "ok" for r in resume) or not any(r["status"] == "ok" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download
    sys.exit(main())
