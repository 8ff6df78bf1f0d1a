"""Recipes name their training and test splits (FGVC-Aircraft trains on trainval), and ``--sweep`` chooses a
setting on the validation split before the test split is evaluated once."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY
from test_datasets import write_image, write_lines

from fgvc.cli import main
from fgvc.studies.recipe import (
    RECIPE_DIR,
    build_recipe_data,
    list_recipes,
    load_recipe,
    parse_sweep,
    train_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["707-320", "A320", "Cessna 172"]


def make_official_aircraft(root: Path, per_class: int = 10) -> Path:
    """The official FGVC-Aircraft layout with 30 images in each of train, val and test (trainval: 60)."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    write_lines(data / "variants.txt", VARIANTS)
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    k = 0
    for split in rows:
        for variant in VARIANTS:
            for _ in range(per_class):
                k += 1
                write_image(data / "images" / f"{k:07d}.jpg", size=(48, 68))
                rows[split].append(f"{k:07d} {variant}")
    for split, lines in rows.items():
        write_lines(data / f"images_variant_{split}.txt", lines)
    write_lines(data / "images_variant_trainval.txt", rows["train"] + rows["val"])  # as the official file
    return root / "fgvc-aircraft-2013b"


def tiny_overrides(root, **more):
    """A shipped recipe on the tiny test backbone (its data settings kept) and the fixture folder."""
    return {"data.root": str(root), "model.backbone": TINY["backbone"], "model.pretrained": False,
            "model.backbone_kwargs.depth": TINY["backbone_kwargs"]["depth"], "model.img_size": 64,
            "data.resize": [72, 72], **more}


def sizes(recipe):
    import fgvc

    model = fgvc.create_model(num_classes=3, **recipe["model"])
    return {name: len(split) for name, split in build_recipe_data(recipe, model).items()}


# ------------------------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("name", [n for n in list_recipes() if "_aircraft_" in n])
def test_every_aircraft_recipe_trains_on_trainval_and_tests_on_test(name):
    """FGVC-Aircraft recipes train on trainval (6,667 images, as the papers and GLSim), not train (3,334)."""
    data = load_recipe(name)["data"]
    assert (data["train_split"], data["test_split"]) == ("trainval", "test")


def test_the_other_recipes_name_train_and_test():
    """Every shipped recipe says which splits it uses; outside aircraft they are the datasets' train and test."""
    for name in list_recipes():
        if "_aircraft_" not in name:
            assert (load_recipe(name)["data"]["train_split"], load_recipe(name)["data"]["test_split"]) == (
                "train", "test")


def test_aircraft_recipe_on_the_official_layout_trains_on_train_plus_val(tmp_path):
    """On the official layout (30 / 30 / 30), the recipe trains on 60 images and tests on 30; protocol val
    carves its validation split (10%, stratified) from those 60."""
    root = make_official_aircraft(tmp_path)
    paper = load_recipe("glsim_aircraft_224", tiny_overrides(root, protocol="paper"))
    assert sizes(paper) == {"train": 60, "test": 30}
    val = load_recipe("glsim_aircraft_224", tiny_overrides(root))
    assert sizes(val) == {"train": 54, "val": 6, "test": 30}


def test_aircraft_defaults_to_trainval_when_a_recipe_names_no_split(tmp_path):
    """A recipe without data.train_split gets the dataset's default: trainval for aircraft."""
    root = make_official_aircraft(tmp_path)
    recipe = load_recipe("vit_aircraft_224", tiny_overrides(root, protocol="paper"))
    del recipe["data"]["train_split"], recipe["data"]["test_split"]
    assert sizes(recipe) == {"train": 60, "test": 30}


def test_a_recipe_can_name_its_splits(tmp_path):
    """data.train_split / data.test_split pick any of the dataset's splits (here the official train / val)."""
    root = make_official_aircraft(tmp_path)
    recipe = load_recipe("vit_aircraft_224", tiny_overrides(root, protocol="paper", **{
        "data.train_split": "train", "data.test_split": "val"}))
    assert sizes(recipe) == {"train": 30, "test": 30}


