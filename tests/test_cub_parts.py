"""CUB's parts: read from parts/parts.txt and parts/part_locs.txt, mapped through the test transform as
tv_tensors.KeyPoints, and scored against every map of a model by fgvc.evaluate(parts=True)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

import fgvc
from fgvc.data import CUB200, build_transforms
from fgvc.data.parts import EvalParts, map_parts
from fgvc.methods.explain import Explanation, GridMap

PART_NAMES = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
              "nape", "right eye", "right leg", "right wing", "tail", "throat"]
W, H = 96, 72  # every fixture image; at img_size 32 the test transform is Resize(36) -> 48 x 36, CenterCrop(32)
IMG = 32  # input 32 x 32, 8 px patches: a 4 x 4 grid of cell centres 4, 12, 20, 28


def to_input(x, y):
    """Original pixels -> input pixels by hand: scale 36 / 72 = 0.5, crop left round((48 - 32) / 2) = 8, top 2."""
    return x * 0.5 - 8, y * 0.5 - 2


# (image id, part id) -> (x, y, visible) in original pixels; every other pair is invisible (0 0 0)
LOCS = {
    (1, 1): (56, 28, 1),  # back at input (20, 12): the scripted map's peak cell
    (1, 2): (4, 40, 1),  # beak at input (-6, 18): visible in the photo, cut off by the crop
    (1, 3): (72, 44, 1),  # belly at input (28, 20)
    (2, 1): (24, 12, 1),  # back at input (4, 4)
    (2, 3): (72, 44, 1),  # belly at input (28, 20); the beak of image 2 is invisible (x = y = 0)
    (3, 1): (50, 50, 1),  # image 3 is a training image: not read into the test split
}


def write_cub(root, parts=True):
    """An official-layout CUB_200_2011 folder: 2 classes, 3 images (2 test, 1 train), 96 x 72 each."""
    root.mkdir()
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    rel = ["001.Albatross/a.jpg", "002.Auklet/b.jpg", "001.Albatross/c.jpg"]
    (root / "images.txt").write_text("".join(f"{i} {r}\n" for i, r in enumerate(rel, 1)))
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n3 1\n")
    (root / "train_test_split.txt").write_text("1 0\n2 0\n3 1\n")
    for r in rel:
        (root / "images" / r).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (120, 80, 40)).save(root / "images" / r)
    if parts:
        (root / "parts").mkdir()
        (root / "parts" / "parts.txt").write_text("".join(f"{k} {n}\n" for k, n in enumerate(PART_NAMES, 1)))
        lines = [f"{i} {p} {' '.join(map(str, LOCS.get((i, p), (0, 0, 0))))}\n" for i in (1, 2, 3) for p in
                 range(1, 16)]
        (root / "parts" / "part_locs.txt").write_text("".join(lines))
    return root


@pytest.fixture
def cub(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_the_reader_gives_part_names_and_a_15_x_3_tensor_per_image_in_original_pixels(cub):
    test = CUB200(cub, "test")
    assert test.part_names == PART_NAMES
    assert test.parts_pixels.shape == (2, 15, 3)
    assert test.parts_pixels[0, 0].tolist() == [56, 28, 1]
    assert test.parts_pixels[1, 1].tolist() == [0, 0, 0]  # the invisible beak
    assert int(test.parts_pixels[..., 2].sum()) == 5  # the visible parts of the two test images
    assert CUB200(cub, "train").parts_pixels[0, 0].tolist() == [50, 50, 1]


def test_without_the_parts_files_the_reader_gives_none(tmp_path):
    data = CUB200(write_cub(tmp_path / "CUB_200_2011", parts=False), "test")
    assert data.part_names is None and data.parts_pixels is None


def test_one_parts_file_without_the_other_is_an_error_naming_the_missing_one(cub):
    (cub / "parts" / "part_locs.txt").unlink()
    with pytest.raises(FileNotFoundError, match="part_locs.txt is missing"):
        CUB200(cub, "test")


def test_an_image_without_a_line_for_a_part_is_an_error(cub):
    locs = cub / "parts" / "part_locs.txt"
    locs.write_text("".join(line for line in locs.read_text().splitlines(True) if not line.startswith("2 15 ")))
    with pytest.raises(ValueError, match="image 2 part 15"):
        CUB200(cub, "test")


def test_parts_map_through_resize_and_center_crop_as_computed_by_hand(cub):
    test = CUB200(cub, "test")
    mapped = map_parts(test.parts_pixels, test.image_sizes, IMG)  # (2, 15, 3) fractions of the input
    for (image, part), (x, y, _) in LOCS.items():
        if image == 3:
            continue
        xi, yi = to_input(x, y)
        assert mapped[image - 1, part - 1, :2].tolist() == pytest.approx([xi / IMG, yi / IMG])
    visible = mapped[..., 2]
    assert visible[0, :3].tolist() == [1, 0, 1]  # the beak of image 1 is cut off by the crop
    assert visible[1, :3].tolist() == [1, 0, 1]  # the beak of image 2 is invisible in the file
    assert int(visible.sum()) == 4


def test_map_parts_moves_points_as_the_image_transform_moves_pixels(cub):
    """A bright square centred on a part lands where map_parts says, after build_transforms' test transform."""
    image = torch.zeros(3, H, W)
    image[:, 28 - 2 : 28 + 2, 56 - 2 : 56 + 2] = 1.0  # a 4 px square centred on the back of image 1
    transform = build_transforms({"mean": (0, 0, 0), "std": (1, 1, 1)}, train=False, img_size=IMG)
    out = transform(image)[0]  # (32, 32)
    y, x = np.unravel_index(int(out.argmax()), out.shape)
    xf, yf, _ = map_parts(torch.tensor([[[56.0, 28.0, 1.0]]]), torch.tensor([[W, H]]), IMG)[0, 0].tolist()
    assert abs(x + 0.5 - xf * IMG) <= 1 and abs(y + 0.5 - yf * IMG) <= 1


