"""A timm classifier behind the plain baseline stores its weights as ``backbone.vit.*``, as ViT backbones do:
the checkpoint format, which files written so far use, loads unchanged."""

import json

import timm
import torch
from safetensors.torch import load_file, save_file

import fgvc
from fgvc.storage.checkpoint import load_model, load_weights, read_metadata, save_model


def test_a_cnn_checkpoint_keeps_the_backbone_vit_keys_and_loads(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, backbone="test_resnet").eval()
    path = save_model(model, tmp_path / "cnn.safetensors")
    keys = set(load_file(path))
    timm_keys = timm.create_model("test_resnet", num_classes=0).state_dict()
    assert keys == {f"backbone.vit.{k}" for k in timm_keys} | {"head.weight", "head.bias"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).eval()(x).logits, model(x).logits)


def test_a_hand_written_checkpoint_in_that_format_loads(tmp_path):
    """timm's own state dict under ``backbone.vit.``, with a head: what any such file holds."""
    source = fgvc.create_model("vit", num_classes=3, img_size=32, backbone="test_resnet")
    meta = read_metadata(save_model(source, tmp_path / "source.safetensors"))
    net = timm.create_model("test_resnet", num_classes=0)  # weights of its own random draw
    state = {f"backbone.vit.{k}": v.clone() for k, v in net.state_dict().items()}
    state.update({"head.weight": torch.randn(3, net.num_features), "head.bias": torch.randn(3)})
    path = tmp_path / "written.safetensors"
    save_file(state, path, metadata={"fgvc": json.dumps(meta)})
    target = fgvc.create_model("vit", num_classes=3, img_size=32, backbone="test_resnet").eval()
    load_weights(target, path)
    for key, value in state.items():
        torch.testing.assert_close(target.state_dict()[key], value)
