"""fgvc.viz: maps, overlays, figures, the pointing game, error analysis and the explorer widget."""

import datetime
import io
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import TINY
from matplotlib.figure import Figure
from PIL import Image

import fgvc
from fgvc import viz
from fgvc.data import synthetic_splits
from fgvc.engine.evaluate import pointing_game

METHODS = ["vit", "glsim", "dcal", "transfg"]
IMG = (32, 48)  # non-square on purpose: an 8 px patch grid of 4 rows x 6 columns
GRID = (4, 6)


def tiny(method, num_classes=4):
    kwargs = dict(TINY, backbone_kwargs=dict(TINY["backbone_kwargs"], patch_size=8))
    if method == "glsim":
        kwargs["top_k"] = 3
    return fgvc.create_model(method, num_classes=num_classes, img_size=IMG, **kwargs).eval()


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(num_classes=4, image_size=IMG, train=8, val=4, test=12, seed=0)["test"]


@pytest.fixture(scope="module")
def images(data):
    return torch.stack([data[i][0] for i in range(3)])  # (3, 3, 32, 48)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------------ maps
@pytest.mark.parametrize("method", METHODS)
def test_every_map_of_every_method_is_a_grid_over_the_patches(method, images):
    maps = viz.attention_maps(tiny(method), images)
    assert maps.kinds == viz.available_maps(tiny(method))
    own = {"vit": [], "glsim": ["similarity"], "dcal": ["glca_queries", "glca_attention"], "transfg": ["parts"]}
    assert maps.kinds == ["attention", "rollout", *own[method]]
    assert maps.depth == 2 and maps.num_heads == 2
    for kind in maps.kinds:
        for layer in (0, 1, -1):
            for head in (None, 0, 1):
                heat = maps.get(kind, layer=layer, head=head)
                assert heat.shape == (3, *GRID), (kind, layer, head)
                assert torch.isfinite(heat).all()
    with pytest.raises(ValueError, match="not available"):
        maps.get("no_such_map")
    with pytest.raises(ValueError, match="layer=5 out of range"):
        maps.get("attention", layer=5)


@pytest.mark.parametrize("method", ["vit", "glsim", "dcal"])
def test_per_layer_and_head_maps_are_the_backbones_recorded_cls_attention(method, images):
    model = tiny(method)
    maps = viz.attention_maps(model, images)
    with torch.no_grad():
        recorded = model.backbone(images, return_attention=True).attentions  # per layer (B, heads, T, T)
    for layer, attn in enumerate(recorded):
        cls_row = attn[:, :, 0, 1:]  # (B, heads, 24): CLS to the patches
        for head in range(2):
            torch.testing.assert_close(maps.get("attention", layer, head), cls_row[:, head].reshape(3, *GRID))
        torch.testing.assert_close(maps.get("attention", layer), cls_row.mean(1).reshape(3, *GRID))
    rollout = fgvc.layers.rollout.rollout_map(recorded, 1, GRID)
    torch.testing.assert_close(maps.get("rollout"), rollout)


def test_method_maps_read_the_models_own_selection(images):
    glsim = viz.attention_maps(tiny("glsim"), images)
    torch.testing.assert_close(glsim.get("similarity"), glsim.output.selection_map)

    model = tiny("dcal")
    with torch.no_grad():
        plain = model(images)
    assert "glca_attention" not in plain.extras  # only when asked for: no cost otherwise
    dcal = viz.attention_maps(model, images)
    assert model.return_glca_attention is False  # explain asks for the map itself: no flag is flipped
    torch.testing.assert_close(dcal.output.logits, plain.logits)  # asking for the map changes nothing else
    queries = dcal.output.extras["glca_queries"]  # (B, R)
    r = queries.shape[1]
    attn = dcal.output.extras["glca_attention"]  # (B, heads, R, T) probabilities
    assert attn.shape == (3, 2, r, 1 + 24)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, r))
    mask = dcal.get("glca_queries").reshape(3, -1)
    assert mask.sum(1).tolist() == [r] * 3
    assert all(mask[b, queries[b]].eq(1).all() for b in range(3))
    expected = attn[:, 1, :, 1:].mean(1).reshape(3, *GRID)  # head 1, mean over the queries
    torch.testing.assert_close(dcal.get("glca_attention", head=1), expected)

    transfg = viz.attention_maps(tiny("transfg"), images)
    parts = transfg.output.extras["part_indices"]  # (B, heads)
    counts = transfg.get("parts").reshape(3, -1)
    assert counts.sum(1).tolist() == [2.0] * 3  # one part per head
    one = transfg.get("parts", head=1).reshape(3, -1)
    assert one.sum(1).tolist() == [1.0] * 3 and all(one[b, parts[b, 1]] == 1 for b in range(3))
    # TransFG's last layer is its part block: CLS attention lands on the selected parts only
    last = transfg.get("attention", layer=-1).reshape(3, -1)
    for b in range(3):
        outside = torch.ones(24, dtype=torch.bool)
        outside[parts[b]] = False
        assert last[b, outside].eq(0).all() and last[b, parts[b]].gt(0).all()


