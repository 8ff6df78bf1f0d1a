"""Recipes: the shipped YAML files, overrides, and one run per seed with mean +- std on the test split."""

import json
import math

import pytest
import timm
import yaml
from conftest import TINY
from test_datasets import make_cub

import fgvc
import fgvc.studies.recipe
from fgvc.studies.recipe import fit_arguments, list_recipes, load_recipe, train_recipe

METHODS = ("vit", "glsim", "dcal", "transfg")
DATASETS = ("cub", "cars", "aircraft", "nabirds")


def test_a_recipe_for_every_method_dataset_and_resolution():
    assert {f"{m}_{d}_{s}" for m in METHODS for d in DATASETS for s in (224, 448)} <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_is_valid_and_says_what_the_paper_reported(name):
    recipe = load_recipe(name)
    assert recipe["name"] == name
    assert recipe["expected_top1"] is None or 50.0 < recipe["expected_top1"] < 100.0
    assert len(recipe["source"]) > 20  # where the number comes from (or why there is none)
    assert recipe["model"]["method"] in fgvc.list_models()
    assert timm.is_model(recipe["model"]["backbone"].split(".")[0])
    assert recipe["data"]["dataset"] in fgvc.data.list_datasets()
    assert recipe["data"]["val_fraction"] > 0  # checkpoints are chosen on validation, never on test


def test_paper_numbers_quoted_in_the_issue():
    assert load_recipe("glsim_cub_224")["expected_top1"] == 90.93
    assert load_recipe("dcal_cub_448")["expected_top1"] == 91.4
    assert load_recipe("transfg_cub_448")["expected_top1"] == 91.7
    assert load_recipe("dcal_cub_224")["expected_top1"] is None  # DCAL reports 448 px only


def test_recipe_settings_follow_the_papers():
    glsim = load_recipe("glsim_cub_448")
    expected = dict(optimizer="sgd", lr=0.01, batch_size=8, epochs=50, warmup_steps=500, label_smoothing=0.1)
    assert {k: glsim["train"][k] for k in expected} == expected
    assert glsim["data"]["trivial_augment"] and glsim["data"]["random_erasing"] == 0.3
    transfg = load_recipe("transfg_cub_448")
    assert transfg["data"]["resize"] == [600, 600] and transfg["model"]["patch_stride"] == 12
    dcal = load_recipe("dcal_cub_448")
    assert dcal["data"]["resize"] == [550, 550]
    # DCAL: lr 5e-4 / 512 x batch 16; TransFG: 10k steps at batch 16 become whole epochs over the training split.
    assert fit_arguments(dcal, train_size=5395)["lr"] == pytest.approx(5e-4 * 16 / 512)
    args = fit_arguments(transfg, train_size=5395)  # 337 steps per epoch
    assert args["epochs"] == math.ceil(10000 / 337) and "steps" not in args
    # accumulating 2 batches per update: twice the images per update, so twice the lr and half the updates
    accumulated = fgvc.studies.recipe.apply_overrides(dcal, {"train.accumulate_steps": 2})
    assert fit_arguments(accumulated, train_size=5395)["lr"] == pytest.approx(5e-4 * 32 / 512)
    transfg2 = fgvc.studies.recipe.apply_overrides(transfg, {"train.accumulate_steps": 2})
    assert fit_arguments(transfg2, train_size=5395)["epochs"] == math.ceil(10000 / 168)


@pytest.mark.parametrize("method", METHODS)
def test_each_methods_model_section_is_accepted_by_create_model(method):
    recipe = load_recipe(f"{method}_cub_224")
    options = {k: v for k, v in recipe["model"].items() if k not in ("method", "backbone", "pretrained")}
    # the tiny backbone, keeping the recipe's own backbone_kwargs (the official mean / std)
    kwargs = dict(options.pop("backbone_kwargs", {}), **TINY["backbone_kwargs"])
    model = fgvc.create_model(method, num_classes=5, **options | {"img_size": 64}, backbone=TINY["backbone"],
                              backbone_kwargs=kwargs)
    assert model.num_classes == 5
    assert model.data_config["mean"] == [0.485, 0.456, 0.406]  # ImageNet statistics, as the official codes


