"""``fgvc pretrain`` trains through ``fit``: a run interrupted mid-run and resumed (``--resume``) ends with the
weights of an uninterrupted run, bit for bit, and leaves fit's files beside the weights and the model card."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import fgvc.studies.pretrain as pretraining
from fgvc.storage.checkpoint import load_train_state
from fgvc.studies.pretrain import PretrainSettings, pretrain, validation_period

NAME = "fgvc_synth_vit_tiny"
TINY = replace(PretrainSettings(), detail_sides=(7, 31), images_per_side=6, val_per_side=2, steps=6, batch_size=4,
               warmup_steps=2, threads=1)
RUN = dict(progress=False, eval_every=3, save_every=1)  # two validation periods of three steps


class Killed(RuntimeError):
    """Stands for the kill: raised by the training data in the middle of a step."""


def kill_at_item(monkeypatch, calls):
    """The training data raises ``Killed`` when asked for its ``calls``-th item."""
    getitem, count = pretraining._TrainViews.__getitem__, [0]

    def item(self, k):
        count[0] += 1
        if count[0] == calls:
            raise Killed
        return getitem(self, k)

    monkeypatch.setattr(pretraining._TrainViews, "__getitem__", item)


def test_a_killed_pretraining_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    whole = pretrain(tmp_path / "whole", TINY, **RUN)
    with monkeypatch.context() as m:
        kill_at_item(m, 2 + 4 * 4 + 2)  # two items read by fit's data checks, four steps, into the fifth
        with pytest.raises(Killed):
            pretrain(tmp_path / "killed", TINY, **RUN)
    saved = load_train_state(tmp_path / "killed" / "train_state.safetensors")[1]
    assert (saved["step"], saved["batches_done"]) == (4, 1) and not (tmp_path / "killed" / f"{NAME}.safetensors").exists()
    with pytest.raises(FileExistsError, match="resume=True"):  # a new run there is refused
        pretrain(tmp_path / "killed", TINY, **RUN)
    resumed = pretrain(tmp_path / "killed", TINY, resume=True, **RUN)
    for name in (f"{NAME}.safetensors", "last.safetensors"):
        a, b = (load_file(str(tmp_path / run / name)) for run in ("whole", "killed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed == whole
    files = {p.name for p in (tmp_path / "killed").iterdir()}
    assert {f"{NAME}.safetensors", f"{NAME}.md", "log.jsonl", "train_state.safetensors", "last.safetensors",
            "best.safetensors"} <= files


def test_the_log_holds_both_loss_terms_every_twenty_steps_and_the_validation_metrics(tmp_path):
    pretrain(tmp_path, replace(TINY, steps=20, warmup_steps=5), progress=False, eval_every=20)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    step = next(r for r in lines if r["kind"] == "step")
    epoch = next(r for r in lines if r["kind"] == "epoch")
    assert step["step"] == 20 and {"loss", "loss_cls", "loss_loc", "lr"} <= set(step)
    assert step["loss"] == pytest.approx(step["loss_cls"] + TINY.loc_weight * step["loss_loc"])
    assert {"val_top1", "top1_7px", "pointing_31px", "rollout_pointing_7px", "glsim_box_iou_31px"} <= set(epoch)


def test_validation_runs_every_eval_every_steps_or_the_largest_divisor_of_steps_below():
    assert validation_period(2000, 400) == 400 and validation_period(1000, 400) == 250
    assert validation_period(3, 400) == 3
    with pytest.raises(ValueError, match="steps=2003 has no divisor between 200 and eval_every=400"):
        validation_period(2003, 400)


def test_fgvc_pretrain_resume_continues_the_run_in_out(tmp_path, monkeypatch):
    from fgvc.cli import build_parser

    seen = {}
    monkeypatch.setattr(pretraining, "pretrain", lambda out, s, **kw: seen.update(kw) or {})
    args = build_parser().parse_args(["pretrain", "--out", str(tmp_path), "--resume", "--no-progress"])
    assert args.func(args) == 0 and seen["resume"] is True


KILLABLE = r'''
import sys, time
from dataclasses import replace

import fgvc.studies.pretrain as P

out, pause_at, marker, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
settings = replace(P.PretrainSettings(), detail_sides=(7, 31), images_per_side=6, val_per_side=2, steps=6,
                   batch_size=4, warmup_steps=2, threads=1)
getitem, calls = P._TrainViews.__getitem__, [0]


def item(self, k):  # counts the training items read; sleeps at the pause_at-th: the test kills the process there
    calls[0] += 1
    if calls[0] == pause_at:
        open(marker, "w").close()
        time.sleep(600)
    return getitem(self, k)


P._TrainViews.__getitem__ = item
P.pretrain(out, settings, progress=False, eval_every=3, save_every=1, resume=resume)
print("items read:", calls[0])
'''


def test_a_pretraining_killed_with_sigkill_resumes_in_a_new_process_to_the_uninterrupted_weights(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    assert (TINY.detail_sides, TINY.steps, TINY.batch_size) == ((7, 31), 6, 4)  # the runner's settings
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script, marker = tmp_path / "run.py", tmp_path / "paused"
    script.write_text(KILLABLE)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(2 + 4 * 4 + 2), str(marker), "0"], env=env)
    whole = pretrain(tmp_path / "whole", TINY, **RUN)  # meanwhile, in this process
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the run to kill never reached its fifth step"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_train_state(run / "train_state.safetensors")[1]["step"] == 4  # four steps were saved
    done = subprocess.run([sys.executable, str(script), str(run), "0", str(marker), "1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "items read: 10\n" in done.stdout  # fit's two checks, then the last two steps only: resumed at step 4
    a, b = (load_file(str(folder / f"{NAME}.safetensors")) for folder in (tmp_path / "whole", run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole  # the uninterrupted run's metrics
