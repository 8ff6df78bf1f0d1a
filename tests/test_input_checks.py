"""Bad input is refused with a message naming the problem and the file: the classes of evaluated data, the
Stanford Cars and CUB annotations, boxes, labels, empty splits, output paths and command-line numbers."""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from test_datasets import make_cub, write_image, write_lines
from torch.utils.data import Dataset

import fgvc
from fgvc.cli import main
from fgvc.data import build_dataset, check_dataset
from fgvc.data.common import Records
from fgvc.engine.evaluate import check_labels

needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc"),
                                reason="needs Linux's /proc, where nothing can be created")


class Named(Dataset):
    """Six 32 px images with labels 0 1 2 0 1 2 and the given class names."""

    def __init__(self, classes):
        self.classes = list(classes)
        self.targets = [i % len(self.classes) for i in range(6)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(3, 32, 32), self.targets[i]


def trained_model(class_names=("a", "b", "c")):
    model = fgvc.create_model("vit", num_classes=len(class_names), img_size=32, **TINY)
    model.class_names = list(class_names)
    return model


# ---------------------------------------------------------------- evaluate checks the classes


def test_evaluate_refuses_data_whose_classes_come_in_another_order():
    """Label k of the data is scored against output k: the same classes in another order are an error."""
    with pytest.raises(ValueError, match=r"same names in another order.*label 0: 'c' in the data, 'a' in the model"):
        fgvc.evaluate(trained_model(), Named(["c", "b", "a"]))


def test_evaluate_refuses_data_with_another_number_of_classes():
    """Data with fewer classes than the model (labels all in range) is refused, not scored."""
    with pytest.raises(ValueError, match="the data has 2 classes but the model has 3"):
        fgvc.evaluate(trained_model(), Named(["a", "b"]))


def test_evaluate_can_skip_the_class_check_and_passes_matching_classes():
    """check_classes=False is the explicit opt-out; matching names evaluate as before."""
    assert fgvc.evaluate(trained_model(), Named(["A", "B", "C"]), check_classes=False).num_samples == 6
    assert fgvc.evaluate(trained_model(), Named(["a", "b", "c"])).num_samples == 6


def test_the_cli_evaluation_uses_the_same_class_check(tmp_path):
    """fgvc eval (checkpoint_split) and fgvc.evaluate refuse the same mismatch with the same message."""
    from fgvc.studies.recipe import evaluate_checkpoint

    model = trained_model(("Auklet", "Albatross"))
    ckpt = fgvc.save_model(model, tmp_path / "best.safetensors", class_names=model.class_names)
    for name in ("Albatross", "Auklet"):  # a folder sorts its classes: the other order
        write_image(tmp_path / "birds" / "test" / name / "x.jpg")
    with pytest.raises(ValueError, match=r"another order.*label 0: 'Albatross' in the data, 'Auklet' in the model"):
        evaluate_checkpoint(ckpt, tmp_path / "birds", dataset="folder")


@pytest.mark.parametrize("batch_size", [0, -2, 2.5])
def test_evaluate_refuses_a_batch_size_that_is_not_a_positive_integer(batch_size, monkeypatch):
    """The batch size is named by evaluate, whether or not the run is sharded across processes."""
    module = importlib.import_module("fgvc.engine.evaluate")  # the module, not the function fgvc.evaluate
    monkeypatch.setattr(module, "is_distributed", lambda: True)  # sharding divides by the batch size
    with pytest.raises(ValueError, match=f"evaluate: batch_size must be a positive integer, got {batch_size}"):
        fgvc.evaluate(trained_model(), Named(["a", "b", "c"]), batch_size=batch_size)


# ---------------------------------------------------------------- labels


def test_a_negative_label_is_reported_as_itself():
    """The message names the negative label, not the largest one."""
    with pytest.raises(ValueError, match=r"label -1 found in the data: labels must be 0\.\.2"):
        check_labels(torch.tensor([0, 2, -1]), 3)
    with pytest.raises(ValueError, match="label 3 found in the data but the model has 3 classes"):
        check_labels(torch.tensor([0, 3, 1]), 3)


def test_records_refuse_a_label_outside_the_classes(tmp_path):
    """A reader's label outside 0..C-1 is named when the records are made, before any image is read."""
    with pytest.raises(ValueError, match=r"mine \(train\): label -1 is outside 0\.\.1"):
        Records("mine", tmp_path, "train", ["a.jpg", "b.jpg"], [0, -1], ["x", "y"])


# ---------------------------------------------------------------- Stanford Cars devkit

NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
GOOD_TRAIN = [(1, 2, 30, 20, 3, "00001.jpg"), (5, 6, 20, 25, 1, "00002.jpg"), (1, 1, 40, 30, 2, "00003.jpg")]


def write_cars(base: Path, train=GOOD_TRAIN, names=NAMES) -> Path:
    """A Stanford Cars devkit (.mat files as scipy.io.savemat writes them) with these train annotations."""
    import scipy.io as sio

    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    test = [(3, 4, 10, 12, 2, "00001.jpg")]
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    sio.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": np.array(train, dtype=fields)})
    sio.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": np.array(test, dtype=fields)})
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for row in rows:
            write_image(base / folder / row[5], size=(40, 30))
    return base


def test_cars_refuses_an_image_listed_twice(tmp_path):
    """A repeated fname would label one image twice (as the CUB and folder readers, an error naming both)."""
    train = [*GOOD_TRAIN, (2, 2, 10, 10, 1, "00001.jpg")]
    base = write_cars(tmp_path / "stanford_cars", train=train)
    with pytest.raises(ValueError, match=r"cars_train_annos\.mat: fname '00001\.jpg' in annotations 0 and 3"):
        build_dataset("cars", base, "train")


def test_cars_refuses_a_class_id_that_is_not_an_integer(tmp_path):
    """Class id 3.7 is an error naming the file and the annotation, not label 2."""
    train = [GOOD_TRAIN[0], (5, 6, 20, 25, 3.7, "00002.jpg")]
    base = write_cars(tmp_path / "stanford_cars", train=train)
    with pytest.raises(ValueError, match=r"cars_train_annos\.mat, annotation 1 \(00002\.jpg\): class id is 3\.7, not an"):
        build_dataset("cars", base, "train")


def test_cars_accepts_whole_number_class_ids_stored_as_floats(tmp_path):
    """3.0 is the integer 3 (MATLAB stores numbers as doubles)."""
    base = write_cars(tmp_path / "stanford_cars", train=[(1, 2, 30, 20, 3.0, "00001.jpg")])
    assert build_dataset("cars", base, "train").targets == [2]


def test_cars_refuses_an_inverted_box_in_the_reader_and_in_data_check(tmp_path, capsys):
    """bbox_x1 > bbox_x2 is named with the file and annotation; `fgvc data check` reports it and exits 1."""
    train = [GOOD_TRAIN[0], (25, 6, 20, 25, 1, "00002.jpg")]
    base = write_cars(tmp_path / "stanford_cars", train=train)
    with pytest.raises(ValueError, match=r"annotation 1 \(00002\.jpg\): the box .* = \(25, 6, 20, 25\) is inverted"):
        build_dataset("cars", base, "train")
    assert main(["data", "check", str(base), "--dataset", "cars", "--quick", "--no-progress"]) == 1
    assert "is inverted" in capsys.readouterr().out


def test_cars_refuses_two_classes_with_the_same_name(tmp_path):
    """Two class ids named alike cannot be told apart in any result: an error naming cars_meta.mat."""
    base = write_cars(tmp_path / "stanford_cars", names=[NAMES[0], NAMES[1], NAMES[0]])
    with pytest.raises(ValueError, match=r"cars_meta\.mat: class ids 1 and 3 have the same name"):
        build_dataset("cars", base, "train")


# ---------------------------------------------------------------- CUB


def test_cub_refuses_two_class_ids_with_the_same_name(tmp_path):
    """classes.txt giving two used class ids one name is an error naming the file and both ids."""
    root = make_cub(tmp_path / "CUB_200_2011")
    write_lines(root / "classes.txt", ["3 003.Sooty_Albatross", "7 003.Sooty_Albatross", "12 012.Yellow_headed"])
    with pytest.raises(ValueError, match=r"classes\.txt: class ids 3 and 7 have the same name '003\.Sooty_Albatross'"):
        build_dataset("cub", root, "train")


def test_cub_refuses_a_box_without_area_or_with_text(tmp_path):
    """A negative width, or a box that is not 4 numbers, is named with bounding_boxes.txt and the image id."""
    root = make_cub(tmp_path / "CUB_200_2011")
    lines = (root / "bounding_boxes.txt").read_text().splitlines()
    write_lines(root / "bounding_boxes.txt", ["1 4.0 3.0 -5.0 12.0", *lines[1:]])
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt: image 1 has the box x=4 y=3 width=-5 height=12"):
        build_dataset("cub", root, "train")
    write_lines(root / "bounding_boxes.txt", ["1 4.0 3.0 wide 12.0", *lines[1:]])
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt: image 1 has the box '4\.0 3\.0 wide 12\.0'"):
        build_dataset("cub", root, "train")


# ---------------------------------------------------------------- boxes in general and `data check`


def test_records_refuse_an_inverted_box(tmp_path):
    """Any reader's box must have x0 < x1 and y0 < y1; the error names the image."""
    with pytest.raises(ValueError, match=r"mine \(test\): 1 boxes are empty, inverted .*\(9, 0, 3, 5\) for b\.jpg"):
        Records("mine", tmp_path, "test", ["a.jpg", "b.jpg"], [0, 0], ["x"],
                boxes_pixels=torch.tensor([[0.0, 0.0, 4.0, 4.0], [9.0, 0.0, 3.0, 5.0]]))


def test_data_check_reports_boxes_outside_the_image_and_warns_about_boxes_past_its_border(tmp_path):
    """A box that misses its 40 x 30 image is a problem; one reaching past the border (cut when read) a warning."""
    base = write_cars(tmp_path / "stanford_cars", train=[(50, 2, 60, 20, 3, "00001.jpg")])
    report = check_dataset("cars", base, quick=True)
    assert not report.ok and "1 boxes lie outside their image" in str(report)
    assert "00001.jpg (box 49, 1, 60, 20 in a 40 x 30 image)" in str(report)
    base = write_cars(tmp_path / "other" / "stanford_cars", train=[(30, 2, 45, 20, 3, "00001.jpg")])
    report = check_dataset("cars", base, quick=True)
    assert report.ok and any("1 boxes reach past the border" in w for w in report.warnings)


# ---------------------------------------------------------------- empty test split


def write_folder_with_empty_test(root: Path) -> Path:
    for name in ("a", "b"):
        for k in range(2):
            write_image(root / "train" / name / f"{k}.jpg", size=(36, 36))
        (root / "test" / name).mkdir(parents=True)
    return root


def test_train_recipe_refuses_an_empty_test_split_before_training(tmp_path):
    """An empty test split is named before fit, not found by numpy after the whole training."""
    root = write_folder_with_empty_test(tmp_path / "birds")
    recipe = dict(
        name="empty_test", model=dict(method="vit", img_size=32, **TINY),
        data=dict(dataset="folder", root=str(root), val_fraction=0.5, resize=36),
        train=dict(epochs=1, batch_size=2),
    )
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"the test split of folder at .*birds has no images: check the folder with"):
        fgvc.train_recipe(recipe, out, progress=False)
    assert not (out / "seed0" / "last.safetensors").exists()  # nothing was trained


