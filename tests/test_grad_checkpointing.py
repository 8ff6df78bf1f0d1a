"""Activation checkpointing (``fit(grad_checkpointing=True)``, ``model.set_grad_checkpointing``): every block of
every shipped method is recomputed in backward, and the loss, the gradients and the trained weights are bitwise
those without it (CPU, fp32)."""

import pytest
import torch
import yaml
from conftest import TINY
from torch.utils.data import Dataset

import fgvc
from fgvc.cli import main
from fgvc.methods import SHIPPED_METHODS
from fgvc.methods.base import resolve_method
from fgvc.studies.recipe import fit_arguments, load_recipe

SIZE = 48  # a 3 x 3 patch grid of the tiny backbone
OPTIONS = {"glsim": dict(top_k=2), "dcal": dict(glca_ratio=0.3)}


def tiny(name, **extra):
    """A tiny model (a method or a variant) with stochastic depth on (and TransFG's dropout at its default): the
    recomputation must draw the same masks."""
    method, variant = resolve_method(name)
    torch.manual_seed(0)
    model = fgvc.create_model(method, num_classes=3, img_size=SIZE, drop_path_rate=0.1, **TINY,
                              **{**OPTIONS.get(method, {}), **variant}, **extra)
    for m in model.modules():  # heads that start at zero would pass no gradient to the blocks
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.5)
    return model


def batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, SIZE, SIZE, generator=g), torch.tensor([0, 1, 2, 1][:n])


def forward_backward(model, x, y):
    """Loss and every parameter's gradient of one training step, with the calls of every block's MLP counted."""
    calls = {}
    hooks = [m.register_forward_pre_hook(lambda mod, i, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
             for name, m in model.named_modules() if name.endswith("mlp")]
    model.train()
    torch.manual_seed(5)  # drop-path masks and DCAL's PWCA pairs
    loss = model.loss(model(x), y)
    loss.backward()
    for h in hooks:
        h.remove()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, calls


# GLSim's cheaper crop passes go through the encoder otherwise: their own position embedding, the box's tokens
@pytest.mark.parametrize("method", [*SHIPPED_METHODS, "glsim_half_pe", "glsim_tokens"])
def test_checkpointing_gives_bitwise_the_same_loss_and_gradients(method):
    x, y = batch()
    loss_off, grads_off, calls_off = forward_backward(tiny(method), x, y)
    model = tiny(method)
    model.set_grad_checkpointing(True)
    loss_on, grads_on, calls_on = forward_backward(model, x, y)
    assert torch.equal(loss_on, loss_off)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) == len(list(model.parameters()))
    assert [n for n, g in grads_off.items() if not g.any()] == []  # no trivially equal zeros
    different = [n for n in grads_off if not torch.equal(grads_on[n], grads_off[n])]
    assert not different, f"{method}: gradients differ for {different}"
    # every block, the backbone's and the method's own (GLSim's aggregator, DCAL's GLCA, TransFG's part
    # block), ran again in backward: the recomputation
    assert calls_off and calls_on == {name: 2 * n for name, n in calls_off.items()}


@pytest.mark.parametrize("method", SHIPPED_METHODS)
def test_evaluation_never_checkpoints(method):
    model = tiny(method)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing and model.backbone.grad_checkpointing
    assert model.backbone.vit.grad_checkpointing  # timm's own flag is set too
    model.eval()
    mlp = model.backbone.blocks[0].mlp
    calls = []
    mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    x, _ = batch(2)
    model(x).logits.sum().backward()  # e.g. Grad-CAM: gradients in evaluation mode
    forward_only = len(calls)
    assert forward_only >= 1
    model.set_grad_checkpointing(False)
    calls.clear()
    model(x).logits.sum().backward()
    assert len(calls) == forward_only
    assert not model.backbone.vit.grad_checkpointing


