"""``ModelOutput.selection_map``: the map over patches a method selects with, named for what it holds
(GLSim's CLS-patch similarity, DCAL's attention rollout); ``similarity`` is its deprecated, read-only name."""

import pytest
import torch
from conftest import TINY

import fgvc
from fgvc import ModelOutput


def test_glsim_and_dcal_give_the_map_they_select_with_as_selection_map():
    x = torch.randn(2, 3, 48, 48)  # 3 x 3 patches
    glsim = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, **TINY).eval()
    dcal = fgvc.create_model("dcal", num_classes=3, img_size=48, **TINY).eval()
    with torch.no_grad():
        out = glsim(x)
        tokens = glsim.backbone(x).tokens
        assert torch.equal(out.selection_map, glsim.select(tokens)[0])
        rollout = dcal(x).selection_map
    assert rollout.shape == (2, 3, 3)
    assert "selection_map=(2, 3, 3)" in repr(out)


def test_similarity_is_a_deprecated_read_only_name_of_selection_map():
    out = ModelOutput(logits=torch.zeros(1, 2), selection_map=torch.ones(1, 3, 3))
    with pytest.warns(DeprecationWarning, match="selection_map"):
        assert out.similarity is out.selection_map
    with pytest.raises(AttributeError):
        out.similarity = torch.zeros(1, 3, 3)
    with pytest.raises(TypeError):
        ModelOutput(logits=torch.zeros(1, 2), similarity=torch.ones(1, 3, 3))
