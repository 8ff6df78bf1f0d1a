"""Checkpoints and resume: a run killed with SIGKILL mid-epoch and resumed equals the uninterrupted run, bit for bit.

The run to kill and the resumed run are subprocesses; the uninterrupted reference runs in the test process
meanwhile (one thread everywhere). The run to kill is paused deterministically by its own dataset: when
asked for the first image of a chosen batch (all earlier steps and their checkpoints are done by then,
``num_workers=0``) it creates a marker file and sleeps; the test waits for the marker and sends SIGKILL. A
fresh process then resumes from ``train_state.safetensors``.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file
from torch.utils.data import Dataset

import fgvc
from fgvc.storage.checkpoint import load_train_state

RUNNER = r'''
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from torch.utils.data import Dataset
import fgvc


class Blobs(Dataset):
    """Class c: a bright square at a class-specific place; random flips (augmentation randomness)."""

    def __init__(self, n, seed, pause_at=None, marker=None):
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % 4 for i in range(n)]
        self.images = torch.randn(n, 3, 32, 32, generator=g) * 0.3
        for i, c in enumerate(self.targets):
            r, col = divmod(c, 2)
            self.images[i, :, r * 16 : r * 16 + 16, col * 16 : col * 16 + 16] += 1.5
        self.classes = ["a", "b", "c", "d"]
        self.pause_at, self.marker, self.calls = pause_at, marker, 0

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.pause_at:
            open(self.marker, "w").close()
            time.sleep(600)  # killed here
        image = self.images[i]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.targets[i]


def run(cfg):
    torch.manual_seed(0)
    model = fgvc.create_model(cfg["method"], num_classes=4, img_size=32, **cfg["model"])
    history = fgvc.fit(
        model, Blobs(48, 0, cfg.get("pause_at"), cfg["marker"]), Blobs(16, 1), epochs=3, batch_size=8, lr=2e-3,
        seed=3, out_dir=cfg["out"], progress=False, log_every_steps=1, resume=cfg["resume"], **cfg["fit"]
    )
    with open(cfg["result"], "w") as f:
        json.dump(dict(epochs=history.epochs, best_epoch=history.best_epoch), f)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
'''

CASES = {
    # DCAL: PWCA pairs images by a random derangement each step (torch RNG); killed 2 batches after the
    # step-8 checkpoint (epoch 2, 2 of 6 batches done)
    "dcal": dict(method="dcal", model=TINY, fit=dict(save_every_steps=4), kill_after_batches=10),
    # ViT with drop-path and gradient accumulation 2 (3 steps per epoch): killed inside an accumulation
    # group; the step-4 checkpoint is 2 micro-batches into epoch 2
    "vit-droppath-accumulate": dict(
        method="vit", model=dict(TINY, drop_path_rate=0.2), fit=dict(save_every_steps=2, accumulate_steps=2),
        kill_after_batches=9,
    ),
}


def _config(tmp_path, name, case, out, resume, pause_at=None):
    return dict(
        method=case["method"], model=case["model"], fit=case["fit"], out=str(out), resume=resume,
        pause_at=pause_at, marker=str(tmp_path / f"{name}.paused"), result=str(tmp_path / f"{name}.json"),
    )


def _launch(tmp_path, name, case, out, resume, pause_at=None):
    cfg = _config(tmp_path, name, case, out, resume, pause_at)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(cfg)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
    out, _ = proc.communicate(timeout=500)  # a guard against a hang, not a speed check
    assert proc.returncode == 0, out


def _log(path):
    drop = {"time", "images_per_s", "seconds"}
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path, name):
    case = CASES[name]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    # item 1 is fit's image-size check; then 8 images per batch
    killed = _launch(tmp_path, "killed", case, run_dir, resume=True, pause_at=1 + case["kill_after_batches"] * 8 + 1)
    runner = {"__name__": "resume_runner"}
    exec(RUNNER, runner)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)
    try:
        runner["run"](_config(tmp_path, "reference", case, ref_dir, resume=False))
    finally:
        torch.set_num_threads(threads)
    marker = tmp_path / "killed.paused"
    deadline = time.monotonic() + 500  # a guard against a hang, not a speed check
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0]
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.05)
    state_before = load_train_state(run_dir / "train_state.safetensors")[1]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.json").exists()
    assert 0 < state_before["batches_done"] < 6, "the kill must leave a mid-epoch checkpoint behind"
    assert state_before["epoch"] == 2
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")], "no temporary files left behind"

    _finish(_launch(tmp_path, "resumed", case, run_dir, resume=True))

    for file in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(ref_dir / file)), load_file(str(run_dir / file))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{file}: {different[:5]} differ"
    _, state_a, _ = load_train_state(ref_dir / "train_state.safetensors")
    _, state_b, _ = load_train_state(run_dir / "train_state.safetensors")
    opt_a, opt_b = state_a["optimizer_state_dict"]["state"], state_b["optimizer_state_dict"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i] if torch.is_tensor(opt_a[i][k]))
    ref, res = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("reference", "resumed"))
    for r in (ref, res):
        for e in r["epochs"]:
            e.pop("seconds")
    assert ref == res  # every epoch metric, exactly (train metrics of the resumed epoch included)
    assert _log(ref_dir / "log.jsonl") == _log(run_dir / "log.jsonl")  # the killed run's extra lines dropped


class Flips(Dataset):
    """Random flips drawn from the global torch RNG, as torchvision transforms do."""

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.targets = [i % 4 for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        image = self.images[i]
        return (image.flip(-1) if torch.rand(()) < 0.5 else image), self.targets[i]


@pytest.mark.slow
def test_augmentation_randomness_does_not_depend_on_workers(tmp_path):
    weights = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        fgvc.fit(model, Flips(), epochs=2, batch_size=8, seed=1, num_workers=workers, progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_refuses_another_model_or_data(tmp_path):
    from test_train_evaluate import Blobs

    torch.manual_seed(0)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, out_dir=tmp_path, progress=False, save_every_steps=2)
    bigger = fgvc.create_model("vit", num_classes=4, img_size=64, **TINY)
    with pytest.raises(ValueError, match="image-size mismatch: .* img_size=\\[32, 32\\]"):
        fgvc.fit(bigger, Blobs(n=32, size=64), epochs=2, out_dir=tmp_path, resume=True, progress=False)
    five = fgvc.create_model("vit", num_classes=5, img_size=32, **TINY)
    with pytest.raises(ValueError, match="class-count mismatch"):
        fgvc.fit(five, Blobs(n=30, num_classes=5, classes=False), epochs=2, out_dir=tmp_path, resume=True,
                 progress=False)
    with pytest.raises(ValueError, match="image-size mismatch: train_data gives 64x64 images"):
        fgvc.fit(model, Blobs(n=32, size=64), epochs=2, progress=False)
    with pytest.raises(FileNotFoundError, match="no training state"):
        fgvc.fit(model, Blobs(n=32), epochs=2, resume=tmp_path / "elsewhere", progress=False)


def test_resume_finished_run_and_extend_it(tmp_path):
    from test_train_evaluate import Blobs

    torch.manual_seed(0)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    h1 = fgvc.fit(model, Blobs(n=32), Blobs(n=16, seed=1), epochs=2, batch_size=8, out_dir=tmp_path, progress=False)
    # resume=True on a finished run: nothing to do, the history comes back
    h2 = fgvc.fit(model, Blobs(n=32), Blobs(n=16, seed=1), epochs=2, batch_size=8, out_dir=tmp_path,
                  resume=True, progress=False)
    assert h2.epochs == h1.epochs and h2.best_epoch == h1.best_epoch
    h3 = fgvc.fit(model, Blobs(n=32), Blobs(n=16, seed=1), epochs=3, batch_size=8, out_dir=tmp_path,
                  resume=True, progress=False)
    assert [e["epoch"] for e in h3.epochs] == [1, 2, 3]
    assert fgvc.read_metadata(tmp_path / "last.safetensors")["epoch"] == 3
    assert fgvc.History.from_jsonl(tmp_path).epochs[-1]["train_loss"] == h3.epochs[-1]["train_loss"]


def test_nan_keeps_the_last_good_checkpoint(tmp_path):
    from test_train_evaluate import Blobs

    class PoisonAfter(Blobs):
        """NaN images from the second epoch on."""

        def __getitem__(self, i):
            image, target = super().__getitem__(i)
            return (image * math.nan if self.epoch_two else image), target

    data = PoisonAfter(n=32)
    data.epoch_two = False
    torch.manual_seed(0)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, data, epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    good = (tmp_path / "train_state.safetensors").read_bytes(), (tmp_path / "last.safetensors").read_bytes()
    data.epoch_two = True
    with pytest.raises(FloatingPointError, match=r"loss is nan at optimizer step 5 \(epoch 2, lr .*last checkpoint \(step 4\) is kept"):
        fgvc.fit(model, data, epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "train_state.safetensors").read_bytes() == good[0]
    assert (tmp_path / "last.safetensors").read_bytes() == good[1]


def test_oom_message_suggests_accumulation(monkeypatch):
    from test_train_evaluate import Blobs

    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "forward", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"batch_size=16, accumulate_steps=2\)"):
        fgvc.fit(model, Blobs(n=64), epochs=1, batch_size=32, progress=False)


def test_log_jsonl_and_plot(tmp_path):
    from test_train_evaluate import Blobs

    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    history = fgvc.fit(model, Blobs(n=32), Blobs(n=16, seed=1), epochs=2, batch_size=8, out_dir=tmp_path,
                       log_every_steps=2, progress=False, tensorboard=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in lines] == [("step", 2), ("step", 4), ("epoch", 4)] * 1 + [
        ("step", 6), ("step", 8), ("epoch", 8)]
    assert set(lines[0]) >= {"epoch", "loss", "lr", "images_per_s"}
    assert fgvc.History.from_jsonl(tmp_path / "log.jsonl").epochs == history.epochs
    fig = fgvc.plot_log(tmp_path)
    assert len(fig.axes) == 3


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from test_train_evaluate import Blobs

    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".safetensors"}

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fgvc.io.save_file", full)
    with pytest.raises(OSError, match="No space left"):
        fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False,
                 save_every_steps=2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".safetensors"} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    history = fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False)
    assert [e["epoch"] for e in history.epochs] == [1, 2]


def test_backbone_lr_scale_trains_the_backbone_slower_than_the_new_layers(tmp_path):
    """``backbone_lr_scale``: the pretrained backbone at lr x scale, the method's new layers at lr."""
    from test_train_evaluate import Blobs

    def moved(scale: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, lr=1e-2, warmup_steps=0, min_lr=1e-2,
                           backbone_lr_scale=scale, out_dir=tmp_path / str(scale), progress=False)
        assert history.epochs[-1]["lr"] == pytest.approx(1e-2)  # the log keeps the schedule's rate
        after = model.state_dict()
        change = {k: (after[k] - before[k]).abs().max().item() for k in before}
        return change["backbone.vit.blocks.0.attn.qkv.weight"], change["head.weight"]

    backbone_full, head_full = moved(1.0)
    backbone_slow, head_slow = moved(1e-3)
    assert backbone_slow < backbone_full / 100  # AdamW steps scale with the rate
    assert head_slow > head_full / 10  # the head still learns at the full rate
    with pytest.raises(ValueError, match="backbone_lr_scale=0.5 \\(saved: 0.001\\)"):
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, lr=1e-2, warmup_steps=0, min_lr=1e-2,
                 backbone_lr_scale=0.5, out_dir=tmp_path / "0.001", resume=True, progress=False)
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        fgvc.TrainConfig(backbone_lr_scale=0)


