"""What ``fit`` reads from a model besides forward and loss, the same way for every model: ``loss_inputs``
(per-sample targets the loss takes, carried by items ``(image, label, {name: value})``), ``loss_terms``
(logged beside the loss) and ``validation_metrics`` (added to each epoch's record)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from test_train_evaluate import Blobs

import fgvc
from fgvc.methods.vit import ViT


class WithMarks(Blobs):
    """Blobs whose items carry each image's index as a per-sample target named ``marks``."""

    def __getitem__(self, i):
        image, label = super().__getitem__(i)
        return image, label, {"marks": torch.tensor(float(i))}


class TakesMarks(ViT):
    """The plain ViT whose loss records the marks it was given and reports two terms."""

    loss_inputs = ("marks",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[float] = []

    def loss(self, output, targets, *, label_smoothing=0.0, marks=None):
        ce = F.cross_entropy(output.logits, targets, label_smoothing=label_smoothing)
        if marks is None:  # evaluation: no per-sample targets
            return ce
        self.seen += marks.tolist()
        self.loss_terms = dict(ce=ce.detach(), mean_mark=marks.mean())
        return ce

    def validation_metrics(self, data):
        return {"own_metric": float(len(data))}


def tiny():
    torch.manual_seed(0)
    return TakesMarks(num_classes=4, img_size=32, **TINY)


def test_the_loss_gets_the_per_sample_targets_it_names_and_its_terms_are_logged(tmp_path):
    model = tiny()
    history = fgvc.fit(model, WithMarks(n=16), Blobs(n=8, seed=1), epochs=1, batch_size=4, seed=0,
                       out_dir=tmp_path, progress=False, log_every_steps=1)
    assert sorted(model.seen) == list(range(16))  # every sample's own mark, each once
    steps = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    assert len(steps) == 4 and all({"ce", "mean_mark"} <= set(r) for r in steps)
    assert sorted(r["mean_mark"] * 4 for r in steps) == pytest.approx(sorted(
        sum(model.seen[k : k + 4]) for k in range(0, 16, 4)))
    assert history.epochs[-1]["own_metric"] == 8.0 and "val_top1" in history.epochs[-1]


def test_data_without_the_targets_the_loss_takes_is_refused_before_training():
    with pytest.raises(ValueError, match="loss takes marks per sample, which train_data's items do not carry"):
        fgvc.fit(tiny(), Blobs(n=16), epochs=1, batch_size=4, progress=False)