# -------------------------------------------------------------------------------------- overlays, figures
def test_overlay_places_a_non_square_grid_exactly_on_an_image_of_any_resolution():
    # the model saw 32 x 48 with 8 px patches (4 x 6 grid); the image is shown at twice the size
    image = np.random.default_rng(0).random((64, 96, 3))
    heat = torch.arange(24.0).reshape(GRID)
    fig = viz.overlay_map(image, heat, input_size=IMG, patch_size=(8, 8))
    assert isinstance(fig, Figure)
    shown_map = fig.axes[0].images[1]
    assert shown_map.get_extent() == [-0.5, 95.5, 63.5, -0.5]  # covers the image, pixel edges
    np.testing.assert_allclose(shown_map.get_array(), heat.numpy() / 23)  # normalised per panel to [0, 1]
    grey = fig.axes[0].images[0].get_array()
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])  # desaturated
    assert len(fig.axes) == 2  # a standalone overlay has its colorbar
    # overlapping patches: 16 px patches with stride 8 -> cell centres at 8, 16, ...; each cell 8 px wide
    assert viz.grid_extent((3, 5), (32, 48), (16, 16), (8, 8)) == (3.5, 43.5, 27.5, 3.5)
    up = viz.upsample_map(heat[None], (64, 96))
    assert up.shape == (1, 64, 96) and up.min() == 0 and up.max() == 1
    with pytest.raises(ValueError, match="rows, cols"):
        viz.overlay_map(image, torch.zeros(24))


@pytest.mark.parametrize("method", METHODS)
def test_every_figure_is_returned_and_savable(method, data, images, tmp_path):
    model = tiny(method)
    gt = data.input_boxes[:3] * torch.tensor([48, 32, 48, 32])
    figures = {
        "maps": viz.plot_maps(model, images, targets=[0, 1, 2], gt_boxes=gt, class_names=data.classes),
        "layers": viz.plot_layer_heads(model, images[0]),
    }
    for kind in viz.available_maps(model):
        figures[kind] = viz.plot_maps(model, images[:1], [kind], layer=0, head=1)
    if method == "glsim":
        figures["selection"] = viz.plot_selection(model, images, gt_boxes=gt)
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        path = tmp_path / f"{method}_{name}.png"
        fig.savefig(path)
        assert Image.open(path).size[0] > 100
    # one column per kind plus the image and the crop, one row per image; the footer: colorbar and legend
    assert len(figures["maps"].axes) == 3 * (len(viz.available_maps(model)) + 2) + 2


def test_old_names_still_work():
    from fgvc.viz import denormalize, plot_selection  # used by fgvc.studies.demo and the quickstart notebook

    x = torch.zeros(1, 3, 2, 2)
    assert denormalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).shape == (1, 2, 2, 3)
    assert callable(plot_selection)


