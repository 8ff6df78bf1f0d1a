"""``train_recipe`` checks a recipe once: ``load_recipe`` validates what it reads, a mapping is validated
where it is given (after its overrides)."""

import pytest

import fgvc.engine.distributed
import fgvc.studies.recipe as recipe_module


class _Stop(Exception):
    """Raised where training would start: everything checked by then."""


@pytest.fixture
def validations(monkeypatch):
    calls = []
    validate = recipe_module.validate_recipe
    def counted(recipe, origin="recipe"):
        calls.append(origin)
        return validate(recipe, origin)

    monkeypatch.setattr(recipe_module, "validate_recipe", counted)

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(fgvc.engine.distributed, "init_distributed", stop)
    return calls


def test_a_recipe_read_from_a_file_is_validated_once(validations, tmp_path):
    with pytest.raises(_Stop):
        recipe_module.train_recipe("vit_cub_224", tmp_path, overrides=["train.lr=0.01"])
    assert len(validations) == 1


def test_a_recipe_given_as_a_mapping_is_validated_once_with_its_overrides(validations, tmp_path):
    recipe = recipe_module.load_recipe("vit_cub_224")
    validations.clear()
    with pytest.raises(ValueError, match="train"):
        recipe_module.train_recipe(recipe, tmp_path, overrides=["train.no_such_option=1"])
    with pytest.raises(_Stop):
        recipe_module.train_recipe(recipe, tmp_path, overrides=["train.lr=0.01"])
    assert len(validations) == 2