def scripted_model():
    """A tiny ViT whose explanation is one map peaking on cell (row 1, col 2) and whose crop box is fixed."""
    model = fgvc.create_model("vit", num_classes=2, img_size=IMG,
                              **dict(TINY, backbone_kwargs=dict(TINY["backbone_kwargs"], patch_size=8)))
    heat = torch.zeros(4, 4)
    heat[1, 2] = 3.0  # centre (20, 12): 3 of the map's 4 units
    heat[0, 0] = 1.0  # centre (4, 4)
    box = torch.tensor([16.0, 8.0, 32.0, 24.0])  # x0, y0, x1, y1 in input pixels

    def explain(x):
        output = replace(model(x), boxes=box.expand(len(x), 4))
        return Explanation(output=output, attention=[], maps={"scripted": GridMap(heat.expand(len(x), 4, 4))})

    model.explain = explain
    return model.eval()


def test_evaluate_parts_scores_peak_mass_and_box_per_visible_part_as_computed_by_hand(cub):
    model = scripted_model()
    data = EvalParts(CUB200(cub, "test", build_transforms(model, train=False)), img_size=IMG)
    result = fgvc.evaluate(model, data, parts=True, batch_size=1)  # two batches: gathered in order
    assert result.part_radius == 1.0
    back, beak, belly = result.parts["back"], result.parts["beak"], result.parts["belly"]
    # back: image 1 at (20, 12) = the peak (hit), image 2 at (4, 4): two cells away (miss)
    assert back["visible"] == 2 and back["scripted_peak"] == pytest.approx(50.0)
    # mass within one cell: image 1 holds the 3 units of (20, 12), image 2 the 1 unit of (4, 4): (75 + 25) / 2
    assert back["scripted_mass"] == pytest.approx(50.0)
    # a flat map: 5 of 16 cells lie within one cell of (20, 12), 3 of (4, 4) (a corner)
    assert back["uniform_mass"] == pytest.approx(100 * (5 + 3) / 32)
    assert back["in_box"] == pytest.approx(50.0)  # (20, 12) inside the box, (4, 4) not
    # belly at (28, 20) in both: the peak is a diagonal cell away (sqrt 2 > 1), no mass nearby, inside the box
    assert (belly["scripted_peak"], belly["scripted_mass"], belly["in_box"]) == (0.0, 0.0, 100.0)
    assert belly["uniform_mass"] == pytest.approx(100 * 4 / 16)
    assert beak["visible"] == 0 and np.isnan(beak["scripted_peak"])  # cut off in one image, invisible in the other
    table = result.parts_table()
    assert "| back | 2 | 50.0 | 50.0 | 50.0 | 25.0 |" in table and "| beak | 0 | - | - | - | - |" in table


def test_a_wider_radius_counts_the_diagonal_neighbour(cub):
    model = scripted_model()
    data = EvalParts(CUB200(cub, "test", build_transforms(model, train=False)), img_size=IMG)
    result = fgvc.evaluate(model, data, parts=True, part_radius=1.5)
    assert result.parts["belly"]["scripted_peak"] == 100.0 and result.parts["belly"]["scripted_mass"] == 75.0


@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_every_map_of_the_explanation_contract_is_scored(cub, method):
    kwargs = dict(TINY, backbone_kwargs=dict(TINY["backbone_kwargs"], patch_size=8))
    if method == "glsim":
        kwargs["top_k"] = 3
    model = fgvc.create_model(method, num_classes=2, img_size=IMG, **kwargs).eval()
    data = EvalParts(CUB200(cub, "test", build_transforms(model, train=False)), img_size=IMG)
    row = fgvc.evaluate(model, data, parts=True).parts["back"]
    infos = model.map_info()
    expected = {f"{name}_mass" for name in infos} | {f"{n}_peak" for n, i in infos.items() if not i.mask}
    assert expected <= set(row)
    assert ("in_box" in row) == (method == "glsim")  # only GLSim outputs a crop box


def test_parts_on_a_dataset_without_parts_is_a_one_line_error(tmp_path):
    model = scripted_model()
    data = CUB200(write_cub(tmp_path / "CUB_200_2011", parts=False), "test", build_transforms(model, train=False))
    with pytest.raises(ValueError, match=r"has no parts \(.*parts/parts.txt and parts/part_locs.txt") as err:
        fgvc.evaluate(model, data, parts=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="has no parts"):
        EvalParts(data, img_size=IMG)


def test_parts_in_original_pixels_ask_for_the_wrapper(cub):
    model = scripted_model()
    with pytest.raises(ValueError, match="EvalParts"):
        fgvc.evaluate(model, CUB200(cub, "test", build_transforms(model, train=False)), parts=True)


def test_without_parts_the_result_has_none(cub):
    model = scripted_model()
    result = fgvc.evaluate(model, EvalParts(CUB200(cub, "test", build_transforms(model, train=False)), IMG))
    assert result.parts is None