# ----------------------------------------------------------------------------------------- localization
def test_pointing_game_by_hand():
    # 2 x 3 grid of 8 px patches: the peak cell's centre is the point
    maps = torch.zeros(4, 2, 3)
    maps[0, 1, 0] = 1.0  # centre (x, y) = (4, 12)
    maps[1, 1, 0] = 1.0
    maps[2, 0, 2] = 1.0  # centre (20, 4)
    maps[3] = 0.5  # ties: the first cell, centre (4, 4)
    boxes = torch.tensor(
        [
            [0.0, 8.0, 8.0, 16.0],  # contains (4, 12)
            [5.0, 8.0, 24.0, 16.0],  # starts right of x = 4
            [16.0, 0.0, 20.0, 8.0],  # exclusive end: x = 20 is outside
            [4.0, 4.0, 5.0, 5.0],  # the inclusive start holds (4, 4)
        ]
    )
    assert pointing_game(maps, boxes, (8, 8)).tolist() == [True, False, False, True]
    # overlapping 16 px patches with stride 8: cell (1, 0) is centred at (8, 16)
    assert pointing_game(maps[:1], torch.tensor([[6.0, 14.0, 10.0, 18.0]]), (16, 16), (8, 8)).tolist() == [True]


def test_evaluate_reports_the_pointing_game_of_the_output_map(data):
    model = tiny("glsim")
    result = fgvc.evaluate(model, data)
    with torch.no_grad():
        out = model(torch.stack([data[i][0] for i in range(len(data))]))
    gt = data.input_boxes * torch.tensor([48, 32, 48, 32])
    expected = 100.0 * pointing_game(out.selection_map, gt, (8, 8)).float().mean().item()
    assert result.pointing_game == pytest.approx(expected)
    assert result.summary()["pointing_game"] == pytest.approx(expected)
    plain = fgvc.evaluate(tiny("vit"), data)  # no map in the output: no pointing game
    assert plain.pointing_game is None and "pointing_game" not in plain.summary()


# -------------------------------------------------------------------------------------- error analysis
def test_confused_pairs_of_a_made_up_confusion_matrix():
    cm = np.array(
        [
            [5, 3, 0, 0],  # 0 -> 1 three times (3 of 8)
            [1, 6, 0, 3],  # 1 -> 3 three times (3 of 10), 1 -> 0 once
            [0, 0, 9, 0],  # never confused
            [0, 0, 2, 4],  # 3 -> 2 twice
        ]
    )
    pairs = viz.confused_pairs(cm, k=3)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [(0, 1, 3), (1, 3, 3), (3, 2, 2)]
    assert pairs[0].rate == pytest.approx(3 / 8)  # equal counts: the higher rate first
    assert len(viz.confused_pairs(cm)) == 4 and viz.confused_pairs(np.eye(3, dtype=int)) == []
    with pytest.raises(ValueError, match="square"):
        viz.confused_pairs(np.zeros((2, 3)))


def test_confused_pair_figure_shows_the_mistakes_and_the_other_class(data):
    predictions = np.array(data.targets)
    predictions[0] = 1  # sample 0 (class 0) mistaken for class 1
    fig = viz.plot_confused_pair(data, (0, 1), predictions, n=3)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "#0"  # the mistake first
    assert titles[3] == "#1"  # then class 1, classified right (labels cycle i % 4)
    mistakes, right = (sub._suptitle.get_text() for sub in fig.subfigs)  # one title per row
    assert "1 image" in mistakes and data.classes[0] in mistakes and data.classes[1] in right


# -------------------------------------------------------------------------------------------- explorer
def test_explorer_redraws_when_its_controls_change(data):
    pytest.importorskip("ipywidgets")
    explorer = viz.explore({"vit": tiny("vit"), "dcal": tiny("dcal")}, data)
    assert explorer.kind.value == "attention" and explorer.layer.value == 2  # the last layer first
    shown = [bytes(explorer.image.value)]  # the widget keeps a memoryview
    assert shown[0].startswith(b"\x89PNG")
    assert "true label:</b> " + data.classes[data.targets[0]] in explorer.info.value
    assert explorer.info.value.count("<tr>") == 4  # top-5 of 4 classes

    def changed():
        assert bytes(explorer.image.value) != shown[-1]
        shown.append(bytes(explorer.image.value))

    explorer.layer.value = 1
    changed()
    assert "layer 1/2" in explorer.figure._suptitle.get_text()
    explorer.head.value = "1"
    changed()
    explorer.kind.value = "rollout"
    changed()
    assert explorer.layer.disabled and explorer.head.disabled  # the rollout has neither
    explorer.index.value = 5
    changed()
    assert "#5" in explorer.figure.axes[0].get_title()

    explorer.method.value = "dcal"  # its own maps appear
    assert [k for _, k in explorer.kind.options] == viz.available_maps(explorer.model)
    changed()
    explorer.kind.value = "glca_attention"
    changed()
    assert not explorer.head.disabled

    explorer.cls.value = 2  # the next image of class 2
    assert data.targets[explorer.index.value] == 2 and explorer.source.value == "class"
    assert "true label:</b> " + data.classes[2] in explorer.info.value

    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(buf, format="PNG")
    content = buf.getvalue()
    explorer.upload.value = (  # as the browser's FileUpload sends a file
        dict(name="red.png", type="image/png", size=len(content), content=memoryview(content),
             last_modified=datetime.datetime.now(datetime.timezone.utc)),
    )
    changed()
    assert "uploaded red.png" in explorer.figure.axes[0].get_title()
    assert explorer.source.value == "upload" and "unknown" in explorer.info.value
    explorer.method.value = "vit"  # the upload is resized for whichever model is chosen
    changed()
    explorer.index.value = 3  # moving the index slider leaves the upload
    changed()
    assert explorer.source.value == "index" and "#3" in explorer.figure.axes[0].get_title()


