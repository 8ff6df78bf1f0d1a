"""Names nothing used are gone: the tests check the code path the methods run instead."""

import fgvc.methods.glsim as glsim
from fgvc import viz
from fgvc.backbones.classifier import TimmBackbone


def test_unused_names_are_not_offered():
    assert not hasattr(TimmBackbone, "is_vit")  # ``is_vit_family(name)`` answers before a backbone is built
    assert not hasattr(viz, "MAP_KINDS") and "MAP_KINDS" not in viz.__all__  # ``viz.available_maps(model)``
    for name in ("cls_patch_similarity", "select_box"):  # ``GLSim.select``: ``patch_similarity``, ``top_box``
        assert not hasattr(glsim, name) and name not in glsim.__all__
