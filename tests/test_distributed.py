"""torchrun with 2 gloo processes on the CPU: exact sharded evaluation, DDP training, rank-0-only files, resume.

One ``torchrun --nproc_per_node=2`` launch runs ``WORKER`` (below) and writes what each rank saw to JSON /
safetensors files outside the run directory; the test compares them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

import fgvc
import fgvc.data
from fgvc.engine.distributed import unwrap_model

WORKER = r'''
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file
import fgvc
import fgvc.storage.checkpoint
import fgvc.data
from fgvc.engine.distributed import get_rank, get_world_size, init_distributed

cfg = json.loads(sys.argv[1])
device = init_distributed("cpu")
rank = get_rank()
assert get_world_size() == 2 and torch.distributed.get_backend() == "gloo"
writes = []
real_save = fgvc.storage.checkpoint.write_safetensors
def audited(tensors, path, metadata):
    writes.append(str(path))
    return real_save(tensors, path, metadata)
fgvc.storage.checkpoint.write_safetensors = audited
tiny = dict(backbone="test_vit", backbone_kwargs=dict(depth=2))

# 1. exact evaluation: 13 test images, whole-batch shards (also one empty shard), gathered in order
data = fgvc.data.synthetic_splits(num_classes=4, image_size=48, train=24, val=12, test=13, seed=0)
torch.manual_seed(0)
model = fgvc.create_model("glsim", num_classes=4, img_size=48, top_k=2, **tiny)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2)
def as_json(r):
    return dict(top1=r.top1, top5=r.top5, loss=r.loss, num_samples=r.num_samples, mean_iou=r.mean_iou,
                pointing_game=r.pointing_game, predictions=r.predictions.tolist(), targets=r.targets.tolist(),
                confusion=r.confusion_matrix.tolist(), per_class=[None if x != x else x for x in r.per_class_accuracy])
results = {}
for bs in (4, 5, 16):
    results[f"dist{bs}"] = as_json(fgvc.evaluate(model, data["test"], batch_size=bs))
    results[f"single{bs}"] = as_json(fgvc.evaluate(model, data["test"], batch_size=bs, distributed=False))
with open(f"{cfg['tmp']}/eval{rank}.json", "w") as f:
    json.dump(results, f)

# 2. DDP training (DCAL: PWCA pairing inside each rank's batch) with gradient accumulation (no_sync), checkpoints
#    and logs from rank 0 only
torch.manual_seed(0)
model = fgvc.create_model("dcal", num_classes=4, img_size=48, **tiny)
h = fgvc.fit(model, data["train"], data["val"], epochs=2, batch_size=4, lr=1e-3, out_dir=cfg["out"],
             log_every_steps=1, save_every_steps=2, accumulate_steps=2, progress=False)
# 3. resume under DDP (one more epoch)
h = fgvc.fit(model, data["train"], data["val"], epochs=3, batch_size=4, lr=1e-3, out_dir=cfg["out"],
             log_every_steps=1, save_every_steps=2, accumulate_steps=2, progress=False, resume=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{cfg['tmp']}/weights{rank}.safetensors")
with open(f"{cfg['tmp']}/run{rank}.json", "w") as f:
    json.dump(dict(history=h.epochs, writes=writes), f)
torch.distributed.destroy_process_group()
'''


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = dict(tmp=str(tmp), out=str(tmp / "run"))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           json.dumps(cfg)]
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return tmp


@pytest.mark.slow
def test_distributed_evaluation_is_exact(torchrun):
    ranks = [json.loads((torchrun / f"eval{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank returns the full result
    for bs in (4, 5, 16):
        dist, single = ranks[0][f"dist{bs}"], ranks[0][f"single{bs}"]
        assert dist["num_samples"] == 13  # no padded duplicates
        assert dist == single  # bitwise: same batches, gathered in order, loss summed in batch order
    # and the same as this (non-distributed) process computes, up to float summation in the loss
    data = fgvc.data.synthetic_splits(num_classes=4, image_size=48, train=24, val=12, test=13, seed=0)
    torch.manual_seed(0)
    model = fgvc.create_model("glsim", num_classes=4, img_size=48, top_k=2, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    here = fgvc.evaluate(model, data["test"], batch_size=4)
    dist = ranks[0]["dist4"]
    assert here.predictions.tolist() == dist["predictions"] and here.targets.tolist() == dist["targets"]
    assert here.top1 == dist["top1"] and here.top5 == dist["top5"]
    np.testing.assert_allclose(here.loss, dist["loss"], rtol=1e-5)
    assert here.pointing_game == dist["pointing_game"]


@pytest.mark.slow
def test_ddp_training_writes_from_rank_zero_only_and_keeps_ranks_in_sync(torchrun):
    runs = [json.loads((torchrun / f"run{r}.json").read_text()) for r in (0, 1)]
    assert runs[1]["writes"] == []
    written = {os.path.basename(p) for p in runs[0]["writes"]}
    assert written == {"last.safetensors", "best.safetensors", "train_state.safetensors"}
    assert sorted(p.name for p in (torchrun / "run").iterdir()) == [
        "best.safetensors", "last.safetensors", "log.jsonl", "train_state.safetensors"]
    # DDP keeps the replicas equal; metrics are reduced over ranks, so both report the same history
    a, b = load_file(str(torchrun / "weights0.safetensors")), load_file(str(torchrun / "weights1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert drop(runs[0]["history"]) == drop(runs[1]["history"])
    assert [e["epoch"] for e in runs[0]["history"]] == [1, 2, 3]
    # 24 images / 2 ranks / batch 4 = 3 micro-batches, 2 optimizer steps (2 + 1 accumulated) per epoch;
    # one log line per step, not one per rank
    lines = [json.loads(line) for line in (torchrun / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "step"] == list(range(1, 7))
    assert [r["epoch"] for r in lines if r["kind"] == "epoch"] == [1, 2, 3]
    state = fgvc.storage.checkpoint.load_train_state(torchrun / "run" / "train_state.safetensors")[1]
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 6


def test_unwrap_model_sees_through_ddp_and_compile_wrappers():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)

    class Compiled(torch.nn.Module):  # what torch.compile returns: the module as ``_orig_mod``
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    assert unwrap_model(Compiled(model)) is model
    assert unwrap_model(model) is model


@pytest.mark.parametrize("method", fgvc.list_models())
def test_every_method_uses_all_parameters_in_training(method):
    """DDP runs with find_unused_parameters=False: a parameter without gradient would stop it at step 2."""
    options = dict(top_k=2) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=4, img_size=32, **options, **TINY).train()
    out = model(torch.randn(4, 3, 32, 32))
    model.loss(out, torch.tensor([0, 1, 2, 3])).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
