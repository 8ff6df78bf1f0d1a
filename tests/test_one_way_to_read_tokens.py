"""One way to split a token sequence (``PatchGrid.split``, from a backbone ``bb.patch_grid.split``) and one
to take the token for the whole image (``bb.global_token``); the code every method runs goes through them."""

import torch
from conftest import TINY

import fgvc
from fgvc.backbones.vit import EncoderOutput, ViTBackbone
from fgvc.layers.geometry import PatchGrid


def test_the_encoder_output_holds_tokens_and_the_backbone_reads_them():
    assert not hasattr(ViTBackbone, "split_tokens")
    assert not any(hasattr(EncoderOutput, name) for name in ("prefix", "patches", "cls"))
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY).eval()
    with torch.no_grad():
        tokens = model.backbone(torch.randn(2, 3, 32, 32)).tokens
    prefix, patches = model.backbone.patch_grid.split(tokens)
    assert prefix.shape[1] == 1 and patches.shape[1] == 4
    assert torch.equal(model.backbone.global_token(tokens), tokens[:, 0])


def test_glsim_and_transfg_split_their_tokens_through_the_patch_grid(monkeypatch):
    calls = []
    split = PatchGrid.split

    def counted(grid, tokens):
        calls.append(tokens.shape)
        return split(grid, tokens)

    monkeypatch.setattr(PatchGrid, "split", counted)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, **TINY).eval()(x)
        assert calls, "GLSim's selection did not split its tokens through PatchGrid.split"
        calls.clear()
        fgvc.create_model("transfg", num_classes=3, img_size=48, **TINY).eval()(x)
        assert calls, "TransFG's part selection did not split its tokens through PatchGrid.split"
