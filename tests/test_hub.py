"""fgvc models where researchers' tools already are: timm's data config, Hugging Face folders and the Hub
cache (offline, through the real download code), a model card, and plain timm state dicts."""

import json
import re
import shutil

import numpy as np
import pytest
import timm
import torch
from conftest import TINY
from PIL import Image

import fgvc
from fgvc.cli import main
from fgvc.data import build_transforms

CLASSES = ["Sooty_Albatross", "Parakeet_Auklet", "Yellow_Blackbird"]


def glsim_model():
    model = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, **TINY).eval()
    model.class_names = list(CLASSES)
    return model


@pytest.mark.parametrize(
    "backbone, size",
    [("test_vit", (48, 64)), ("vit_tiny_patch16_224.augreg_in21k", (48, 48)), ("deit_tiny_patch16_224", (64, 48))],
)
def test_timm_resolve_data_config_and_build_transforms_agree(backbone, size):
    model = fgvc.create_model("vit", num_classes=3, img_size=size, backbone=backbone, backbone_kwargs=dict(depth=1))
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, *size)  # the model's size, not the backbone's 224
    assert tuple(cfg["mean"]) == tuple(model.data_config["mean"]) and tuple(cfg["std"]) == tuple(model.data_config["std"])
    assert model.pretrained_cfg["num_classes"] == 3 and model.default_cfg == model.pretrained_cfg
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8))
    theirs = timm.data.create_transform(**cfg)(image)
    ours = build_transforms(model, train=False)(image)
    assert theirs.shape == ours.shape == (3, *size)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_augreg_and_imagenet_backbones_have_their_own_normalization():
    augreg = fgvc.create_model("vit", num_classes=3, img_size=64, backbone="vit_tiny_patch16_224.augreg_in21k",
                               backbone_kwargs=dict(depth=1))
    deit = fgvc.create_model("vit", num_classes=3, img_size=64, backbone="deit_tiny_patch16_224",
                             backbone_kwargs=dict(depth=1))
    assert timm.data.resolve_data_config(model=augreg)["mean"] == (0.5, 0.5, 0.5)
    assert timm.data.resolve_data_config(model=deit)["mean"] == timm.data.IMAGENET_DEFAULT_MEAN


def test_save_pretrained_and_from_pretrained_folder_round_trip_with_a_model_card(tmp_path):
    model = glsim_model()
    x = torch.randn(2, 3, 48, 48)
    folder = fgvc.save_pretrained(model, tmp_path / "hub", dataset="cub", metrics={"top1": 91.25}, license="mit")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = fgvc.from_pretrained(folder)
    assert loaded.method == "glsim" and loaded.class_names == CLASSES and not loaded.training
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "glsim" and config["options"]["top_k"] == 2 and config["class_names"] == CLASSES
    assert config["pretrained_cfg"]["input_size"] == [3, 48, 48] and config["fgvc_version"] == fgvc.__version__
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: fgvc\n") and "license: mit" in card and "- cub" in card
    for text in ("# glsim on test_vit", "top_k=2", "| top1 | 91.25 |", f"| fgvc version | {fgvc.__version__} |",
                 "| classes | 3 |", "48 x 48 px", "fgvc.from_pretrained("):
        assert text in card, text


def populate_hub_cache(cache, repo_id, folder, commit="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub's own downloads leave: refs/main -> snapshots/<commit>/<files>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_from_pretrained_reads_a_repo_id_from_the_hub_cache_offline(tmp_path):
    import huggingface_hub

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest: nothing may be downloaded
    model = glsim_model()
    populate_hub_cache(tmp_path / "cache", "someone/tiny-glsim", fgvc.save_pretrained(model, tmp_path / "hub"))
    loaded = fgvc.from_pretrained("someone/tiny-glsim", cache_dir=tmp_path / "cache")  # hf_hub_download
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert loaded.class_names == CLASSES
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
        fgvc.from_pretrained("someone/not-cached", cache_dir=tmp_path / "cache")


def test_push_to_hub_creates_the_repo_and_uploads_the_folder_with_a_card_naming_it(tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls["files"] = {p.name: p.read_bytes() for p in sorted(__import__("pathlib").Path(folder_path).iterdir())}
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert fgvc.push_to_hub(glsim_model(), "someone/tiny-glsim", private=True, metrics={"top1": 50.0}) == "commit"
    assert calls["create"] == ("someone/tiny-glsim", dict(private=True, exist_ok=True, repo_type="model"))
    assert set(calls["files"]) == {"README.md", "config.json", "model.safetensors"}
    assert b"fgvc.from_pretrained('someone/tiny-glsim')" in calls["files"]["README.md"]


def test_export_timm_loads_in_plain_timm_with_the_same_logits(tmp_path, capsys):
    model = fgvc.create_model("vit", num_classes=3, img_size=48, **TINY).eval()
    torch.nn.init.normal_(model.head.weight)  # a head that is not the zero default
    ckpt = fgvc.save_model(model, tmp_path / "vit.safetensors", class_names=CLASSES)
    assert main(["export", str(ckpt), str(tmp_path / "timm.safetensors"), "--timm"]) == 0
    call = re.search(r"timm\.create_model\(.*\)", capsys.readouterr().out).group(0)
    assert "num_classes=3" in call and "img_size=(48, 48)" in call and "depth=2" in call
    plain = eval(call, {"timm": timm}).eval()  # exactly the line fgvc printed
    assert type(plain).__module__.startswith("timm.")
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(plain(x), model(x).logits)


def test_export_timm_of_another_method_is_its_fine_tuned_backbone():
    model = glsim_model()
    path, call = fgvc.export_timm(model, "/tmp/fgvc_test_glsim_timm.safetensors")
    assert "num_classes=0" in call
    plain = eval(call, {"timm": timm}).eval()
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(plain(x), model.backbone.pool(model.backbone(x).tokens))
    path.unlink()
    strided = fgvc.create_model("vit", num_classes=3, img_size=48, patch_stride=12, **TINY)
    with pytest.raises(ValueError, match="overlapping patches"):
        fgvc.export_timm(strided, "/tmp/x.safetensors")


def test_fgvc_export_writes_a_hub_folder_that_from_pretrained_reads(tmp_path, capsys):
    ckpt = fgvc.save_model(glsim_model(), tmp_path / "run" / "best.safetensors", class_names=CLASSES)
    (tmp_path / "run" / "test.json").write_text(json.dumps(dict(seed=0, test_top1=75.0, test_top5=100.0)))
    assert main(["export", str(ckpt), str(tmp_path / "hub")]) == 0
    assert fgvc.from_pretrained(tmp_path / "hub").class_names == CLASSES
    assert "| top1 | 75.00 |" in (tmp_path / "hub" / "README.md").read_text()  # the run's test metrics
