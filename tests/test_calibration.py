"""Calibration: ECE / NLL / Brier as defined (by hand and against scikit-learn), one temperature fitted on the
validation split and kept in the checkpoint, top-1 never moved by it, ``fgvc eval --calibrate`` (never on
test) and the reliability diagram."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from sklearn.metrics import brier_score_loss, log_loss

import fgvc
from fgvc.cli import main
from fgvc.engine.calibration import calibration_metrics, fit_temperature, reliability
from fgvc.io import read_safetensors, write_safetensors

# Four images, three classes: top-1 confidences 0.9 (right), 0.92 (wrong), 0.7 (right), 0.55 (wrong).
PROBS = np.array([[0.90, 0.05, 0.05], [0.92, 0.05, 0.03], [0.20, 0.70, 0.10], [0.25, 0.20, 0.55]])
TARGETS = np.array([0, 1, 1, 0])
CLASSES = ["a", "b", "c"]


def test_ece_of_a_hand_computed_case():
    """15 bins: 0.9 and 0.92 share (13/15, 14/15] (accuracy 1/2, mean confidence 0.91), 0.7 and 0.55 alone:
    ECE = 2/4 * |0.5 - 0.91| + 1/4 * |1 - 0.7| + 1/4 * |0 - 0.55| = 0.4175. One bin: |0.5 - 0.7675|."""
    assert calibration_metrics(PROBS, TARGETS)["ece"] == pytest.approx(0.4175)
    assert calibration_metrics(PROBS, TARGETS, bins=1)["ece"] == pytest.approx(0.2675)
    bins = reliability(PROBS.max(1), PROBS.argmax(1) == TARGETS)
    assert bins.count.tolist() == [0] * 8 + [1, 0, 1, 0, 0, 2, 0]
    assert bins.accuracy[13] == 0.5 and bins.confidence[13] == pytest.approx(0.91)


def test_a_confidence_on_a_bin_edge_goes_in_the_lower_bin_and_zero_in_the_first():
    """Bins are (b / bins, (b + 1) / bins]: a confidence of exactly 0.5 with 2 bins is in the first."""
    assert reliability(np.array([0.5, 0.0, 1.0]), np.array([True, False, True]), bins=2).count.tolist() == [
        2,
        1,
    ]


def test_nll_equals_sklearn_log_loss_and_brier_the_sum_over_classes_of_brier_score_loss():
    rng = np.random.default_rng(0)
    cases = [(PROBS, TARGETS)]
    probs = rng.dirichlet(np.ones(5), size=200)
    cases.append((probs, rng.integers(0, 5, 200)))
    for p, t in cases:
        metrics = calibration_metrics(p, t)
        assert metrics["nll"] == pytest.approx(log_loss(t, p, labels=range(p.shape[1])), rel=1e-9)
        per_class = sum(brier_score_loss(t == k, p[:, k]) for k in range(p.shape[1]))
        assert metrics["brier"] == pytest.approx(per_class, rel=1e-9)


def test_fit_temperature_recovers_the_temperature_the_logits_were_scaled_by():
    """Labels drawn from softmax(true_logits); the model's logits are true_logits * 2.5: T = 2.5 undoes it."""
    true_logits = 3 * torch.randn(20000, 10)
    targets = torch.multinomial(true_logits.softmax(1), 1)[:, 0]
    fitted = fit_temperature(true_logits * 2.5, targets)
    assert fitted == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(true_logits * 2.5, targets) == fitted  # deterministic
    assert fit_temperature(true_logits * 0.5, targets) == pytest.approx(0.5, rel=0.05)


def test_fit_temperature_stays_bounded_when_validation_is_all_right_with_margin():
    logits = torch.eye(3).repeat(10, 1) * 5  # every image right: the NLL keeps falling towards T = 0
    assert 0.01 <= fit_temperature(logits, torch.arange(3).repeat(10)) < 1


def tiny_model():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the new head starts at zero: give it some weights
    return model