@pytest.mark.parametrize("scale", [1.0, 0.1, 1e-3])
def test_backbone_lr_scale_sets_the_backbones_rate_to_lr_times_scale_exactly_once(scale):
    """AdamW's first step moves every weight with a gradient by its rate (m / sqrt(v) = +-1 after bias
    correction, no weight decay): one step shows the rate each group really ran at. The backbone runs at
    lr x scale, not lr x scale^2 (timm's scheduler multiplies ``lr_scale`` into the base rate it reads)."""
    from test_train_evaluate import Blobs

    torch.manual_seed(0)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    torch.nn.init.normal_(model.head.weight)  # the head starts at zero: no gradient would reach the backbone
    before = {k: v.clone() for k, v in model.named_parameters()}
    fgvc.fit(model, Blobs(n=8), epochs=1, batch_size=8, lr=1e-2, min_lr=1e-2, warmup_steps=0, weight_decay=0.0,
             backbone_lr_scale=scale, progress=False)
    step = {k: (v.detach() - before[k]).abs().max().item() for k, v in model.named_parameters()}
    assert step["backbone.vit.blocks.0.attn.qkv.weight"] == pytest.approx(1e-2 * scale, rel=1e-3)
    assert step["head.weight"] == pytest.approx(1e-2, rel=1e-3)


def test_layers_a_method_reinitialises_train_at_the_full_rate():
    """TransFG's part block starts at random (official): it is not a pretrained parameter."""
    official = fgvc.create_model("transfg", num_classes=4, img_size=32, **TINY)
    part = {id(p) for p in official.part_block.parameters()}
    pretrained = {id(p) for p in official.pretrained_parameters()}
    assert part and not part & pretrained and pretrained < {id(p) for p in official.backbone.parameters()}
    kept = fgvc.create_model("transfg", num_classes=4, img_size=32, part_block_init="pretrained", **TINY)
    assert {id(p) for p in kept.pretrained_parameters()} == {id(p) for p in kept.backbone.parameters()}
    glsim = fgvc.create_model("glsim", num_classes=4, img_size=32, top_k=2, **TINY)
    assert {id(p) for p in glsim.pretrained_parameters()} == {id(p) for p in glsim.backbone.parameters()}
