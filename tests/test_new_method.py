"""A method defined here alone, registered, gets maps, the explorer, benchmark rows and demo support for free.

This is the proof of the explanation contract (``fgvc.methods.explain``, docs/adding_a_method.md): nothing in
the package knows the method below, yet every tool that shows or measures methods works with it.
"""

from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

import fgvc
from fgvc import viz
from fgvc.data import synthetic_splits
from fgvc.methods import (
    FGVCModel,
    GridMap,
    MapInfo,
    ModelOutput,
    SelectionStep,
    register_model,
    unregister_model,
)

NAME = "meanpool_test"
IMG = 48  # test_vit's 16 px patches: a 3 x 3 grid


class MeanPool(FGVCModel):
    """A ViT whose head reads the mean (or max) of the patch tokens; it selects nothing, but shows how close each
    patch is to the pooled feature."""

    own_maps = {"pooled_similarity": MapInfo("similarity to the pool", "cosine of each patch with the pooled feature")}
    variants = {"max": dict(pooling="max")}

    def __init__(self, *, pooling: str = "mean", **common):
        super().__init__(options=dict(pooling=pooling), **common)
        self.pooling = pooling
        self.head = nn.Linear(self.backbone.embed_dim, self.num_classes)

    def forward(self, x):
        bb = self.backbone
        _, patches = bb.patch_grid.split(bb(x).tokens)  # (B, N, D) after the final norm
        feature = patches.mean(1) if self.pooling == "mean" else patches.amax(1)  # (B, D)
        similarity = F.cosine_similarity(feature[:, None], patches, dim=-1).reshape(-1, *bb.grid_size)
        return ModelOutput(logits=self.head(feature), embedding=feature, selection_map=similarity)

    def explain(self, x):
        explanation = super().explain(x)  # the plain ViT's attention and rollout
        explanation.maps["pooled_similarity"] = GridMap(explanation.output.selection_map.float())
        return explanation

    def selection_steps(self, tokens, attentions):
        _, patches = self.backbone.patch_grid.split(tokens)  # (B, N, D)
        return [SelectionStep("similarity to the pool", lambda: F.cosine_similarity(patches.mean(1, True), patches, -1))]


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_model(NAME)(MeanPool)
    yield
    unregister_model(NAME)
    plt.close("all")


def tiny(num_classes=4, img_size=IMG, **options):
    return fgvc.create_model(NAME, num_classes=num_classes, img_size=img_size, **TINY, **options).eval()


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(num_classes=4, image_size=IMG, train=8, val=4, test=8, seed=0)["test"]


def test_it_is_registered_and_its_maps_are_the_plain_vits_and_its_own(data):
    assert NAME in fgvc.list_models() and "pooling" in fgvc.model_options(NAME)
    model = tiny()
    images = torch.stack([data[i][0] for i in range(3)])
    maps = viz.attention_maps(model, images)
    assert maps.kinds == viz.available_maps(model) == ["attention", "rollout", "pooled_similarity"]
    torch.testing.assert_close(maps.get("pooled_similarity"), model(images).selection_map)
    for kind in maps.kinds:
        assert maps.get(kind, layer=0, head=1).shape == (3, 3, 3)
    fig = viz.plot_maps(model, images, targets=[0, 1, 2])
    assert "similarity to the pool" in [ax.get_title() for ax in fig.axes]
    viz.plot_layer_heads(model, images[0])


def test_grad_cam_reads_its_last_block(data):
    pytest.importorskip("pytorch_grad_cam")
    images = torch.stack([data[i][0] for i in range(2)])
    assert viz.grad_cam(tiny(), images).shape == (2, 3, 3)


def test_the_explorer_offers_its_maps(data):
    pytest.importorskip("ipywidgets")
    explorer = viz.explore({"vit": fgvc.create_model("vit", num_classes=4, img_size=IMG, **TINY), NAME: tiny()}, data)
    explorer.method.value = NAME
    assert [k for _, k in explorer.kind.options] == ["attention", "rollout", "pooled_similarity"]
    explorer.kind.value = "pooled_similarity"
    assert explorer.layer.disabled and explorer.head.disabled
    assert "similarity to the pool" in explorer.figure._suptitle.get_text()
    assert bytes(explorer.image.value).startswith(b"\x89PNG")


def test_benchmark_rows_for_it_and_its_variant(capsys):
    result = fgvc.benchmark([NAME, f"{NAME}_max"], backbone="test_vit", backbone_kwargs=dict(depth=2), img_sizes=(IMG,),
                          batch_size=2, warmup=0, repeats=1, memory=False, timm_reference=False)
    assert [r.method for r in result.rows] == ["vit", NAME, f"{NAME}_max"]
    assert result.row(NAME, IMG).macs_ratio == pytest.approx(1.0, abs=0.01)  # the ViT's encoder, a mean and a head
    steps = [(c.method, c.step) for c in result.selection]
    assert (NAME, "similarity to the pool") in steps
    assert result.row(NAME, IMG).select_macs_pct > 0

    from fgvc.cli import main

    assert main(["benchmark", "--methods", NAME, "--backbone", "test_vit", "--depth", "2", "--img-size", str(IMG),
                 "--batch-size", "2", "--warmup", "0", "--repeats", "1", "--no-memory", "--no-progress",
                 "--no-train", "--no-timm"]) in (0, None)
    assert f"| {NAME} | {IMG} |" in capsys.readouterr().out


def test_the_demo_trains_and_compares_it(tmp_path, monkeypatch, capsys):
    from fgvc.cli import main
    from fgvc.studies import demo

    tiny_demo = replace(demo.QUICK, img_size=64, detail_px=15, train=20, val=10, test=10, epochs=1, batch_size=10)
    monkeypatch.setattr(demo, "QUICK", tiny_demo)
    monkeypatch.setattr(demo, "FULL", tiny_demo)
    assert main(["demo", "--quick", "--methods", NAME, "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"| {NAME} | 0 |" in printed
    assert (tmp_path / NAME / "best.safetensors").is_file()  # and it loads back through the registry
    assert fgvc.load_model(tmp_path / NAME / "best.safetensors").config["options"] == {"pooling": "mean"}
    assert (tmp_path / "where_they_look.png").stat().st_size > 10_000