def test_eval_refuses_an_empty_split_with_the_dataset_named(tmp_path):
    """Evaluating a checkpoint on an empty split says which split of which folder."""
    from fgvc.studies.recipe import evaluate_checkpoint

    root = write_folder_with_empty_test(tmp_path / "birds")
    model = trained_model(("a", "b"))
    ckpt = fgvc.save_model(model, tmp_path / "best.safetensors", class_names=model.class_names)
    with pytest.raises(ValueError, match=r"the test split of folder at .*birds has no images"):
        evaluate_checkpoint(ckpt, root, dataset="folder")


# ---------------------------------------------------------------- output paths, command-line numbers


@needs_proc
@pytest.mark.parametrize("out, what", [("/proc/fgvc_metrics.json", "the metrics"), ("/proc", "the evaluation report")])
def test_eval_out_that_cannot_be_written_fails_before_evaluating(out, what, monkeypatch, capsys):
    """--out is tried for writing first (os.access says yes to root even in /proc): one line, nothing evaluated."""
    import fgvc.studies.recipe

    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated before the output path was checked")

    monkeypatch.setattr(fgvc.studies.recipe, "evaluate_checkpoint", evaluated)
    assert main(["eval", "--checkpoint", "ckpt.safetensors", "--data", "data", "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fgvc: error: cannot write {what} to {out}:") and err.count("\n") == 1


def test_checking_an_output_file_keeps_an_existing_file_and_leaves_no_new_one(tmp_path):
    """The write test appends nothing to an existing file and removes the file it created."""
    from fgvc.studies.recipe import check_output_file

    saved = tmp_path / "metrics.json"
    saved.write_text('{"top1": 90.0}')
    check_output_file(saved)
    assert saved.read_text() == '{"top1": 90.0}'
    check_output_file(tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()


@pytest.fixture
def no_runs(monkeypatch):
    """The demo and pretraining stop at once when started: these tests are about parsing the arguments."""
    import fgvc.studies.demo
    import fgvc.studies.pretrain

    def started(*args, **kwargs):
        raise RuntimeError("started with the arguments accepted")

    monkeypatch.setattr(fgvc.studies.demo, "run_demo", started)
    monkeypatch.setattr(fgvc.studies.pretrain, "pretrain", started)


@pytest.mark.parametrize("argv", [["demo", "--seeds", "a"], ["demo", "--seeds", "0,x"],
                                  ["pretrain", "--detail-sides", "a"]])
def test_comma_separated_integers_that_are_not_integers_are_a_usage_error(argv, no_runs, capsys):
    """argparse names the option and the text (exit 2), instead of int()'s 'invalid literal'."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {argv[1]}: expected comma-separated integers" in err
    assert repr(argv[2]) in err and "invalid literal" not in err


def test_demo_refuses_a_repeated_seed(no_runs, capsys):
    """A repeated seed would count twice in the mean +- std."""
    with pytest.raises(SystemExit):
        main(["demo", "--seeds", "0,1,0"])
    assert "argument --seeds: expected comma-separated integers without repeats, got '0,1,0'" in capsys.readouterr().err
