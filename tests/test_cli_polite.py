"""The command line fails politely (one line, the fix, near misses) and does the everyday jobs: list, version,
predict on folders and globs into CSV / JSON, an evaluation report folder, test-time augmentation."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY
from PIL import Image

import fgvc
from fgvc.cli import main
from fgvc.engine.evaluate import tta_forward

CLASSES = ["Parakeet_Auklet", "Sooty_Albatross", "Yellow_Blackbird"]  # sorted, as an image folder reads them


@pytest.fixture
def checkpoint(tmp_path):
    model = fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=2, **TINY)
    return fgvc.save_model(model, tmp_path / "ckpt" / "best.safetensors", class_names=CLASSES)


@pytest.fixture
def folder(tmp_path):
    """An image-folder dataset with the checkpoint's classes: 2 test images per class, different colours."""
    rng = np.random.default_rng(0)
    root = tmp_path / "birds"
    for split in ("train", "test"):
        for name in CLASSES:
            for k in range(2):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{name}_{k}.jpg")
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fgvc: error: "), err
    return err


def test_a_missing_checkpoint_is_one_line_with_the_near_miss_and_debug_shows_the_traceback(checkpoint, capsys):
    typo = checkpoint.with_name("bset.safetensors")
    assert main(["predict", "--checkpoint", str(typo), str(checkpoint)]) == 1
    err = one_error_line(capsys)
    assert "checkpoint not found" in err and f"did you mean '{checkpoint}'" in err and "--debug" in err
    with pytest.raises(FileNotFoundError, match="bset.safetensors"):
        main(["--debug", "predict", "--checkpoint", str(typo), str(checkpoint)])
    with pytest.raises(FileNotFoundError):
        main(["predict", "--checkpoint", str(typo), str(checkpoint), "--debug"])  # after the command too


def test_a_mistyped_model_option_in_set_names_the_near_miss(tmp_path, capsys):
    code = main(["train", "--config", "glsim_cub_224", "--set", "model.topk=4", "--out", str(tmp_path)])
    assert code == 1
    err = one_error_line(capsys)
    assert "unknown model keys ['topk'] for method 'glsim' (did you mean 'top_k'?)" in err and "allowed:" in err


def test_pretrained_weights_offline_say_to_use_a_local_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = dict(
        name="offline", seeds=[0], model=dict(method="vit", backbone="vit_tiny_patch16_224", pretrained=True,
                                                img_size=32, backbone_kwargs=dict(depth=1)),
        data=dict(dataset="synthetic", options=dict(num_classes=3, train=4, val=2, test=2)),
        train=dict(epochs=1, batch_size=2),
    )
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = one_error_line(capsys)
    assert "HF_HUB_OFFLINE=1 is set" in err and "model.checkpoint_path=FILE" in err and "model.pretrained=false" in err


def test_a_mistyped_command_or_recipe_gets_did_you_mean(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2 and "did you mean 'train'" in capsys.readouterr().err
    assert main(["train", "--config", "glsim_cub_225", "--out", str(tmp_path)]) == 1
    assert "did you mean 'glsim_cub_224'" in one_error_line(capsys)


def test_version_and_list(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fgvc {fgvc.__version__}"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for section in ("methods", "recipes", "datasets", "weights"):
        assert f"{section} (" in out
    glsim_line = next(line for line in out.splitlines() if line.strip().startswith("glsim  ("))
    assert all(option in glsim_line for option in ("top_k", "inclusive_box", "crop_at_inference"))  # its options
    assert "patch_stride" not in glsim_line  # the common options are not repeated per method
    assert "glsim_cub_448" in out and "nabirds" in out
    assert main(["list", "recipes", "--filter", "dcal_cub_*"]) == 0
    assert capsys.readouterr().out.split() == ["recipes", "(2):", "dcal_cub_224", "dcal_cub_448"]
    assert main(["list", "backbones", "--filter", "eva02_tiny*"]) == 0
    assert "eva02_tiny_patch14_224" in capsys.readouterr().out


def test_predict_takes_folders_and_globs_and_writes_csv_and_json_with_class_names(checkpoint, folder, tmp_path, capsys):
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    glob = str(folder / "train" / "Sooty*" / "*.jpg")
    code = main(["predict", "--checkpoint", str(checkpoint), str(folder / "test"), glob, "--topk", "2",
                 "--out", str(csv_path)])
    assert code == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 6 + 2  # the folder's 6 images and the glob's 2
    assert set(rows[0]) == {"image", "tta", "class_1", "label_1", "probability_1", "class_2", "label_2", "probability_2"}
    assert all(r["class_1"] in CLASSES and CLASSES[int(r["label_1"])] == r["class_1"] for r in rows)
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in rows)
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder / "test"), "--out", str(json_path),
                 "--tta", "hflip"]) == 0
    saved = json.loads(json_path.read_text())
    assert saved["tta"] == "hflip" and saved["checkpoint"] == str(checkpoint) and len(saved["predictions"]) == 6
    top = saved["predictions"][0]["top"]
    assert [t["class"] for t in top] == [CLASSES[t["label"]] for t in top] and len(top) == 3
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder / "nothing" / "*.jpg")]) == 1
    assert "no files match" in one_error_line(capsys)