def test_overrides_and_bad_recipes_are_named(tmp_path):
    recipe = load_recipe("glsim_cub_224", ["train.lr=0.001", "data.root=/elsewhere", "train.amp=null"])
    assert recipe["train"]["lr"] == 0.001 and recipe["data"]["root"] == "/elsewhere" and recipe["train"]["amp"] is None
    with pytest.raises(ValueError, match="unknown train keys \\['lr_typo'\\]"):
        load_recipe("glsim_cub_224", ["train.lr_typo=1"])
    with pytest.raises(ValueError, match="not key=value"):
        load_recipe("glsim_cub_224", ["train.lr"])
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {method: vit}\ndata: {dataset: cub}\n")
    with pytest.raises(ValueError, match="section 'train' is missing"):
        load_recipe(bad)


def test_model_keys_are_checked_against_the_methods_options_with_near_misses():
    with pytest.raises(ValueError, match=r"unknown model keys \['topk'\] for method 'glsim' \(did you mean 'top_k'\?\)"):
        load_recipe("glsim_cub_224", ["model.topk=4"])
    with pytest.raises(ValueError, match="allowed: .*'top_k'"):
        load_recipe("glsim_cub_224", ["model.topk=4"])
    with pytest.raises(ValueError, match=r"unknown model keys \['top_k'\] for method 'vit'"):  # glsim's, not vit's
        load_recipe("vit_cub_224", ["model.top_k=4"])
    with pytest.raises(ValueError, match=r"unknown model.method 'glsm' \(did you mean 'glsim'\?\)"):
        load_recipe("glsim_cub_224", ["model.method=glsm"])
    with pytest.raises(ValueError, match="model.num_classes comes from the data"):
        load_recipe("glsim_cub_224", ["model.num_classes=10"])
    with pytest.raises(ValueError, match=r"unknown train keys \['lrr'\] \(did you mean 'lr'\?\)"):
        load_recipe("glsim_cub_224", ["train.lrr=0.1"])
    with pytest.raises(ValueError, match=r"unknown recipe 'glsim_cub_225' \(did you mean 'glsim_cub_224'"):
        load_recipe("glsim_cub_225")


def tiny_recipe(**data):
    return dict(
        name="tiny",
        expected_top1=None,
        source="a test",
        seeds=[0, 1],
        model=dict(method="glsim", img_size=64, top_k=2, **TINY),
        data=data,
        train=dict(epochs=1, batch_size=4, lr=1e-3, progress=False),
    )


def test_train_recipe_runs_each_seed_and_reports_mean_and_std_on_synthetic_data(tmp_path):
    options = dict(num_classes=3, train=24, val=12, test=12)
    result = train_recipe(tiny_recipe(dataset="synthetic", options=options), tmp_path)
    assert [r["seed"] for r in result.runs] == [0, 1]
    for run in result.runs:
        assert run["checkpoint"].endswith("best.safetensors")  # chosen on validation
        assert 0 <= run["test_top1"] <= 100 and run["test_crop_iou"] is not None and run["test_map"] is not None
    mean, std = result.summary()["test_top1"]
    values = [r["test_top1"] for r in result.runs]
    assert mean == pytest.approx(sum(values) / 2) and std == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["test_top1"]["mean"] == pytest.approx(mean)
    assert "mean ± std" in (tmp_path / "results.md").read_text()
    config = yaml.safe_load((tmp_path / "seed1" / "config.yaml").read_text())
    assert config["seeds"] == [1] and {"fgvc", "torch", "timm", "git_commit"} <= set(config["run_info"])


def test_train_recipe_on_an_official_cub_layout_with_a_class_subset(tmp_path):
    root = make_cub(tmp_path / "CUB_200_2011")
    recipe = tiny_recipe(dataset="cub", root=str(root), classes=2, val_fraction=0.5, resize=72)
    result = train_recipe(recipe, tmp_path / "run", seeds=[3])
    (run,) = result.runs
    assert run["seed"] == 3 and run["test_crop_iou"] is not None  # CUB boxes mapped into the crop the model sees
    assert load_weights_classes(run["checkpoint"]) == ["003.Sooty_Albatross", "007.Parakeet_Auklet"]


def load_weights_classes(path):
    return fgvc.read_metadata(path)["class_names"]