def test_bad_split_names_are_refused_before_anything_is_built(tmp_path):
    """Unknown, repeated or non-text split names are named when the recipe is read."""
    with pytest.raises(ValueError, match=r"data.train_split 'trainvall' is not a split of aircraft \(did you mean "
                                         r"'trainval'.*\); its splits: train, val, test, trainval"):
        load_recipe("glsim_aircraft_224", ["data.train_split=trainvall"])
    with pytest.raises(ValueError, match="data.train_split and data.test_split are both 'test'"):
        load_recipe("glsim_cub_224", ["data.train_split=test"])
    with pytest.raises(ValueError, match="data.test_split must be a split name"):
        load_recipe("glsim_cub_224", ["data.test_split=[test]"])
    with pytest.raises(ValueError, match="synthetic dataset draws its own train / val / test splits"):
        train_recipe(synthetic_recipe(**{"data.train_split": "val"}), tmp_path)


def test_a_test_split_that_overlaps_the_training_split_is_refused(tmp_path):
    """trainval contains val: testing on val after training on trainval is refused, naming an image."""
    root = make_official_aircraft(tmp_path)
    recipe = load_recipe("glsim_aircraft_224", tiny_overrides(root, **{"data.test_split": "val"}))
    with pytest.raises(ValueError, match=r"data.test_split 'val' shares 30 images with data.train_split 'trainval'"):
        sizes(recipe)


# ------------------------------------------------------------------------------------------------ sweep
def synthetic_recipe(**overrides):
    from fgvc.studies.recipe import apply_overrides

    recipe = dict(
        name="tiny", expected_top1=None, source="a test", seeds=[0], protocol="paper",
        model=dict(method="vit", img_size=48, **TINY),
        data=dict(dataset="synthetic", val_fraction=0.25, options=dict(num_classes=3, train=12, val=6, test=6)),
        train=dict(epochs=1, batch_size=4, lr=1e-3, progress=False),
    )
    return apply_overrides(recipe, overrides)


def test_sweep_scores_each_candidate_on_validation_and_tests_only_the_chosen_one(tmp_path):
    """Each value is trained under protocol val without the test split; the best validation top-1 is chosen,
    then trained and tested once under the recipe's protocol; both results files list every candidate."""
    result = train_recipe(synthetic_recipe(), tmp_path, sweep=["train.lr=0.05,1e-3"])
    saved = json.loads((tmp_path / "results.json").read_text())["sweep"]
    values = [c["setting"]["train.lr"] for c in saved["candidates"]]
    scores = [c["val_top1"] for c in saved["candidates"]]
    assert values == [0.05, 0.001] and all(s is not None for s in scores)
    best = 0 if scores[0] >= scores[1] else 1
    assert saved["chosen"] == {"train.lr": values[best]} and [c["chosen"] for c in saved["candidates"]] == [
        i == best for i in range(2)]
    for i, value in enumerate(values):  # the candidates: protocol val, validated, never tested
        run_dir = tmp_path / "sweep" / f"{i}_train.lr={value}" / "seed0"
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["protocol"] == "val"
        assert (run_dir / "val.json").is_file() and not (run_dir / "test.json").exists()
    final = yaml.safe_load((tmp_path / "seed0" / "config.yaml").read_text())
    assert final["train"]["lr"] == values[best] and final["protocol"] == "paper"
    (run,) = result.runs
    assert run["checkpoint"].endswith("last.safetensors") and run["test_top1"] is not None  # protocol paper
    report = (tmp_path / "results.md").read_text()
    assert "| train.lr | val top-1 | best epoch | |" in report and f"Chosen: train.lr={values[best]}" in report
    assert report.count(" | 1 | ") >= 2  # one row per candidate (best epoch 1)


