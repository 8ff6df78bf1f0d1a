"""One settings shape: each section of a recipe is a settings dataclass whose fields state every default,
check and help once; unknown keys are refused by the same code everywhere; flags come from the fields."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from fgvc.settings import (
    DataConfig,
    RecipeSettings,
    RecipeTrainOptions,
    TrainConfig,
    add_flags,
    describe,
    flag_changes,
    refuse_unknown,
)
from fgvc.studies.recipe import apply_overrides, build_recipe_data, load_recipe, validate_recipe

PACKAGE = Path(__file__).resolve().parents[1] / "fgvc"
SYNTHETIC = {"model": {"method": "vit", "backbone": "vit_tiny_patch16_224", "img_size": 32},
             "data": {"dataset": "synthetic", "options": {"num_classes": 3, "train": 6, "val": 3, "test": 3}},
             "train": {"epochs": 1}}


def test_a_recipe_section_accepts_exactly_its_settings_fields():
    for key in DataConfig.names():
        recipe = apply_overrides(SYNTHETIC, {f"data.{key}": DataConfig.defaults()[key]})
        recipe["data"]["dataset"] = "synthetic"
        validate_recipe(recipe)
    for key in RecipeTrainOptions.train_keys():
        assert key in TrainConfig.names() or key in RecipeTrainOptions.names()
    assert "seed" not in RecipeTrainOptions.train_keys()  # one run per seed: the recipe's seeds say which


@pytest.mark.parametrize("key, section", [("data.val_fractoin", "data"), ("train.lrr", "train"),
                                          ("seedz", "top-level")])
def test_an_unknown_key_gets_one_message_from_a_recipe_an_override_and_a_settings_object(key, section):
    with pytest.raises(ValueError, match=rf"unknown {section} keys \[.{key.split('.')[-1]}.\] \(did you mean"):
        validate_recipe(apply_overrides(SYNTHETIC, {key: 1}))
    with pytest.raises(ValueError, match=rf"unknown {section} keys"):
        load_recipe("vit_cub_224", [f"{key}=1"])
    if section == "data":
        with pytest.raises(ValueError, match=r"unknown data keys \['val_fractoin'\] \(did you mean 'val_fraction'\?\)"):
            DataConfig.from_mapping({"dataset": "cub", "val_fractoin": 0.2})


def test_values_are_checked_by_the_field_and_named_as_the_recipe_spells_them():
    with pytest.raises(ValueError, match=r"data\.val_fraction must be in \[0, 1\), got 1\.5"):
        validate_recipe(apply_overrides(SYNTHETIC, {"data.val_fraction": 1.5}))
    with pytest.raises(ValueError, match=r"train\.batch_size must be an integer >= 1, got 0"):
        validate_recipe(apply_overrides(SYNTHETIC, {"train.batch_size": 0}))
    with pytest.raises(ValueError, match=r"protocol must be one of \['val', 'paper'\]"):
        validate_recipe(apply_overrides(SYNTHETIC, {"protocol": "papers"}))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        TrainConfig(batch_size=0)


def test_the_defaults_a_recipe_leaves_out_are_the_fields_defaults():
    splits = build_recipe_data(SYNTHETIC)
    assert set(splits) == {"train", "val", "test"}  # protocol val (RecipeSettings' default) keeps a val split
    assert RecipeSettings.of(SYNTHETIC).protocol == "val" and RecipeSettings.of(SYNTHETIC).seeds == (0,)
    assert DataConfig.from_mapping({"dataset": "cub", "resize": 256}).test_resize_value() == 256
    assert DataConfig.from_mapping({"dataset": "cub", "resize": 256, "test_resize": None}).test_resize_value() is None


#: The recipe settings that have a default other than null (a default a module could restate).
SETTINGS_KEYS = {k for cls in (DataConfig, RecipeSettings, RecipeTrainOptions) for k, v in cls.defaults().items()
                 if v is not None}


def test_no_module_restates_a_recipe_default_with_get():
    """``data.get("val_fraction", 0.1)`` states a default a second time; the settings classes hold it."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in SETTINGS_KEYS and isinstance(node.args[1], (ast.Constant, ast.List))):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} .get({node.args[0].value!r}, ...)")
    assert not offenders, offenders


def test_flags_are_generated_from_the_fields_and_checked_by_them():
    parser = argparse.ArgumentParser()
    add_flags(parser, DataConfig, names=["val_fraction", "trivial_augment", "random_erasing_scale"])
    args = parser.parse_args(["--val-fraction", "0.2", "--trivial-augment", "--random-erasing-scale", "0.1,0.2"])
    changes = flag_changes(DataConfig, args)
    assert changes == {"val_fraction": 0.2, "trivial_augment": True, "random_erasing_scale": (0.1, 0.2)}
    assert flag_changes(DataConfig, parser.parse_args([])) == {}
    with pytest.raises(ValueError, match=r"data\.val_fraction must be in \[0, 1\)"):
        DataConfig.from_mapping({"dataset": "cub", **flag_changes(DataConfig, parser.parse_args(["--val-fraction", "2"]))})
    assert "(default: 0.1)" in " ".join(parser.format_help().split())


def test_refuse_unknown_names_the_near_miss_and_the_allowed_keys():
    with pytest.raises(ValueError, match=r"^x\.yaml: unknown model keys \['topk'\] for method 'glsim' "
                                         r"\(did you mean 'top_k'\?\); allowed: \['method', 'top_k'\]$"):
        refuse_unknown(["topk"], ["method", "top_k"], "model", "x.yaml", context=" for method 'glsim'")
    refuse_unknown(["top_k"], ["top_k"], "model")  # known keys pass


def test_every_setting_is_described_with_its_default_and_help():
    lines = describe(DataConfig)
    assert len(lines) == len(DataConfig.names())
    assert any(line.startswith("data.val_fraction = 0.1") and "held out" in line for line in lines)
    assert all(len(line.split("  ")) > 1 for line in describe(TrainConfig, prefix="train."))


@pytest.mark.parametrize("command, settings_path, skipped", [
    ("demo", "fgvc.studies.demo:DemoSettings", {"seed"}),  # --seeds runs one or more
    ("pretrain", "fgvc.studies.pretrain:PretrainSettings", set()),
])
def test_the_demo_and_pretraining_have_a_flag_per_setting_checked_by_the_field(command, settings_path, skipped):
    import importlib

    from fgvc.cli import build_parser

    module, name = settings_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    help_text = " ".join(_help_of(build_parser(), command).split())
    for field_name in set(cls.names()) - skipped:
        assert f"--{field_name.replace('_', '-')}" in help_text, field_name
    args = build_parser().parse_args([command, "--batch-size", "16", "--lr", "2e-3"])
    changes = flag_changes(cls, args)
    assert changes == {"batch_size": 16, "lr": 0.002}
    assert cls.from_mapping(changes).lr == 0.002
    with pytest.raises(ValueError, match=rf"{cls.section}\.batch_size must be an integer >= 1, got 0"):
        cls.from_mapping(flag_changes(cls, build_parser().parse_args([command, "--batch-size", "0"])))
    with pytest.raises(ValueError, match=rf"unknown {cls.section} keys \['lrr'\] \(did you mean 'lr'\?\)"):
        cls.from_mapping({"lrr": 1})


def _help_of(parser: argparse.ArgumentParser, command: str) -> str:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def test_the_demo_trains_with_fit_options_of_the_same_names():
    from fgvc.studies.demo import FULL

    assert set(FULL.fit_options()) <= set(TrainConfig.names())
    TrainConfig(**FULL.fit_options())  # every value passes fit's own checks