def test_predict_writes_the_maps_and_crop_per_image(checkpoint, folder, tmp_path):
    maps = tmp_path / "maps"
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder / "test" / "Parakeet_Auklet"),
                 "--maps", str(maps)]) == 0
    assert sorted(p.name for p in maps.iterdir()) == ["Parakeet_Auklet_0_maps.png", "Parakeet_Auklet_1_maps.png"]


def test_eval_out_dir_writes_metrics_per_class_confusion_and_confused_pairs(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(folder), "--dataset", "folder",
                 "--out", str(out), "--tta", "hflip", "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 6 and metrics["tta"] == "hflip" and metrics["dataset"] == "folder"
    per_class = list(csv.DictReader((out / "per_class_accuracy.csv").open()))
    assert [r["class"] for r in per_class] == CLASSES and sum(int(r["images"]) for r in per_class) == 6
    correct = sum(int(r["correct"]) for r in per_class)
    assert metrics["top1"] == pytest.approx(100 * correct / 6)
    rows = list(csv.reader((out / "confusion_matrix.csv").open()))
    assert rows[0][1:] == CLASSES and [r[0] for r in rows[1:]] == CLASSES
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.sum() == 6 and np.trace(cm) == correct
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    pairs = list(csv.DictReader((out / "confused_pairs.csv").open()))
    assert sum(int(p["count"]) for p in pairs) == 6 - correct  # every mistake is in one pair (3 classes)
    assert len(list((out / "confused_pairs").glob("*.png"))) == len(pairs)


def test_hflip_tta_averages_the_probabilities_of_the_image_and_its_mirror_and_is_recorded():
    from fgvc.data import synthetic_splits

    model = fgvc.create_model("vit", num_classes=3, img_size=48, **TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)  # the new head starts at zero: give it some weights
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        expected = (model(x).logits.softmax(1) + model(x.flip(-1)).logits.softmax(1)) / 2
        out = tta_forward(model, x, "hflip")
    torch.testing.assert_close(out.logits.softmax(1), expected)
    assert not torch.allclose(model(x).logits.softmax(1), expected)  # the mirror image does change something
    data = synthetic_splits(num_classes=3, image_size=48, train=4, val=2, test=6)["test"]
    plain, flipped = fgvc.evaluate(model, data), fgvc.evaluate(model, data, tta="hflip")
    assert plain.tta is None and flipped.tta == "hflip" and "tta='hflip'" in repr(flipped)
    with pytest.raises(ValueError, match="unknown tta 'hflp' \\(did you mean 'hflip'\\?\\)"):
        fgvc.evaluate(model, data, tta="hflp")


def test_outputs_and_results_print_shapes_not_tensors():
    from fgvc.data import synthetic_splits

    model = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, **TINY).eval()
    out = model(torch.randn(2, 3, 48, 48))
    assert repr(out) == "ModelOutput(logits=(2, 3), embedding=(2, 64), boxes=(2, 4), selection_map=(2, 3, 3))"
    enc = model.backbone(torch.randn(2, 3, 48, 48), return_attention=True)
    assert repr(enc) == "EncoderOutput(tokens=(2, 10, 64), attentions=[2 x (2, 2, 10, 10)])"
    data = synthetic_splits(num_classes=3, image_size=48, train=4, val=2, test=4)["test"]
    text = repr(fgvc.evaluate(model, data))
    assert text.startswith("EvalResult(top1=") and "num_samples=4, classes=3" in text and len(text) < 200
