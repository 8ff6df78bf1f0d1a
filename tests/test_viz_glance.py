"""fgvc.viz.plot_glance and the explorer's "glance" choice: GLSim's two looks (the glance with its similarity and
box, the box on the full image, the crop cut at full resolution) for a model with ``glance_size``."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import TINY

import fgvc
from fgvc import viz
from fgvc.data import synthetic_splits
from fgvc.layers.geometry import crop_and_resize
from fgvc.methods.glsim import glance_box_to_input
from fgvc.viz.core import MODEL_COLOR, TRUE_COLOR, grey_image

IMG = (64, 96)  # non-square: an 8 px patch grid of 8 x 12; the glance at half the side, 32 x 48 (4 x 6 cells)
KWARGS = dict(TINY, backbone_kwargs=dict(TINY["backbone_kwargs"], patch_size=8))


def glance_model():
    return fgvc.create_model("glsim", num_classes=4, img_size=IMG, top_k=3, glance_size=0.5, crop_size=0.5,
                             crop_pos_embed="learned", **KWARGS).eval()


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(num_classes=4, image_size=IMG, train=8, val=4, test=6, seed=0)["test"]


@pytest.fixture(scope="module")
def images(data):
    return torch.stack([data[i][0] for i in range(3)])  # (3, 3, 64, 96)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rows_of(fig):
    """The axes of each image row (the last subfigure is the footer: colorbar and legend)."""
    return [sub.axes for sub in fig.subfigs[:-1]]


def box_of(rect):
    """A drawn Rectangle -> (x0, y0, x1, y1) in the pixels of the image it is drawn on (``draw_box``)."""
    x, y = rect.get_xy()
    return (x + 0.5, y + 0.5, x + 0.5 + rect.get_width(), y + 0.5 + rect.get_height())


def drawn_boxes(ax, color):
    from matplotlib.colors import to_rgba

    return [box_of(p) for p in ax.patches if p.get_edgecolor() == to_rgba(color)]


def test_one_row_per_image_of_three_panels_glance_full_image_crop(data, images):
    model = glance_model()
    fig = viz.plot_glance(model, images, mean=data.mean, std=data.std, targets=[data[i][1] for i in range(3)],
                          indices=[0, 1, 2])
    rows = rows_of(fig)
    assert len(rows) == len(images) and all(len(axes) == 3 for axes in rows)
    first = rows[0]
    assert "glance: 32x48 px" in first[0].get_title() and "4x6 grid" in first[0].get_title()
    assert "full image" in first[1].get_title() and "64x96" in first[1].get_title()
    assert all("look closely: the 32x48 px crop" in axes[2].get_title() for axes in rows)  # on every row
    assert all("predicted: " in axes[2].get_title() for axes in rows)
    assert "glsim, glance 32x48" in fig.subfigs[0]._suptitle.get_text() and "#1" in fig.subfigs[1]._suptitle.get_text()


def test_the_glance_panel_shows_the_downscaled_input_at_its_own_pixels_with_the_glance_box(data, images):
    model = glance_model()
    fig = viz.plot_glance(model, images, mean=data.mean, std=data.std)
    out = model(images)
    glance = viz.denormalize(model.glance(images), data.mean, data.std)  # (B, 32, 48, 3)
    glance_boxes = model.global_grid.top_box(out.extras["glance_similarity"], model.top_k,
                                             include_last=model.inclusive_box)
    for i, (ax_glance, ax_full, _) in enumerate(rows_of(fig)):
        shown, heat = ax_glance.images  # the grey glance, then the similarity over it
        assert shown.get_array().shape[:2] == model.glance_size == (32, 48)
        assert shown.get_interpolation() == "nearest"  # each glance pixel a visible block
        np.testing.assert_allclose(shown.get_array(), grey_image(glance[i]), atol=1e-6)
        assert heat.get_array().shape == (4, 6)  # the glance grid, not the input's 8 x 12
        np.testing.assert_allclose(drawn_boxes(ax_glance, MODEL_COLOR), [glance_boxes[i].tolist()])
        # the box on the full image is the model's own (output.boxes): the glance box mapped to input pixels
        mapped = glance_box_to_input(glance_boxes[i : i + 1], model.glance_size, IMG)[0]
        assert torch.equal(mapped, out.boxes[i])
        np.testing.assert_allclose(drawn_boxes(ax_full, MODEL_COLOR), [out.boxes[i].tolist()])
        assert ax_full.images[0].get_array().shape[:2] == IMG


def test_the_crop_panel_is_the_full_resolution_crop_of_the_models_box(data, images):
    model = glance_model()
    fig = viz.plot_glance(model, images, mean=data.mean, std=data.std)
    out = model(images)
    crops = viz.denormalize(crop_and_resize(images, out.boxes, model.crop_size), data.mean, data.std)
    for i, (_, _, ax_crop) in enumerate(rows_of(fig)):
        shown = ax_crop.images[0].get_array()
        assert shown.shape[:2] == model.crop_size == (32, 48)
        np.testing.assert_allclose(shown, crops[i], atol=1e-6)


def test_true_boxes_are_drawn_green_on_the_glance_and_the_full_image(data, images):
    model = glance_model()
    h, w = IMG
    gt = data.input_boxes[:3] * torch.tensor([w, h, w, h])
    fig = viz.plot_glance(model, images, mean=data.mean, std=data.std, gt_boxes=gt)
    for i, (ax_glance, ax_full, _) in enumerate(rows_of(fig)):
        np.testing.assert_allclose(drawn_boxes(ax_full, TRUE_COLOR), [gt[i].tolist()], atol=1e-5)
        np.testing.assert_allclose(drawn_boxes(ax_glance, TRUE_COLOR), [(gt[i] / 2).tolist()], atol=1e-5)
    labels = [t.get_text() for t in fig.subfigs[-1].axes[1].get_legend().get_texts()]
    assert labels[0] == "true box" and labels[1].startswith("model's box")


@pytest.mark.parametrize("method", ["glsim", "vit"])
def test_a_model_without_a_glance_is_refused_in_one_line_naming_plot_maps(method, images):
    model = fgvc.create_model(method, num_classes=4, img_size=IMG, **KWARGS).eval()
    with pytest.raises(ValueError, match="plot_maps") as err:
        viz.plot_glance(model, images)
    assert "\n" not in str(err.value) and "glance_size" in str(err.value)


def test_the_explorer_offers_the_glance_for_a_glance_model_only_and_draws_its_three_panels(data):
    pytest.importorskip("ipywidgets")
    plain = fgvc.create_model("glsim", num_classes=4, img_size=IMG, top_k=3, **KWARGS).eval()
    explorer = viz.explore({"glance": glance_model(), "glsim": plain}, data)
    assert "glance" in [k for _, k in explorer.kind.options]
    explorer.index.value = 2
    explorer.kind.value = "glance"
    assert explorer.layer.disabled and explorer.head.disabled  # the glance has no layer or head to choose
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    ax_glance, ax_full, ax_crop = explorer.figure.axes[:3]
    assert ax_glance.images[0].get_array().shape[:2] == (32, 48)
    assert ax_crop.images[0].get_array().shape[:2] == (32, 48) and "look closely" in ax_crop.get_title()
    assert "#2" in explorer.figure.subfigs[0]._suptitle.get_text()
    assert "top-5" in explorer.info.value and "<b>image is" not in explorer.info.value  # predictions, no error
    explorer.method.value = "glsim"  # a model without a glance: its maps only, back to the attention
    assert "glance" not in [k for _, k in explorer.kind.options] and explorer.kind.value == "attention"
    assert explorer.figure.axes[0].images[0].get_array().shape[:2] == IMG


def test_every_rows_panels_have_the_first_rows_size(data, images):
    fig = viz.plot_glance(glance_model(), images, mean=data.mean, std=data.std)
    fig.canvas.draw()  # constrained layout places the axes when drawn
    sizes = [[(ax.get_window_extent().width, ax.get_window_extent().height) for ax in axes] for axes in rows_of(fig)]
    np.testing.assert_allclose(np.array(sizes[1:]), np.array([sizes[0]] * (len(sizes) - 1)), atol=1.0)
