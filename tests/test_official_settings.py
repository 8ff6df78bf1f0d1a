"""The shipped recipes are the papers' official settings, and ``protocol`` says how a run is compared.

``OFFICIAL`` below is written by hand from the official code (arkel23/GLSim, TACJu/TransFG) and the DCAL
paper, independently of ``scripts/make_recipes.py``: a recipe that drifts from it fails here, and so does a
generator change that the committed YAML files do not follow.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TINY
from test_datasets import make_cub
from torchvision.transforms import v2

import fgvc
from fgvc.studies.recipe import RECIPE_DIR, build_recipe_data, list_recipes, load_recipe, train_recipe

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
DATASETS = ("cub", "cars", "aircraft", "nabirds")


def official(method, dataset, size):
    """The (model, data, train) settings of the official code / paper, as a reader of them writes them down."""
    if method == "glsim":
        # build_args.py: resize int(S / 0.875) on cars, int(S * 1.34) elsewhere; square (r, r), bicubic
        r = {("cars", 224): 256, ("cars", 448): 512}.get((dataset, size), {224: 300, 448: 600}[size])
        # position embeddings: scipy.ndimage.zoom(order=1) (download_load_pt_weights.py resize_pos_embedding)
        model = dict(drop_path_rate=0.1, drop_path_schedule="constant", top_k=8, pos_embed_interpolation="scipy_zoom",
                     backbone_kwargs=dict(pretrained_cfg_overlay=dict(IMAGENET, interpolation="bicubic")))
        data = dict(resize=[r, r], trivial_augment=True, random_erasing=0.3, random_erasing_scale=[0.02, 0.4])
        train = dict(epochs=50, batch_size=8, optimizer="sgd", momentum=0.9, lr=0.01, weight_decay=0.0,
                     warmup_steps=500, min_lr=1e-5, label_smoothing=0.1, grad_clip=1.0)
    elif method == "transfg":
        r = 600 if size == 448 else 300  # Resize((600, 600)) for 448; 224 scaled alike
        # position embeddings to the overlapping grid: ndimage.zoom(order=1) (modeling.py load_from)
        model = dict(patch_stride=12, part_block_init="random", dropout=0.1, pos_embed_interpolation="scipy_zoom",
                     backbone_kwargs=dict(pretrained_cfg_overlay=dict(IMAGENET, interpolation="bilinear")))
        data = dict(resize=[r, r], auto_augment=dataset == "cars", trivial_augment=False, random_erasing=0.0)
        train = dict(steps=10000, batch_size=16, optimizer="momentum", momentum=0.9, lr=0.03, weight_decay=0.0,
                     warmup_steps=500, min_lr=0.0, label_smoothing=0.0, grad_clip=1.0)
    else:  # dcal, and the plain ViT trained with DCAL's settings
        model = dict(drop_path_rate=0.1,
                     backbone_kwargs=dict(pretrained_cfg_overlay=dict(IMAGENET, interpolation="bicubic")))
        data = dict(resize=[550, 550] if size == 448 else 256, trivial_augment=False, random_erasing=0.0)
        train = dict(epochs=100, batch_size=16, optimizer="adamw", lr=5e-4, lr_base_batch_size=512,
                     weight_decay=0.05, label_smoothing=0.0, grad_clip=None)
    return model, data, train


PAPER_TOP1 = {  # exactly these recipes carry a paper's number
    "glsim_cub_224": 90.93, "glsim_nabirds_224": 89.11, "glsim_cub_448": 92.1,
    "dcal_cub_448": 91.4, "dcal_cars_448": 93.4, "dcal_aircraft_448": 91.5,
    "vit_cub_448": 90.8, "vit_cars_448": 92.5, "vit_aircraft_448": 90.0,
    "transfg_cub_448": 91.7, "transfg_cars_448": 94.8, "transfg_nabirds_448": 90.8,
}
STRUCTURAL = dict(model={"method", "backbone", "pretrained", "img_size"},
                  data={"dataset", "root", "train_split", "test_split", "val_fraction", "options"})


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_setting_is_the_official_one(name):
    recipe = load_recipe(name)
    method, dataset, size = name.split("_")
    model, data, train = official(method, dataset, int(size))
    assert recipe["model"]["img_size"] == int(size)
    assert recipe["model"]["backbone"] == "vit_base_patch16_224.orig_in21k"  # Google's ViT-B_16.npz
    # every setting the recipe makes, and no other, is the official one
    assert {k: v for k, v in recipe["model"].items() if k not in STRUCTURAL["model"]} == model
    assert {k: v for k, v in recipe["data"].items() if k not in STRUCTURAL["data"]} == data
    assert recipe["train"] == train
    assert recipe["protocol"] == "val"  # the default; --set protocol=paper reproduces the paper's protocol
    assert recipe["expected_top1"] == PAPER_TOP1.get(name)


def test_sources_say_where_a_number_comes_from_or_why_there_is_none():
    assert "bar chart" in load_recipe("glsim_cub_448")["source"]  # not a table: say so
    assert "Table 4" in load_recipe("glsim_nabirds_224")["source"]
    assert "TACJu/TransFG issues" in load_recipe("transfg_cub_448")["source"]
    for name in ("glsim_cars_224", "glsim_aircraft_448"):
        assert "no Stanford Cars or FGVC-Aircraft column" in load_recipe(name)["source"]


def load_generator():
    spec = importlib.util.spec_from_file_location("make_recipes", ROOT / "scripts" / "make_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_yaml_files_are_what_the_generator_writes():
    written = load_generator().all_recipes()
    shipped = {p.name: p.read_text() for p in RECIPE_DIR.glob("*.yaml")}
    assert sorted(written) == sorted(shipped)
    stale = [name for name in written if written[name] != shipped[name]]
    assert not stale, f"run python scripts/make_recipes.py: {stale} differ"


def tiny_model_overrides():
    """Keep the recipe's settings (its backbone_kwargs included) on the tiny test backbone."""
    return {"model.backbone": TINY["backbone"], "model.pretrained": False,
            "model.backbone_kwargs.depth": TINY["backbone_kwargs"]["depth"]}