def test_calibrate_sets_the_temperature_evaluate_reports_both_and_top1_never_moves():
    from fgvc.data import synthetic_splits

    data = synthetic_splits(num_classes=3, image_size=32, detail_fraction=0.06, train=1, val=24, test=24)
    model = tiny_model()
    raw = fgvc.evaluate(model, data["test"])
    assert raw.ece is not None and raw.nll is not None and raw.brier is not None
    assert (
        raw.temperature is None and "ece_calibrated" not in raw.summary()
    )  # an uncalibrated model: as before
    t = fgvc.calibrate(model, data["val"], batch_size=8)
    assert model.temperature == t and t != 1.0
    calibrated = fgvc.evaluate(model, data["test"])
    assert calibrated.temperature == t
    assert {"ece_calibrated", "nll_calibrated", "brier_calibrated", "temperature"} <= set(
        calibrated.summary()
    )
    assert calibrated.nll == pytest.approx(raw.nll) and calibrated.nll_calibrated != pytest.approx(raw.nll)
    assert calibrated.top1 == raw.top1 and calibrated.loss == raw.loss
    assert np.array_equal(calibrated.predictions, raw.predictions)
    assert np.array_equal(calibrated.confusion_matrix, raw.confusion_matrix)
    forced = fgvc.evaluate(tiny_model(), data["test"], calibrate=True)  # temperature 1: both sets, equal
    assert forced.temperature == 1.0 and forced.nll_calibrated == pytest.approx(forced.nll)


def test_the_temperature_survives_save_model_and_load_model_and_old_checkpoints_load_with_one(tmp_path):
    model = tiny_model()
    old = fgvc.save_model(model, tmp_path / "old.safetensors")
    assert "temperature" not in fgvc.read_metadata(old)
    assert fgvc.load_model(old).temperature == 1.0
    model.temperature = 1.7
    path = fgvc.save_model(model, tmp_path / "calibrated.safetensors")
    assert fgvc.read_metadata(path)["temperature"] == 1.7 and fgvc.load_model(path).temperature == 1.7
    with pytest.raises(ValueError, match="temperature"):
        fgvc.save_model(model, tmp_path / "x.safetensors", extra={"temperature": 3.0})
    tensors, meta = read_safetensors(path)
    meta = {k: v for k, v in meta.items() if k == "fgvc"}
    meta["fgvc"] = json.dumps(dict(json.loads(meta["fgvc"]), temperature=-1.0))
    write_safetensors(tensors, tmp_path / "bad.safetensors", meta)
    with pytest.raises(ValueError, match="'temperature' must be a finite number > 0"):
        fgvc.load_model(tmp_path / "bad.safetensors")


def test_predict_reports_calibrated_probabilities_in_the_same_order():
    model = tiny_model()
    images = [
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (32, 32, 3), dtype=np.uint8))
        for k in range(3)
    ]
    raw = fgvc.predict(model, images, topk=3)
    model.temperature = 4.0
    calibrated = fgvc.predict(model, images, topk=3)
    from fgvc.data import build_transforms

    batch = torch.stack([build_transforms(model, train=False, img_size=(32, 32))(im) for im in images])
    with torch.no_grad():
        expected = (model(batch).logits.float() / 4.0).softmax(1)
    for r, c, p in zip(raw, calibrated, expected, strict=True):
        assert [label for label, _, _ in r.top] == [label for label, _, _ in c.top]
        assert [q for _, _, q in c.top] == pytest.approx(p.sort(descending=True).values.tolist(), abs=1e-6)
        assert r.temperature is None and c.temperature == 4.0 and "calibrated" in str(c)
    assert (
        fgvc.predict(model, images, topk=3, temperature=1.0)[0].top == raw[0].top
    )  # the raw ones on request


def test_the_reliability_diagram_has_one_line_per_method_and_a_strip_of_counts():
    from fgvc.data import synthetic_splits
    from fgvc.viz import plot_reliability

    test = synthetic_splits(num_classes=3, image_size=32, detail_fraction=0.06, train=1, val=1, test=16)[
        "test"
    ]
    results = {"vit": fgvc.evaluate(tiny_model(), test), "other": fgvc.evaluate(tiny_model(), test)}
    fig = plot_reliability(results, pyplot=False)
    main_ax, strip = fig.axes
    labels = [line.get_label() for line in main_ax.get_lines() if not line.get_label().startswith("_")]
    assert len(labels) == 2 and labels[0].startswith("vit (ECE ") and labels[1].startswith("other (ECE ")
    assert len(strip.patches) == 2 * 15 and sum(p.get_height() for p in strip.patches) == 2 * 16


