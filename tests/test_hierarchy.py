"""Class hierarchies: a fine-grained model's predictions scored at coarser levels (FGVC-Aircraft's family and
manufacturer from its official files, or any user mapping), in ``fgvc.evaluate``, ``fgvc eval`` and its report.

A prediction counts at a level when the coarse label of the predicted class is the true class's."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from test_datasets import write_image, write_lines
from torchvision.transforms import ToTensor

import fgvc
from fgvc.cli import main
from fgvc.data import SyntheticFGVC, build_dataset, class_hierarchy, load_hierarchy, subset_classes
from fgvc.data.hierarchy import hierarchy_chance, hierarchy_top1
from fgvc.methods.output import ModelOutput
from fgvc.studies.report import save_evaluation

# variant -> (family, manufacturer), as in the official files (4 variants, 2 families, 2 manufacturers)
AIRCRAFT = {
    "747-100": ("Boeing 747", "Boeing"),
    "747-200": ("Boeing 747", "Boeing"),
    "A330-200": ("A330", "Airbus"),
    "A330-300": ("A330", "Airbus"),
}
VARIANTS = list(AIRCRAFT)


def make_official_aircraft(root: Path, per_class: int = 2) -> Path:
    """The official fgvc-aircraft-2013b layout: ``per_class`` images of each variant in train, val and test
    (trainval = train + val), each listed at the variant, family and manufacturer levels."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    write_lines(data / "variants.txt", VARIANTS)
    write_lines(data / "families.txt", sorted({f for f, _ in AIRCRAFT.values()}))
    write_lines(data / "manufacturers.txt", sorted({m for _, m in AIRCRAFT.values()}))
    lines: dict[tuple[str, str], list[str]] = {}
    k = 0
    for split in ("train", "val", "test"):
        for variant, (family, maker) in AIRCRAFT.items():
            for _ in range(per_class):
                k += 1
                image_id = f"{1040000 + k:07d}"
                write_image(data / "images" / f"{image_id}.jpg", size=(48, 68), colour=(10 * k, 80, 160))
                for level, name in (("variant", variant), ("family", family), ("manufacturer", maker)):
                    lines.setdefault((level, split), []).append(f"{image_id} {name}")
    for level in ("variant", "family", "manufacturer"):
        lines[level, "trainval"] = lines[level, "train"] + lines[level, "val"]
    for (level, split), rows in lines.items():
        write_lines(data / f"images_{level}_{split}.txt", rows)
    return root / "fgvc-aircraft-2013b"


class Scripted(torch.nn.Module):
    """A model that predicts the given labels, in data order (a hand-made predictions case)."""

    def __init__(self, predictions, class_names):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.predictions, self.class_names = list(predictions), list(class_names)
        self.num_classes, self.img_size = len(class_names), (48, 48)

    def forward(self, images):
        picked = torch.tensor(self.predictions[: len(images)])
        del self.predictions[: len(images)]
        return ModelOutput(logits=F.one_hot(picked, self.num_classes).float() * 5)  # (B, C)

    def loss(self, output, targets):
        return F.cross_entropy(output.logits, targets)


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------ the official files
def test_the_official_aircraft_files_map_each_variant_to_its_family_and_manufacturer(tmp_path):
    root = make_official_aircraft(tmp_path)
    test = build_dataset("aircraft", root, "test")
    assert test.classes == VARIANTS
    assert test.hierarchy == {"family": ["Boeing 747", "Boeing 747", "A330", "A330"],
                              "manufacturer": ["Boeing", "Boeing", "Airbus", "Airbus"]}
    families = build_dataset("aircraft", root, "trainval", annotation_level="family")
    assert families.classes == ["A330", "Boeing 747"] and families.hierarchy == {"manufacturer": ["Airbus", "Boeing"]}
    assert build_dataset("aircraft", root, "val", annotation_level="manufacturer").hierarchy is None
    # views keep it, in their own labels: a class subset relabels by name
    subset = subset_classes(test, ["A330-300", "747-100"])
    assert class_hierarchy(subset) == {"family": ["A330", "Boeing 747"], "manufacturer": ["Airbus", "Boeing"]}
    assert class_hierarchy(SyntheticFGVC(num_samples=4, image_size=64)) is None  # no hierarchy of its own