def steps(transform, kind):
    return [t for t in transform.transforms if isinstance(t, kind)]


def test_glsim_recipe_reaches_the_transforms_as_the_official_pipeline(tmp_path):
    root = make_cub(tmp_path / "CUB_200_2011")
    recipe = load_recipe("glsim_cub_448", {"data.root": str(root), **tiny_model_overrides()})
    model = fgvc.create_model(num_classes=200, **recipe["model"])
    data = build_recipe_data(recipe, model)
    train_tf, test_tf = data["train"].transform, data["test"].transform
    for tf in (train_tf, test_tf):
        (resize,) = steps(tf, v2.Resize)
        assert list(resize.size) == [600, 600] and resize.interpolation == v2.InterpolationMode.BICUBIC
        (normalize,) = steps(tf, v2.Normalize)
        assert normalize.mean == IMAGENET["mean"] and normalize.std == IMAGENET["std"]
    (erasing,) = steps(train_tf, v2.RandomErasing)
    assert erasing.p == 0.3 and erasing.scale == (0.02, 0.4)
    assert steps(train_tf, v2.TrivialAugmentWide) and not steps(train_tf, v2.AutoAugment)


def test_transfg_cars_recipe_adds_autoaugment_with_the_imagenet_policy():
    recipe = load_recipe("transfg_cars_448", tiny_model_overrides())
    model = fgvc.create_model(num_classes=3, **recipe["model"] | {"img_size": 64})
    train_tf = fgvc.data.build_transforms(model, train=True, resize=(80, 80), auto_augment=True)
    (aa,) = steps(train_tf, v2.AutoAugment)
    assert aa.policy == v2.AutoAugmentPolicy.IMAGENET
    assert steps(fgvc.data.build_transforms(model, train=True), v2.AutoAugment) == []  # off unless asked
    (resize,) = steps(train_tf, v2.Resize)
    assert resize.interpolation == v2.InterpolationMode.BILINEAR  # the official Image.BILINEAR


# ------------------------------------------------------------------------------------------------ protocol
def synthetic_recipe(protocol, expected=50.0):
    return dict(
        name="tiny", expected_top1=expected, source="a test", seeds=[0], protocol=protocol,
        model=dict(method="vit", img_size=48, **TINY),
        data=dict(dataset="synthetic", val_fraction=0.25, options=dict(num_classes=3, train=12, val=6, test=6)),
        train=dict(epochs=2, batch_size=4, lr=1e-3, progress=False),
    )


def test_protocol_paper_trains_on_the_whole_split_and_evaluates_the_final_checkpoint(tmp_path):
    assert "val" not in build_recipe_data(synthetic_recipe("paper"))  # val_fraction ignored: no held-out split
    result = train_recipe(synthetic_recipe("paper"), tmp_path)
    (run,) = result.runs
    assert run["checkpoint"].endswith("last.safetensors") and run["best_epoch"] is None
    report = (tmp_path / "results.md").read_text()
    assert "Protocol: paper" in report
    assert f"fgvc mean - paper = {run['test_top1'] - 50.0:+.2f}" in report  # compared: same protocol
    assert json.loads((tmp_path / "results.json").read_text())["protocol"] == "paper"


def test_protocol_val_chooses_on_validation_and_does_not_compare_with_the_paper(tmp_path):
    assert "val" in build_recipe_data(synthetic_recipe("val"))
    result = train_recipe(synthetic_recipe("val"), tmp_path)
    (run,) = result.runs
    assert run["checkpoint"].endswith("best.safetensors") and run["best_epoch"] is not None
    report = (tmp_path / "results.md").read_text()
    assert "Protocol: val (25% of the training split held out" in report
    assert "not compared" in report and "fgvc mean - paper" not in report
    assert json.loads((tmp_path / "results.json").read_text())["protocol"] == "val"


def test_protocol_defaults_to_val_and_unknown_ones_are_named():
    recipe = synthetic_recipe("val")
    del recipe["protocol"]
    assert "val" in build_recipe_data(recipe)
    with pytest.raises(ValueError, match="protocol must be one of \\['val', 'paper'\\], got 'test'"):
        load_recipe("glsim_cub_224", ["protocol=test"])
    assert load_recipe("glsim_cub_224", ["protocol=paper"])["protocol"] == "paper"