@pytest.fixture
def run(tmp_path):
    """A checkpoint and an image folder with train / val / test splits of its three classes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for split in ("train", "val", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for k in range(3):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{k}.jpg")
    return fgvc.save_model(tiny_model(), tmp_path / "ckpt" / "best.safetensors", class_names=CLASSES), root


def test_eval_calibrate_test_is_refused_in_one_line(run, capsys):
    checkpoint, root = run
    for split in ("test", "val"):  # the test split, and the split evaluated (here --split val)
        code = main(
            [
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(root),
                "--dataset",
                "folder",
                "--split",
                "val" if split == "val" else "test",
                "--calibrate",
                split,
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and "never on the test split" in err, err
    code = main(
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(root),
            "--dataset",
            "folder",
            "--save-calibrated",
            str(checkpoint),
            "--no-progress",
        ]
    )
    assert code == 1 and "--save-calibrated needs --calibrate" in capsys.readouterr().err


def test_eval_calibrate_fits_on_val_only_reports_both_and_saves_a_new_checkpoint(
    run, tmp_path, monkeypatch, capsys
):
    import fgvc.engine.evaluate as evaluate_module

    checkpoint, root = run
    before = checkpoint.read_bytes()
    read = []
    original = evaluate_module._class_scores

    def spy(model, data, **options):
        read.extend(str(path) for path, _ in data.samples)
        return original(model, data, **options)

    monkeypatch.setattr(evaluate_module, "_class_scores", spy)
    out, saved = tmp_path / "report", tmp_path / "calibrated" / "best.safetensors"
    saved.parent.mkdir()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(root),
                "--dataset",
                "folder",
                "--calibrate",
                "val",
                "--save-calibrated",
                str(saved),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(read) == 9 and all("/val/" in path for path in read)  # the temperature saw val, nothing else
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibrated_on"] == "val" and metrics["num_samples"] == 9
    assert {"ece", "nll", "brier", "ece_calibrated", "nll_calibrated", "brier_calibrated"} <= set(metrics)
    assert (out / "reliability.png").stat().st_size > 1000
    assert checkpoint.read_bytes() == before  # the input checkpoint is never rewritten
    assert fgvc.load_model(saved).temperature == pytest.approx(metrics["temperature"])
    assert "temperature" in capsys.readouterr().out
    code = main(
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(root),
            "--dataset",
            "folder",
            "--calibrate",
            "val",
            "--save-calibrated",
            str(checkpoint),
            "--no-progress",
        ]
    )
    assert code == 1 and "is the checkpoint read" in capsys.readouterr().err


def test_eval_calibrate_val_of_a_run_is_its_validation_split_carved_from_train(tmp_path, monkeypatch, capsys):
    """With the config.yaml ``fgvc train`` writes, ``--calibrate val`` is the run's validation split: training
    images (seed and fraction of the run), never a test image."""
    import yaml
    from test_datasets import make_cub

    import fgvc.engine.evaluate as evaluate_module
    from fgvc.data import build_dataset

    root = make_cub(tmp_path / "CUB_200_2011")
    recipe = dict(
        name="tiny",
        expected_top1=None,
        source="a test",
        seeds=[0],
        model=dict(method="vit", img_size=32, **TINY),
        data=dict(dataset="cub", root=str(root), val_fraction=0.5, resize=36),
        train=dict(epochs=1, batch_size=2, lr=1e-3),
    )
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "tiny.yaml"),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
        == 0
    )
    read = []
    original = evaluate_module._class_scores

    def spy(model, data, **options):
        read.extend(data.dataset.samples[i][0] for i in data.indices)
        return original(model, data, **options)

    monkeypatch.setattr(evaluate_module, "_class_scores", spy)
    checkpoint = tmp_path / "run" / "seed0" / "best.safetensors"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(root),
                "--calibrate",
                "val",
                "--no-progress",
            ]
        )
        == 0
    )
    train_files = {path for path, _ in build_dataset("cub", root, "train").samples}
    test_files = {path for path, _ in build_dataset("cub", root, "test").samples}
    assert read and set(read) <= train_files and not set(read) & test_files
    assert "ece_calibrated" in capsys.readouterr().out
