"""fit() and evaluate(): the one loop, its history, its guards, and the metrics."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY
from torch.utils.data import Dataset

import fgvc


class Blobs(Dataset):
    """Easy labelled images: class c has a bright square at a class-specific place."""

    def __init__(self, n=96, num_classes=4, size=32, seed=0, classes=True):
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % num_classes for i in range(n)]
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.3
        for i, c in enumerate(self.targets):
            r, col = divmod(c, 2)
            self.images[i, :, r * 16 : r * 16 + 16, col * 16 : col * 16 + 16] += 1.5
        if classes:
            self.classes = [f"c{i}" for i in range(num_classes)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


@pytest.mark.parametrize("method", ["vit", "glsim"])
def test_short_fit_lowers_the_loss_and_records_history(tmp_path, method):
    model = fgvc.create_model(method, num_classes=4, img_size=32, top_k=2, **TINY) if method == "glsim" else \
        fgvc.create_model(method, num_classes=4, img_size=32, **TINY)
    history = fgvc.fit(
        model, Blobs(), Blobs(n=32, seed=1), epochs=4, batch_size=16, lr=3e-3, label_smoothing=0.1,
        out_dir=tmp_path, progress=False,
    )
    assert len(history) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert set(history.epochs[0]) >= {"epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr", "seconds"}
    assert history.best["val_top1"] == max(history["val_top1"])
    best = fgvc.load_model(tmp_path / "best.safetensors")
    assert fgvc.read_metadata(tmp_path / "best.safetensors")["epoch"] == history.best_epoch
    assert best.class_names == ["c0", "c1", "c2", "c3"]
    assert (tmp_path / "last.safetensors").exists()
    fig = history.plot()
    assert len(fig.axes) == 2
    assert all(line.get_marker() == "o" for line in fig.axes[0].lines)  # 4 epochs: every point marked


def test_fit_is_reproducible_with_a_seed():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same initial weights; fit's seed covers shuffling and dropout
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        runs.append(fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, seed=7, progress=False)["train_loss"])
    assert runs[0] == runs[1]


def test_a_train_config_trains_as_the_same_keywords():
    runs = []
    for options in (dict(config=fgvc.TrainConfig(epochs=2, batch_size=8, lr=1e-3)),
                    dict(config=fgvc.TrainConfig(epochs=5, batch_size=8), epochs=2, lr=1e-3),  # keywords win
                    dict(epochs=2, batch_size=8, lr=1e-3)):
        torch.manual_seed(0)
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        runs.append(fgvc.fit(model, Blobs(n=32), progress=False, **options)["train_loss"])
    assert runs[0] == runs[1] == runs[2]


def test_train_config_is_the_one_list_of_options():
    assert fgvc.TrainConfig().batch_size == 32 and fgvc.TrainConfig().grad_clip == 1.0  # fit's defaults
    with pytest.raises(TypeError, match=r"fit\(\) got an unexpected keyword argument 'epoch' \(did you mean 'epochs'"):
        fgvc.fit(fgvc.create_model("vit", num_classes=4, img_size=32, **TINY), Blobs(n=8), epoch=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        fgvc.TrainConfig(batch_size=0)


def test_class_count_mismatch_stops_before_training():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    with pytest.raises(ValueError, match="train_data has 4 classes but the model was built with num_classes=3"):
        fgvc.fit(model, Blobs(), epochs=1, progress=False)
    # without a .classes attribute the first batch with a too-large label is caught and named
    with pytest.raises(ValueError, match="label 3 found in the data but the model has 3 classes"):
        fgvc.fit(model, Blobs(classes=False), epochs=1, progress=False)


def test_nan_loss_stops_with_step_and_lr():
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    with torch.no_grad():
        model.head.weight.fill_(math.nan)
    with pytest.raises(FloatingPointError, match=r"loss is nan at optimizer step 1 \(epoch 1, lr"):
        fgvc.fit(model, Blobs(), epochs=1, progress=False)


def test_evaluate_metrics_by_hand():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    data = Blobs(n=6, num_classes=3, classes=False)  # labels 0 1 2 0 1 2
    # predictions: 0 1 1 0 2 2 -> correct on samples 0, 1, 3, 5
    fixed = torch.tensor([[5, 1, 0], [0, 5, 1], [0, 5, 1], [5, 0, 1], [1, 0, 5], [1, 0, 5]], dtype=torch.float32)
    calls = iter(range(100))
    model.head.forward = lambda feats: fixed[[next(calls) for _ in range(len(feats))]]
    result = fgvc.evaluate(model, data, batch_size=4)
    assert result.num_samples == 6
    assert result.top1 == pytest.approx(100 * 4 / 6)
    assert result.top5 == 100.0  # 3 classes: top-5 is everything
    assert result.predictions.tolist() == [0, 1, 1, 0, 2, 2]
    assert result.confusion_matrix.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    np.testing.assert_allclose(result.per_class_accuracy, [100, 50, 50])
    assert result.mean_iou is None


def test_evaluate_reports_crop_iou_against_dataset_boxes():
    class WithBoxes(Blobs):
        pass

    data = WithBoxes(n=4, num_classes=2, classes=False)
    data.input_boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)  # the whole input, as fractions
    model = fgvc.create_model("glsim", num_classes=2, img_size=32, top_k=4, inclusive_box=True, **TINY)
    result = fgvc.evaluate(model, data)
    assert result.mean_iou == pytest.approx(1.0)  # all 4 patches selected, inclusive: the whole image
    data.input_boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 4)
    assert fgvc.evaluate(model, data).mean_iou == pytest.approx(0.25)
    # boxes in the original image's frame (``.boxes``) are not taken for input-frame boxes
    data.boxes, data.input_boxes = data.input_boxes, None
    assert fgvc.evaluate(model, data).mean_iou is None


def test_box_iou_pairs():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[5, 0, 15, 10], [20, 20, 30, 30]])
    from fgvc.engine.evaluate import box_iou_pairs

    assert box_iou_pairs(a, b).tolist() == pytest.approx([50 / 150, 0.0])


def test_gradient_accumulation_matches_the_large_batch():
    """4 x 2 accumulated micro-batches step like batches of 8 (same images, same mean gradient; SGD, as
    Adam magnifies float rounding in near-zero gradients)."""
    weights = []
    for batch_size, accumulate in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        torch.nn.init.normal_(model.head.weight, std=0.02)  # a random head (new heads start at zero)
        history = fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=batch_size, accumulate_steps=accumulate,
                           optimizer="sgd", lr=0.05, grad_clip=None, seed=5, progress=False)
        weights.append(model.state_dict())
        assert history["train_loss"][-1] < history["train_loss"][0]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-6)


def test_speed_switches_run_on_the_cpu_and_restore_global_state():
    before = torch.backends.cuda.matmul.allow_tf32
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), epochs=1, batch_size=8, channels_last=True, tf32=not before, amp="bf16",
             progress=False)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="accumulate_steps must be an integer >= 1"):
        fgvc.fit(model, Blobs(n=16), epochs=1, accumulate_steps=0, progress=False)


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    written = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir, purge_step=None):
            written.append(("open", log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), Blobs(n=8, seed=1), epochs=1, batch_size=8, out_dir=tmp_path, log_every_steps=1,
             progress=False)
    assert written[0] == ("open", str(tmp_path / "tensorboard"), None) and written[-1] == ("close",)
    assert ("step/loss", 1) in written and ("step/lr", 2) in written and ("epoch/val_top1", 2) in written
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fgvc.fit(model, Blobs(n=16), epochs=1, batch_size=8, out_dir=tmp_path, tensorboard=True, progress=False,
                 overwrite=True)
    fgvc.fit(model, Blobs(n=16), epochs=1, batch_size=8, out_dir=tmp_path, progress=False, overwrite=True)  # auto: off