def test_a_seeds_run_is_the_same_alone_or_after_another_seed(tmp_path):
    """The seed, not what ran before in the process, sets the new layers' initialisation (so every sweep
    candidate and every seed of a multi-seed run starts as it would alone)."""
    from safetensors.torch import load_file

    train_recipe(synthetic_recipe(), tmp_path / "alone", seeds=[0])
    train_recipe(synthetic_recipe(), tmp_path / "after", seeds=[1, 0])
    alone, after = (load_file(tmp_path / d / "seed0" / "last.safetensors") for d in ("alone", "after"))
    assert alone.keys() == after.keys() and all(alone[k].equal(after[k]) for k in alone)


def test_sweep_ties_go_to_the_first_value_listed(tmp_path):
    """Two candidates that train identically (a logging interval) tie: the first listed is chosen."""
    train_recipe(synthetic_recipe(), tmp_path, sweep=["train.log_every_steps=7,3"])
    saved = json.loads((tmp_path / "results.json").read_text())["sweep"]
    a, b = saved["candidates"]
    assert a["val_top1"] == b["val_top1"] and saved["chosen"] == {"train.log_every_steps": 7}


def test_sweep_values_are_read_as_yaml_and_bad_sweeps_are_named():
    """KEY=V1,V2 reads values as --set does (lists, 1e-3); a sweep that cannot choose honestly is refused."""
    assert parse_sweep(["data.resize=[40, 40],[48, 48]", "train.lr=1e-3,0.01"]) == [
        ("data.resize", [[40, 40], [48, 48]]), ("train.lr", [0.001, 0.01])]
    for bad, message in [
        ("train.lr", "is not KEY=V1,V2"),
        ("train.lr=0.01", "two different values or more"),
        ("train.lr=0.01,1e-2", "two different values or more"),
        ("data.val_fraction=0.1,0.2", "scored on the same validation split"),
        ("data.options.seed=1,2", "scored on the same validation split"),
        ("protocol=val,paper", "only model.\\*, data.\\* and train.\\* settings"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_sweep([bad])


def test_every_candidate_is_checked_before_any_is_trained(tmp_path):
    """A bad value, or no validation split to choose on, fails before the first candidate trains."""
    with pytest.raises(ValueError, match=r"sweep train.lr=-1: train.lr must be"):
        train_recipe(synthetic_recipe(), tmp_path, sweep={"train.lr": [0.01, -1]})
    with pytest.raises(ValueError, match="data.val_fraction must be above 0"):
        train_recipe(synthetic_recipe(**{"data.val_fraction": 0.0}), tmp_path, sweep=["train.lr=0.01,0.001"])
    assert not (tmp_path / "sweep").exists()


def test_fgvc_train_sweep_on_the_command_line(tmp_path, capsys):
    """``fgvc train --sweep KEY=V1,V2`` prints the candidates' table; a bad sweep is one error line, exit 1."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(synthetic_recipe()))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--sweep", "train.lr=0.05,0.001", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Sweep of train.lr" in printed and (out / "seed0" / "test.json").is_file()
    assert main(["train", "--config", str(path), "--sweep", "data.split_seed=0,1", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fgvc: error: sweep 'data.split_seed'" in err[0]


# ------------------------------------------------------------------------------------------------ docs
def test_glsim_recipes_say_the_official_learning_rate_sweep():
    """The GLSim recipes keep lr 0.01 (README, build_args.py) and say that scripts/run.sh sweeps four rates."""
    for name in ("glsim_cub_224", "glsim_aircraft_448"):
        text = (RECIPE_DIR / f"{name}.yaml").read_text()
        assert "scripts/run.sh sweeps 0.03, 0.01, 0.003, 0.001" in text
        assert "--sweep train.lr=0.03,0.01,0.003,0.001" in text
        assert load_recipe(name)["train"]["lr"] == 0.01


def test_generator_cites_the_transfg_lines_that_skip_the_part_layer():
    """TransFG's load_from skips the part layer at models/modeling.py:348-351."""
    text = (ROOT / "fgvc" / "methods" / "transfg.py").read_text()  # its RECIPES, which make_recipes.py writes
    assert "models/modeling.py:348-351" in text and "modeling.py:315-330" not in text