class Blobs(Dataset):
    """A few labelled images."""

    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.targets = [i % 3 for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


@pytest.mark.parametrize("method", SHIPPED_METHODS)
def test_fit_with_checkpointing_trains_to_bitwise_the_same_weights(method):
    states = []
    for on in (False, True):
        model = tiny(method)
        fgvc.fit(model, Blobs(), epochs=1, batch_size=4, lr=1e-3, seed=3, progress=False, grad_checkpointing=on)
        assert model.grad_checkpointing is False  # the model's own setting is restored when fit returns
        states.append(model.state_dict())
    off, on = states
    assert not all(torch.equal(off[k], tiny(method).state_dict()[k]) for k in off)  # it trained
    assert [k for k in off if not torch.equal(off[k], on[k])] == []


def test_fit_turns_checkpointing_on_for_the_training_steps_only(monkeypatch):
    model = tiny("glsim")
    seen = []
    real = model.set_grad_checkpointing
    monkeypatch.setattr(model, "set_grad_checkpointing", lambda enable=True: (seen.append(enable), real(enable)))
    training = []
    model.register_forward_pre_hook(lambda m, args: training.append((m.training, m.grad_checkpointing)))
    fgvc.fit(model, Blobs(), Blobs(n=4), epochs=1, batch_size=4, progress=False, grad_checkpointing=True)
    assert seen == [True, False]
    assert (True, True) in training and all(on for train, on in training if train)  # every training forward


def test_the_switch_is_a_recipe_key_and_is_checked():
    recipe = load_recipe("glsim_cub_224", ["train.grad_checkpointing=true"])
    assert fit_arguments(recipe, train_size=100)["grad_checkpointing"] is True
    assert fgvc.TrainConfig().grad_checkpointing is False  # off by default
    with pytest.raises(ValueError, match="grad_checkpointing"):
        fgvc.TrainConfig(grad_checkpointing="yes")


def test_fgvc_train_takes_the_switch_and_refuses_a_bad_value(tmp_path, capsys):
    recipe = dict(
        name="ckpt", seeds=[0], model=dict(method="glsim", img_size=SIZE, top_k=2, **TINY),
        data=dict(dataset="synthetic", options=dict(num_classes=3, train=4, val=2, test=2)),
        train=dict(epochs=1, batch_size=2),
    )
    path = tmp_path / "ckpt.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path), "--set", "train.grad_checkpointing=maybe",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grad_checkpointing" in err
    assert main(["train", "--config", str(path), "--set", "train.grad_checkpointing=true",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    config = yaml.safe_load((tmp_path / "run" / "seed0" / "config.yaml").read_text())
    assert config["train"]["grad_checkpointing"] is True


def test_benchmark_measures_each_model_with_checkpointing_off_and_on():
    from fgvc.studies.benchmark import benchmark

    options = dict(backbone="test_vit", backbone_kwargs=dict(depth=2), img_sizes=[SIZE], num_classes=3, warmup=0,
                   repeats=1, inference=False, selection=False, timm_reference=False, memory=False)
    result = benchmark(["glsim"], grad_checkpointing="both", **options)
    assert [r.method for r in result.rows] == ["vit", "vit+ckpt", "glsim", "glsim+ckpt"]
    for method in ("vit", "glsim"):  # the recomputed forward is counted
        off, on = result.row(method, SIZE), result.row(f"{method}+ckpt", SIZE)
        assert on.train_gmacs > off.train_gmacs and on.gmacs == off.gmacs
    table = result.to_markdown()
    assert "activation checkpointing both" in table
    assert "| glsim | 48 |" in table.split("Activation checkpointing, training step")[1]
    default = benchmark(["glsim"], **options)
    assert [r.method for r in default.rows] == ["vit", "glsim"] and "checkpointing" not in default.to_markdown()
    on = benchmark(["glsim"], grad_checkpointing="on", **options)
    assert [r.method for r in on.rows] == ["vit+ckpt", "glsim+ckpt"] and on.row("vit+ckpt", SIZE).train_ratio == 1
    with pytest.raises(ValueError, match="grad_checkpointing must be one of off, on, both"):
        benchmark(["glsim"], grad_checkpointing="yes", **options)


def test_the_gpu_check_measures_the_training_step_with_checkpointing_off_and_on(tmp_path, monkeypatch):
    import dataclasses
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    plan = dataclasses.replace(gpu_check.DRY, depth=2, sizes=("96",), amps=("fp32",))
    rows = gpu_check.run_checkpointing(plan, "cpu", tmp_path, [])
    assert {r["status"] for r in rows} == {"ok"}
    assert [r["method"] for r in rows] == [m + s for m in gpu_check.CKPT_METHODS for s in ("", "+ckpt")]
    md = (tmp_path / "grad_checkpointing.md").read_text()
    assert "| transfg | 96 |" in md and "memory saved" in md
    assert (tmp_path / "grad_checkpointing.csv").is_file()