def test_explorer_error_view_lists_the_most_confused_pairs(data):
    pytest.importorskip("ipywidgets")
    explorer = viz.explore(tiny("vit"), data)
    assert explorer.pairs.options == ()
    explorer.analyse.click()
    result = explorer.results["vit"]
    pairs = viz.confused_pairs(result.confusion_matrix)
    assert len(explorer.pairs.options) == len(pairs) > 0  # a random model makes mistakes
    first = pairs[0]
    assert explorer.pairs.options[0][0].startswith(f"{data.classes[first.true]} -> {data.classes[first.predicted]}")
    assert bytes(explorer.error_image.value).startswith(b"\x89PNG")
    if len(pairs) > 1:
        before = bytes(explorer.error_image.value)
        explorer.pairs.value = 1
        assert bytes(explorer.error_image.value) != before


# -------------------------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("method", METHODS)
def test_grad_cam_and_finer_cam_use_the_real_patch_grid(method, images):
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    model = tiny(method)
    for kind in ("gradcam", "finercam"):
        cam = viz.grad_cam(model, images, targets=[0, 1, 2], method=kind)
        assert cam.shape == (3, *GRID)  # a 4 x 6 grid, not pytorch-grad-cam's 14 x 14
        assert cam.min() >= 0 and cam.max() <= 1
    assert not model.training


def test_grad_cam_without_the_package_names_it(monkeypatch, images):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(ImportError, match="pip install grad-cam"):
        viz.grad_cam(tiny("vit"), images)


# ------------------------------------------------------------------------------ figures for a paper
LONG = [f"{i:03d}.Extraordinarily_Long_Species_Name_Number_{i}_of_the_Fine_Grained_Benchmark" for i in range(50)]


def _colour(patch):
    return matplotlib.colors.to_hex(patch.get_edgecolor())


@pytest.mark.parametrize("method", METHODS)
def test_maps_grid_titles_each_row_and_draws_the_true_box_on_every_map(method, data, images):
    from matplotlib.patches import Rectangle

    model = tiny(method, num_classes=50)  # many classes, long names, a non-square input
    gt = data.input_boxes[:3] * torch.tensor([48, 32, 48, 32])
    fig = viz.plot_maps(model, images, targets=[3, 4, 5], gt_boxes=gt, class_names=LONG, indices=[7, 8, 9])
    rows, kinds = fig.subfigs[:3], viz.available_maps(model)
    preds = viz.attention_maps(model, images).output.logits.argmax(1).tolist()
    for i, row in enumerate(rows):
        title = row._suptitle.get_text().replace("\n", " ")
        assert title.startswith(f"{method}  |  #{7 + i}  |  predicted: ")
        assert f"true: {viz.pretty_name(LONG[3 + i])}" in title  # the full name, without its CUB number
        assert ("correct" if preds[i] == 3 + i else "wrong") in title
        image_ax, *map_axes, crop_ax = row.axes
        for ax, kind in zip(map_axes, kinds, strict=True):
            boxes = [_colour(p) for p in ax.patches if isinstance(p, Rectangle)]
            assert matplotlib.colors.to_hex(viz.core.TRUE_COLOR) in boxes, (kind, "true box on every map")
            grey = ax.images[0].get_array()
            assert np.allclose(grey[..., 0], grey[..., 2]), "maps are drawn over the desaturated image"
            if kind in ("glca_queries", "parts"):  # selections are outlined, not tinted
                assert len(ax.images) == 1 and ax.collections, kind
            else:
                assert len(ax.images) == 2 and ax.images[1].get_array().max() == pytest.approx(1.0)
        assert matplotlib.colors.to_hex(viz.core.TRUE_COLOR) in [_colour(p) for p in image_ax.patches]
    footer = fig.subfigs[3]
    assert "normalised per panel" in footer.axes[0].get_xlabel()  # one colorbar says how maps are scaled
    assert fig.get_figwidth() < 16  # readable at a notebook's width