def test_a_variant_under_two_families_and_an_unpaired_image_are_refused_naming_them(tmp_path):
    root = make_official_aircraft(tmp_path)
    family_file = root / "data" / "images_family_test.txt"
    rows = family_file.read_text().splitlines()
    image_id = rows[2].split()[0]  # an image of 747-200
    rows[2] = f"{image_id} A330"
    family_file.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError) as e:
        build_dataset("aircraft", root, "test").hierarchy  # noqa: B018
    assert "'747-200' has two family labels, 'Boeing 747' and 'A330'" in one_line(e)
    family_file.write_text("\n".join(rows[1:]) + "\n")  # an image no longer listed at the family level
    with pytest.raises(ValueError) as e:
        build_dataset("aircraft", root, "test").hierarchy  # noqa: B018
    assert "in only one of images_variant_test.txt and images_family_test.txt" in one_line(e)


# ------------------------------------------------------------------------------ scoring
def test_hand_made_predictions_score_the_hand_computed_family_and_manufacturer_accuracy(tmp_path):
    test = build_dataset("aircraft", make_official_aircraft(tmp_path), "test", ToTensor())
    assert test.targets == [0, 0, 1, 1, 2, 2, 3, 3]
    predicted = [0, 1, 1, 2, 3, 3, 0, 3]  # right: images 0, 2, 7; within the family: all but 3 and 6
    result = fgvc.evaluate(Scripted(predicted, VARIANTS), test, batch_size=3)
    assert result.top1 == pytest.approx(100 * 3 / 8)
    assert result.hierarchy_top1 == pytest.approx({"family": 100 * 6 / 8, "manufacturer": 100 * 6 / 8})
    assert all(coarse >= result.top1 for coarse in result.hierarchy_top1.values())
    assert result.summary()["family_top1"] == pytest.approx(75.0) and "manufacturer_top1=75" in repr(result)
    assert fgvc.evaluate(Scripted(predicted, VARIANTS), test, hierarchy=False).hierarchy_top1 is None
    wider = Scripted(predicted, [*VARIANTS, "A380"])  # a model with a class the data's hierarchy lacks
    assert fgvc.evaluate(wider, test, check_classes=False).hierarchy_top1 is None  # evaluated, not mapped up
    # the levels can differ: three families in two manufacturers
    levels = {"family": ["f0", "f0", "f1", "f2"], "manufacturer": ["m0", "m0", "m1", "m1"]}
    assert hierarchy_top1([0, 1, 3, 2], [1, 0, 2, 2], levels) == pytest.approx(
        {"family": 100 * 3 / 4, "manufacturer": 100.0})
    # chance: a uniformly random fine guess lands in the true class's group half the time here
    assert hierarchy_chance([0, 3], levels) == pytest.approx({"family": 100 * (2 / 4 + 1 / 4) / 2,
                                                              "manufacturer": 50.0})


def test_a_user_mapping_scores_the_synthetic_colour_groups(tmp_path):
    data = SyntheticFGVC(num_classes=4, num_samples=24, image_size=32, detail_fraction=0.1, seed=3)  # 2 colours x 2 shapes
    colour = {name: name.split("-")[0] for name in data.classes}
    shape = {name: name.split("-")[1] for name in data.classes}
    assert len(set(colour.values())) == 2 and len(set(shape.values())) == 2
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the new head starts at zero: give it some weights
    result = fgvc.evaluate(model, data, hierarchy={"colour": colour, "shape": shape})
    names = np.array(data.classes)
    pred, true = names[result.predictions], names[result.targets]
    by_hand = {"colour": 100 * np.mean([colour[p] == colour[t] for p, t in zip(pred, true, strict=True)]),
               "shape": 100 * np.mean([shape[p] == shape[t] for p, t in zip(pred, true, strict=True)])}
    assert result.hierarchy_top1 == pytest.approx(by_hand)
    assert min(by_hand.values()) >= result.top1
    path = tmp_path / "groups.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["class", "colour", "shape"], *([n, colour[n], shape[n]] for n in data.classes)])
    assert fgvc.evaluate(model, data, hierarchy=path).hierarchy_top1 == pytest.approx(by_hand)
    (tmp_path / "groups.json").write_text(json.dumps({"colour": colour}))
    assert fgvc.evaluate(model, data, hierarchy=tmp_path / "groups.json").hierarchy_top1 == pytest.approx(
        {"colour": by_hand["colour"]})


