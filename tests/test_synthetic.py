"""Specification of the built-in synthetic fine-grained dataset (``fgvc.data.synthetic``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.data.synthetic import (
    COLOURS,
    FRAME_COLOUR,
    SHAPES,
    SyntheticFGVC,
    all_class_names,
    grid_class_names,
    synthetic_splits,
)

SIZES = [64, 128, (48, 96), (96, 48), (40, 300)]


def pixels(ds: SyntheticFGVC, i: int) -> np.ndarray:
    return np.array(ds.render(i))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_samples_in_any_order_with_or_without_cache():
    a = SyntheticFGVC(40, seed=3)
    b = SyntheticFGVC(40, seed=3, cache=False)
    order = [17, 3, 39, 0, 22, 5]
    first = {i: a[i] for i in order}
    for i in reversed(order):
        img, label = b[i]
        assert label == first[i][1]
        assert torch.equal(img, first[i][0])
    assert a.targets == b.targets
    assert torch.equal(a.boxes, b.boxes)
    # a second access of a cached sample returns the same picture
    assert np.array_equal(pixels(a, 17), pixels(b, 17))


def test_a_sample_does_not_depend_on_dataset_length():
    short, long = SyntheticFGVC(10, seed=1), SyntheticFGVC(100, seed=1)
    for i in (0, 7, 9):
        assert np.array_equal(pixels(short, i), pixels(long, i))
        assert short.box_pixels(i) == long.box_pixels(i)


def test_render_is_the_same_in_dataloader_workers():
    ds = SyntheticFGVC(8, seed=5, cache=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    images = torch.cat([x for x, _ in loader])
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(8)]))


def test_splits_and_seeds_give_different_samples():
    datasets = [SyntheticFGVC(20, split=s, seed=0) for s in ("train", "val", "test")]
    datasets.append(SyntheticFGVC(20, split="train", seed=1))
    for a in range(len(datasets)):
        for b in range(a + 1, len(datasets)):
            assert not torch.equal(datasets[a].boxes, datasets[b].boxes)
            for i in range(5):
                assert not np.array_equal(pixels(datasets[a], i), pixels(datasets[b], i))


def test_synthetic_splits_makes_three_disjoint_splits_with_shared_settings():
    splits = synthetic_splits(num_classes=4, image_size=(48, 64), train=30, val=10, test=20, seed=2)
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 20}
    assert all(d.split == k and d.image_size == (48, 64) and d.num_classes == 4 for k, d in splits.items())
    assert not np.array_equal(pixels(splits["train"], 0), pixels(splits["val"], 0))


# ----------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("size", SIZES)
def test_box_is_inside_the_image_small_and_exactly_where_the_white_frame_is(size):
    ds = SyntheticFGVC(25, image_size=size, seed=7)
    h, w = ds.image_size
    assert ds.boxes.shape == (25, 4) and ds.boxes.dtype == torch.float32
    for i in range(len(ds)):
        x0, y0, x1, y1 = ds.box_pixels(i)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) * (y1 - y0) / (h * w) <= 0.025 + 1e-9  # the default detail_fraction
        assert torch.allclose(ds.boxes[i], torch.tensor([x0 / w, y0 / h, x1 / w, y1 / h]))
        img = pixels(ds, i)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        ys, xs = np.nonzero((img == FRAME_COLOUR).all(axis=-1))
        # the frame colour appears nowhere else: its bounding box is the detail's box
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        # and the whole one-pixel border of the box is frame
        border = np.ones((y1 - y0, x1 - x0), dtype=bool)
        border[1:-1, 1:-1] = False
        assert (img[y0:y1, x0:x1][border] == FRAME_COLOUR).all()


def test_detail_covers_about_detail_fraction_of_the_image():
    ds = SyntheticFGVC(5, image_size=128, detail_fraction=0.02)
    x0, y0, x1, y1 = ds.box_pixels(0)
    assert 0.015 <= (x1 - x0) * (y1 - y0) / 128**2 <= 0.02


# ----------------------------------------------------------------------------- classes and tensors


def test_classes_are_balanced_named_and_neighbours_differ_in_one_attribute():
    ds = SyntheticFGVC(1000, num_classes=10)
    assert np.bincount(ds.targets, minlength=10).tolist() == [100] * 10
    assert len(set(ds.classes)) == 10
    parts = [name.split("-") for name in ds.classes]
    assert all(c in COLOURS and s in SHAPES for c, s in parts)
    # every class has a look-alike: another class with the same colour or the same shape
    for c, s in parts:
        assert sum((c == c2) != (s == s2) for c2, s2 in parts) >= 1
    assert SyntheticFGVC(10, num_classes=len(SHAPES) * len(COLOURS), image_size=96).num_classes == 64


def test_getitem_returns_normalized_float_image_and_int_label():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ds = SyntheticFGVC(12, image_size=(48, 80), mean=mean, std=std)
    x, y = ds[11]
    assert x.shape == (3, 48, 80) and x.dtype == torch.float32
    assert isinstance(y, int) and y == ds.targets[11] == 11 % 10
    raw = torch.from_numpy(pixels(ds, 11)).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)
    assert torch.equal(ds[-1][0], x)
    with pytest.raises(IndexError):
        ds[12]


def test_a_given_transform_receives_the_rendered_pil_image():
    seen = []

    def transform(img: Image.Image) -> str:
        seen.append(img)
        return "transformed"

    ds = SyntheticFGVC(4, transform=transform)
    assert ds[2] == ("transformed", 2)
    assert isinstance(seen[0], Image.Image) and seen[0].mode == "RGB" and seen[0].size == (64, 64)
    assert np.array_equal(np.asarray(seen[0]), pixels(ds, 2))


# ----------------------------------------------------------------------------- fine-grained by construction


def _colour_features(images: np.ndarray) -> np.ndarray:
    """Per-image mean colour and a 4x4x4 joint colour histogram: the 'global appearance' of an image."""
    n = len(images)
    q = (images // 64).astype(np.int64).reshape(n, -1, 3)
    code = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    hist = np.stack([np.bincount(c, minlength=64) for c in code]) / code.shape[1]
    return np.concatenate([images.reshape(n, -1, 3).mean(1) / 255, hist], axis=1)


def test_global_colour_statistics_are_near_chance_but_the_detail_gives_the_class_away():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds = SyntheticFGVC(1200, num_classes=10, image_size=64, seed=11)
    images = np.stack([pixels(ds, i) for i in range(len(ds))])
    labels = np.array(ds.targets)
    crops = np.stack(
        [images[i, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in enumerate(map(ds.box_pixels, range(len(ds))))]
    )
    train = np.arange(len(ds)) < 900
    chance = 1 / ds.num_classes

    def accuracy(classifier, features: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), classifier).fit(features[train], labels[train])
        return model.score(features[~train], labels[~train])

    global_features = _colour_features(images)
    # (C=1 scores the same on the global features, it only takes longer to converge on noise)
    for classifier in (LogisticRegression(C=0.1, max_iter=1000), NearestCentroid()):
        assert accuracy(classifier, global_features) < 2 * chance
    detail_features = crops.reshape(len(ds), -1).astype(np.float32) / 255
    with warnings.catch_warnings():  # some crop pixels (the frame) are constant: sklearn warns, harmlessly
        warnings.simplefilter("ignore")
        assert accuracy(LogisticRegression(max_iter=1000), detail_features) > 0.9
        assert accuracy(NearestCentroid(), detail_features) > 0.9


# ----------------------------------------------------------------------------- argument checking


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=65), "num_classes"),
        (dict(image_size=32), "too small"),
        (dict(image_size=(64, 8)), "image_size"),
        (dict(image_size=(64, 64, 3)), "image_size"),
        (dict(image_size=40, num_classes=16), "look identical"),
        (dict(detail_fraction=0.12), "detail_fraction"),
        (dict(vocabulary=["red-circle", "pink-star"]), "vocabulary"),
        (dict(vocabulary=["red-circle", "red-circle"]), "vocabulary"),
        (dict(vocabulary=["red-circle", "red-ring"], num_classes=3), "vocabulary has 2"),
        (dict(detail_fraction=0.0), "detail_fraction"),
        (dict(split="validation"), "split"),
        (dict(seed=-1), "seed"),
        (dict(num_distractors=-2), "num_distractors"),
        (dict(std=(0.5, 0.0, 0.5)), "std"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticFGVC(10, **kwargs)


# ----------------------------------------------------------------------------- vocabulary


def test_default_classes_are_the_grid_class_names():
    for k in (2, 5, 10, 16, 64):
        assert SyntheticFGVC(4, num_classes=k).classes == grid_class_names(k)
    assert len(set(all_class_names())) == len(SHAPES) * len(COLOURS)


def test_a_vocabulary_sets_the_classes_and_every_glyph_comes_from_it():
    vocab = ["cyan-plus", "orange-bar", "purple-triangle"]
    ds = SyntheticFGVC(30, image_size=64, vocabulary=vocab, num_distractors=6, seed=2)
    assert ds.classes == vocab and ds.num_classes == 3 and ds.targets[:4] == [0, 1, 2, 0]
    assert ds._glyphs[:, :, 2].max() < 3  # the detail and every distractor are vocabulary interiors
    # the detail's interior is painted in its class colour
    for i in range(3):
        x0, y0, x1, y1 = ds.box_pixels(i)
        inside = pixels(ds, i)[y0:y1, x0:x1].reshape(-1, 3)
        colour = COLOURS[vocab[ds.targets[i]].split("-")[0]]
        assert (inside == colour).all(-1).any()