def test_selection_figure_titles_rows_and_boxes_every_panel(data, images):
    model = tiny("glsim", num_classes=50)
    gt = data.input_boxes[:3] * torch.tensor([48, 32, 48, 32])
    fig = viz.plot_selection(model, images, targets=[0, 1, 2], gt_boxes=gt, class_names=LONG)
    for row in fig.subfigs[:3]:
        assert "true: " in row._suptitle.get_text() and "predicted: " in row._suptitle.get_text()
        image_ax, map_ax, _ = row.axes
        for ax in (image_ax, map_ax):  # the true box and the model's box on the image and on its map
            assert {matplotlib.colors.to_hex(c) for c in (viz.core.TRUE_COLOR, viz.core.MODEL_COLOR)} <= {
                _colour(p) for p in ax.patches}


def test_confused_pair_undoes_the_normalisation_of_the_datasets_transform():
    from torchvision import transforms

    class Normalised(torch.utils.data.Dataset):  # a dataset that only has its transform (as CUB200 does)
        classes = ["a", "b"]
        targets = [0, 1, 0, 1]

        def __init__(self):
            self.transform = transforms.Compose([transforms.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))])

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.transform(torch.full((3, 8, 12), 0.25 * i)), self.targets[i]

    data = Normalised()
    fig = viz.plot_confused_pair(data, (0, 1), [1, 1, 0, 1])
    shown = fig.axes[0].images[0].get_array()  # image #0: all 0.0 before normalisation
    np.testing.assert_allclose(np.asarray(shown), 0.0, atol=1e-6)


def test_per_class_bars_show_full_names_chance_and_every_method_in_one_axes(data):
    # a 50-class model on data of its first 4 classes: the class check (another count) is skipped on purpose
    r1, r2 = (fgvc.evaluate(tiny(m, 50), data, check_classes=False) for m in ("vit", "glsim"))
    fig = viz.plot_per_class({"vit": r1, "glsim": r2}, LONG, worst=3)  # 4 of the 50 classes have images
    (ax,) = fig.axes
    labels = [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()]
    assert len(labels) == 3 and all(label in {viz.pretty_name(n) for n in LONG} for label in labels)
    chance = [line for line in ax.lines if "chance" in line.get_label()]
    assert chance and chance[0].get_xdata()[0] == pytest.approx(2.0)  # 100 / 50 classes
    assert sum(t.get_text().endswith("%") for t in ax.texts) == 6  # every bar has its value, 0% included
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"vit", "glsim"}


def test_histories_overlay_methods_with_markers_and_plain_axes():
    from fgvc.engine.train import History

    flat = History(epochs=[{"train_loss": 2.30258 + 1e-7 * i, "val_loss": 2.30259, "train_top1": 10.0,
                            "val_top1": 9.0} for i in range(3)])
    fig = viz.plot_histories({"vit": flat, "glsim": flat}, chance=10.0)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 4 and all(line.get_marker() == "o" for line in loss_ax.lines)  # few points
    fig.canvas.draw()
    assert loss_ax.yaxis.get_major_formatter().get_offset() == ""  # no "1e-6+2.30258"
    assert any(line.get_label().startswith("chance") for line in acc_ax.lines)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend beside the panels, off the curves
    assert labels == ["vit", "glsim", "train", "validation", "chance (10.0%)"] and not acc_ax.get_legend()
