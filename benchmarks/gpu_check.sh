#!/usr/bin/env bash
# One-GPU check of fgvc, bounded at 8 minutes: `fgvc benchmark` for every method on ViT-B/16 at 224 and 448 px
# (bf16 autocast and fp32, batch 32 and 64, inference and training step, peak memory), a train-then-resume
# of each method and the training step with activation checkpointing off and on (bf16, batch 32, 448 px); CSV
# and markdown into benchmarks/results/gpu_<device name>/ (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh              # on a machine with one CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run    # on any machine: a tiny model on the CPU, the same code paths
#   bash benchmarks/gpu_check.sh --out DIR    # another output folder
#
# PYTHON picks the interpreter (default: the repository's .venv, else python3); FGVC_GPU_CHECK_LIMIT_S the
# hard limit in seconds (default 480: 8 minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # random weights: nothing to download
if [[ " $* " != *" --dry-run "* ]] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# SIGINT at the limit lets the check write what it has; KILL 20 s later if it does not stop
exec timeout --signal=INT --kill-after=20 "${FGVC_GPU_CHECK_LIMIT_S:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