def test_a_mapping_missing_a_class_or_giving_a_class_two_labels_is_refused_in_one_line(tmp_path):
    classes = ["red-circle", "red-ring", "blue-circle"]
    with pytest.raises(ValueError) as e:
        load_hierarchy({"colour": {"red-circle": "red", "red-ring": "red"}}, classes)
    assert "level 'colour' has no label for 1 of 3 classes: 'blue-circle'" in one_line(e)
    twice = tmp_path / "twice.csv"
    twice.write_text("class,colour\nred-circle,red\nred-ring,red\nblue-circle,blue\nred-ring,blue\n")
    with pytest.raises(ValueError) as e:
        load_hierarchy(twice, classes)
    assert "class 'red-ring' has two colour labels, 'red' and 'blue'" in one_line(e)
    duplicate = tmp_path / "twice.json"
    duplicate.write_text('{"colour": {"red-circle": "red", "red-ring": "red", "red-ring": "blue"}}')
    with pytest.raises(ValueError) as e:
        load_hierarchy(duplicate, classes)
    assert "'red-ring' appears twice" in one_line(e)
    # evaluate checks the mapping before any image is read (this model has no prediction to give)
    data = SyntheticFGVC(vocabulary=classes, num_samples=3, image_size=32, detail_fraction=0.1)
    with pytest.raises(ValueError) as e:
        fgvc.evaluate(Scripted([], classes), data, hierarchy={"colour": {"red-circle": "red"}})
    assert "'red-ring', 'blue-circle'" in one_line(e)


# ------------------------------------------------------------------------------ fgvc eval and its report
def test_eval_out_report_holds_the_hierarchy_numbers(tmp_path, capsys):
    root = make_official_aircraft(tmp_path / "data")
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    checkpoint = fgvc.save_model(model, tmp_path / "run" / "best.safetensors", class_names=VARIANTS)
    out = tmp_path / "report"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--dataset", "aircraft",
                 "--out", str(out), "--no-progress"]) == 0
    assert "family_top1" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.reader((out / "confusion_matrix.csv").open()))
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])  # (4, 4) rows true, columns predicted
    family = np.array([AIRCRAFT[v][0] for v in VARIANTS])
    same_family = family[:, None] == family[None, :]  # (4, 4)
    assert metrics["family_top1"] == pytest.approx(100 * cm[same_family].sum() / cm.sum())
    assert metrics["manufacturer_top1"] == pytest.approx(metrics["family_top1"])  # one family per maker here
    assert metrics["family_top1"] >= metrics["top1"]
    table = (out / "hierarchy.md").read_text()
    assert "| level | classes | top-1 (%) | chance (%) |" in table
    assert f"| family | 2 | {metrics['family_top1']:.2f} | 50.00 |" in table
    assert f"| class | 4 | {metrics['top1']:.2f} | 25.00 |" in table
    # a user's mapping replaces the dataset's own levels
    mapping = tmp_path / "engines.csv"
    mapping.write_text("variant,engines\n747-100,4\n747-200,4\nA330-200,2\nA330-300,2\n")
    user = tmp_path / "user.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--dataset", "aircraft",
                 "--hierarchy", str(mapping), "--out", str(user), "--no-progress"]) == 0
    numbers = json.loads(user.read_text())
    assert numbers["engines_top1"] == pytest.approx(metrics["family_top1"]) and "family_top1" not in numbers
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--dataset", "aircraft",
                 "--hierarchy", str(tmp_path / "none.csv"), "--no-progress"]) == 1
    assert "--hierarchy" in capsys.readouterr().err


def test_without_a_hierarchy_the_report_is_unchanged(tmp_path):
    data = SyntheticFGVC(num_classes=3, num_samples=6, image_size=32, detail_fraction=0.1)
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    result = fgvc.evaluate(model, data)
    assert result.hierarchy_top1 is None and not [k for k in result.summary() if k.endswith("_top1")]
    written = save_evaluation(result, tmp_path / "report")
    assert not (tmp_path / "report" / "hierarchy.md").exists() and all("hierarchy" not in p.name for p in written)


def test_fgvc_train_on_aircraft_reports_the_family_and_manufacturer_top1_per_seed(tmp_path):
    from test_recipe_splits_and_sweep import tiny_overrides

    from fgvc.studies.recipe import load_recipe, train_recipe

    root = make_official_aircraft(tmp_path / "data", per_class=1)
    recipe = load_recipe("vit_aircraft_224", tiny_overrides(root, protocol="paper", **{
        "train.epochs": 1, "train.batch_size": 8}))
    result = train_recipe(recipe, tmp_path / "run", seeds=[0])
    (run,) = result.runs
    assert run["test_family_top1"] >= run["test_top1"] and "test_manufacturer_top1" in run
    header = (tmp_path / "run" / "results.md").read_text().splitlines()[0]
    assert "| family_top1 | manufacturer_top1 |" in header
