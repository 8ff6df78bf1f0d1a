"""A built-in, procedurally generated fine-grained dataset: ``SyntheticFGVC``.

Every picture is made on the fly from ``(seed, split, index)`` and the constructor arguments, so the
dataset needs no download, is identical on every machine, and can be made at any size (square or not).
It is meant for smoke tests, tutorials and quick method comparisons: a model can only solve it by
*finding* a small region and *reading* a detail there, which is exactly what fine-grained methods
(part selection, attention rollout, cross-attention between glimpses) are built for.

**What an image contains.** A smooth background (a coarse grid of random colours, bilinearly upsampled)
is covered with random clutter: ellipses, rectangles and lines of random sizes and colours. On top of it
sit ``num_distractors + 1`` small square *glyphs* of the same size, placed at random non-overlapping
positions. Each glyph is a square frame around a dark interior, and the interior holds a small *inner
shape* (circle, ring, square, diamond, plus, cross, triangle, bar) painted in one of eight *inner colours*.
Exactly one glyph, the *detail*, has a pure white frame (255, 255, 255); background, clutter and the other
glyphs never use that colour (they stay at or below 220 in every channel), so the detail is well-defined
and its ground-truth box is known to the pixel. The detail's box covers about ``detail_fraction`` of the
image (at most 10 %); at 64 x 64 pixels and the default 2.5 % it is 10 x 10. It must be at least 6 pixels wide to be legible, so
images need about 40 x 40 pixels or more; very small details also limit how many classes stay distinct.

**What carries the class.** The class is the detail's interior: the pair (inner shape, inner colour), named
e.g. ``"red-circle"``. Classes are laid out on a small grid of shapes x colours, so every class has
neighbours that differ in one attribute only (``red-circle`` vs ``red-ring`` vs ``green-circle``); a
circle and a ring differ in a handful of pixels. Everything else in the picture (background, clutter,
positions, the distractors' interiors and frame colours) is drawn independently of the label.

**Why global statistics do not give the class away.** The distractors are drawn from the very same
vocabulary of interiors the classes use, uniformly over the class codes, so every class colour and shape
appears in images of every class; the clutter paints half of its items in the class colours too, with areas
far larger than a glyph interior. The per-image colour histogram is therefore dominated by label-independent
noise, and a classifier on global colour statistics scores close to chance (the test suite checks this),
while the same classifier on the pixels inside the detail's box is nearly perfect. To classify an image a
model has to locate the white-framed glyph among look-alikes and read its interior.

**Vocabulary.** ``vocabulary=["cyan-plus", ...]`` replaces the default grid with any list of class names
(``all_class_names()`` lists the 64); the distractors and palette clutter then draw from that list only.
fgvc's shipped backbones are pretrained on a vocabulary that leaves out every class of the default grids
up to 16 classes (``fgvc.studies.pretrain``), so fine-tuning on the default grid meets classes never seen.

Determinism: sample ``i`` depends only on ``(seed, split, i)`` and the constructor arguments, never on
access order, caching or data-loader workers; labels cycle ``i % num_classes`` (balanced, and a longer
dataset extends a shorter one). ``split`` selects disjoint random streams, so train, val and test hold
different pictures for the same seed. Layouts (labels, positions, boxes) are computed at construction;
pixels are rendered on first access (well under a millisecond at 64 x 64) and cached as uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .contract import FGVCDataset
from .definition import DatasetDef

__all__ = ["DEFINITION", "SyntheticFGVC", "draw_splits", "synthetic_splits", "all_class_names", "grid_class_names", "FRAME_COLOUR", "SHAPES", "COLOURS"]

#: The detail's frame colour. Nothing else in any image uses it (all other colours are <= ``_MAX_LEVEL``).
FRAME_COLOUR: tuple[int, int, int] = (255, 255, 255)
_MAX_LEVEL = 220
_INTERIOR_COLOUR = (40, 40, 40)

#: Inner colours, ordered so that the first ones are the most distinct (they are used first).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 80, 220),
    "yellow": (220, 210, 20),
    "cyan": (20, 200, 210),
    "magenta": (210, 40, 200),
    "orange": (220, 130, 20),
    "purple": (130, 60, 190),
}

#: Inner shapes, ordered in look-alike pairs (circle/ring, square/diamond, plus/cross, triangle/bar).
SHAPES: tuple[str, ...] = ("circle", "ring", "square", "diamond", "plus", "cross", "triangle", "bar")

_SPLITS = {"train": 0, "val": 1, "test": 2}
_MIN_DETAIL_SIDE = 6
_MAX_DETAIL_FRACTION = 0.1
_ATTEMPTS = 24  # candidate positions per distractor


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixing hash of uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_uniform(seed: int, stream: int, idx: np.ndarray, m: int) -> np.ndarray:
    """(len(idx), m) uniforms in [0, 1); entry (r, j) depends only on (seed, stream, idx[r], j)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed], dtype=np.uint64) * golden + np.uint64(stream + 1))
        key = _mix64(key + idx.astype(np.uint64) * golden)
        z = _mix64(
            key[:, None] ^ ((np.arange(m, dtype=np.uint64) + np.uint64(1)) * np.uint64(0xD1B54A32D192ED03))
        )
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _shape_mask(shape: str, n: int) -> np.ndarray:
    """Boolean (n, n) mask of an inner shape, sampled at pixel centres of the square [-1, 1]^2."""
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    v, u = np.meshgrid(c, c, indexing="ij")  # v: rows (down), u: columns (right)
    r = np.sqrt(u * u + v * v)
    au, av = np.abs(u), np.abs(v)
    w = max(0.34, 1.0 / n)  # half-width of strokes: at least one pixel wide
    masks = {
        "circle": r <= 1.0,
        "ring": (r <= 1.0) & (r >= 0.55),
        "square": np.maximum(au, av) <= 0.7,
        "diamond": au + av <= 1.0,
        "plus": np.minimum(au, av) <= w,
        "cross": np.abs(au - av) <= w,
        "triangle": au <= (v + 1.0) / 2.0,
        "bar": av <= w,
    }
    return masks[shape]


def all_class_names() -> list[str]:
    """Every possible class name, ``"colour-shape"``, colours major (64 with 8 colours and 8 shapes)."""
    return [f"{c}-{s}" for c in COLOURS for s in SHAPES]


def grid_class_names(num_classes: int) -> list[str]:
    """The class names of the default vocabulary for ``num_classes`` (the near-square grid)."""
    n_col = min(len(COLOURS), math.ceil(math.sqrt(num_classes)))
    colours = list(COLOURS)
    return [f"{colours[k % n_col]}-{SHAPES[k // n_col]}" for k in range(num_classes)]


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair, got {image_size!r}")
    if min(hw) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


class SyntheticFGVC(FGVCDataset):
    """Procedural fine-grained dataset: the class is the interior of one small white-framed glyph.

    See the module docstring for the generator. ``__getitem__`` returns ``(image, label)`` with the image a
    float32 (3, H, W) tensor normalised by ``mean``/``std``, or ``transform(render(i))`` when a transform is
    given. ``boxes[i]`` is the detail's box as fractions ``(x0, y0, x1, y1)`` of width/height, end exclusive;
    ``part_names`` (``["detail"]``) and ``input_parts`` (its centre) make it a one-part dataset for
    ``fgvc.evaluate(parts=True)``.
    """

    def __init__(
        self,
        num_samples: int = 2000,
        *,
        num_classes: int | None = None,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        split: str = "train",
        vocabulary: Sequence[str] | None = None,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        transform: Callable[[Image.Image], Any] | None = None,
        num_distractors: int = 4,
        detail_fraction: float = 0.025,
        cache: bool = True,
    ) -> None:
        self.image_size: tuple[int, int] = _as_hw(image_size)
        h, w = self.image_size
        max_classes = len(SHAPES) * len(COLOURS)
        if vocabulary is not None:
            vocabulary = list(vocabulary)
            bad = [v for v in vocabulary if v not in all_class_names()]
            if bad or len(set(vocabulary)) != len(vocabulary):
                raise ValueError(
                    f"vocabulary must be distinct 'colour-shape' names from {len(COLOURS)} colours "
                    f"({', '.join(COLOURS)}) and {len(SHAPES)} shapes ({', '.join(SHAPES)}); "
                    f"unknown or repeated: {bad or vocabulary}"
                )
            if num_classes not in (None, len(vocabulary)):
                raise ValueError(f"num_classes={num_classes} but the vocabulary has {len(vocabulary)} classes")
            num_classes = len(vocabulary)
        elif num_classes is None:
            num_classes = 10
        if int(num_samples) != num_samples or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        if int(num_classes) != num_classes or not 2 <= num_classes <= max_classes:
            raise ValueError(
                f"num_classes must be an integer between 2 and {max_classes} "
                f"({len(SHAPES)} inner shapes x {len(COLOURS)} inner colours), got {num_classes!r}"
            )
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLITS)}")
        if int(seed) != seed or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if int(num_distractors) != num_distractors or num_distractors < 0:
            raise ValueError(f"num_distractors must be a non-negative integer, got {num_distractors!r}")
        if not 0.0 < detail_fraction <= _MAX_DETAIL_FRACTION:
            raise ValueError(
                f"detail_fraction must be in (0, {_MAX_DETAIL_FRACTION}] (the detail is a small local part), "
                f"got {detail_fraction!r}"
            )
        side = math.isqrt(int(detail_fraction * h * w))
        if side < _MIN_DETAIL_SIDE:
            raise ValueError(
                f"image_size {self.image_size} is too small: the detail would be {side} px wide "
                f"(detail_fraction={detail_fraction}), it needs at least {_MIN_DETAIL_SIDE} px to be legible; "
                f"use a larger image_size (about 40 x 40 or more) or a larger detail_fraction (at most "
                f"{_MAX_DETAIL_FRACTION})"
            )
        if side > min(h, w):
            raise ValueError(
                f"image_size {self.image_size} is too elongated: a {side} px detail does not fit its short side"
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must have 3 entries with std > 0, got mean={mean!r}, std={std!r}")

        self.num_samples = int(num_samples)
        self._num_classes = int(num_classes)
        self.seed = int(seed)
        self.split = split
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform
        self.num_distractors = int(num_distractors)
        self.detail_fraction = float(detail_fraction)
        self.cache = bool(cache)
        self.side = side

        # Classes on a near-square grid of shapes x colours (neighbours differ in one attribute), or the
        # given vocabulary.
        colour_names = list(COLOURS)
        if vocabulary is None:
            n_col = min(len(COLOURS), math.ceil(math.sqrt(self.num_classes)))
            self._codes = [(k // n_col, k % n_col) for k in range(self.num_classes)]  # (shape, colour) idx
        else:
            self._codes = [
                (SHAPES.index(v.split("-")[1]), colour_names.index(v.split("-")[0])) for v in vocabulary
            ]
        self.classes: list[str] = [f"{colour_names[c]}-{SHAPES[s]}" for s, c in self._codes]
        self._class_colours = np.array([COLOURS[colour_names[c]] for _, c in self._codes], dtype=np.uint8)
        self._tiles = self._make_tiles()

        self.targets: list[int] = [i % self.num_classes for i in range(self.num_samples)]
        self._glyphs = self._make_layouts()
        x0, y0 = (self._glyphs[:, 0, k].astype(np.float32) for k in (0, 1))
        self.boxes: torch.Tensor = torch.from_numpy(
            np.stack([x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h], axis=1).astype(np.float32)
        )
        self._cache: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ construction helpers
    def _make_tiles(self) -> np.ndarray:
        """Pre-render the (num_classes, side, side, 3) glyph interiors; frames are painted per glyph."""
        s = self.side
        t = max(1, round(s / 10))  # frame thickness
        pad = s // 10  # gap between frame and inner shape (none on tiny details)
        n = s - 2 * t - 2 * pad
        tiles = np.empty((self.num_classes, s, s, 3), dtype=np.uint8)
        masks = {SHAPES[si]: _shape_mask(SHAPES[si], n) for si, _ in self._codes}
        for k, (shape_idx, _) in enumerate(self._codes):
            tiles[k] = _INTERIOR_COLOUR
            inner = tiles[k, t + pad : t + pad + n, t + pad : t + pad + n]
            inner[masks[SHAPES[shape_idx]]] = self._class_colours[k]
        for a in masks:  # at tiny sizes two shapes may rasterise identically: refuse rather than mislabel
            for b in masks:
                if a < b and np.array_equal(masks[a], masks[b]):
                    raise ValueError(
                        f"image_size {self.image_size} is too small: shapes {a!r} and {b!r} look identical "
                        f"in a {s} px detail; use a larger image_size or detail_fraction, or fewer classes"
                    )
        self._frame_t = t
        return tiles

    def _rng(self, i: int) -> np.random.Generator:
        """The rendering stream of sample ``i`` (background, clutter, distractor frame colours)."""
        return np.random.default_rng([self.seed, _SPLITS[self.split], i])

    def _make_layouts(self, chunk: int = 4096) -> np.ndarray:
        """Glyph table (N, 1 + num_distractors, 3) of (x, y, code); glyph 0 is the detail.

        Vectorised over samples with a counter-based hash, so sample ``i`` only depends on ``(seed, split,
        i)``. Distractors take the first of ``_ATTEMPTS`` candidate positions that overlaps no earlier glyph
        (else the first that avoids the detail, else the last candidate; the detail is drawn on top anyway).
        """
        h, w = self.image_size
        s, nd, a = self.side, self.num_distractors, _ATTEMPTS
        out = np.empty((self.num_samples, 1 + nd, 3), dtype=np.int64)
        for lo in range(0, self.num_samples, chunk):
            idx = np.arange(lo, min(lo + chunk, self.num_samples))
            u = _hash_uniform(self.seed, _SPLITS[self.split], idx, 2 * (1 + nd * (1 + a)))
            xs = np.floor(u[:, 0::2] * (w - s + 1)).astype(np.int64)  # column 2k: x of draw k
            ys = np.floor(u[:, 1::2] * (h - s + 1)).astype(np.int64)
            g = out[lo : lo + len(idx)]
            g[:, 0] = np.stack([xs[:, 0], ys[:, 0], idx % self.num_classes], axis=1)
            rows = np.arange(len(idx))
            for d in range(1, nd + 1):
                first = 1 + (d - 1) * (1 + a)  # pair index of this distractor's code draw
                g[:, d, 2] = np.floor(u[:, 2 * first] * self.num_classes).astype(np.int64)
                cx, cy = xs[:, first + 1 : first + 1 + a], ys[:, first + 1 : first + 1 + a]  # (n, a)
                apart = (np.abs(cx[:, None] - g[:, :d, 0, None]) > s) | (
                    np.abs(cy[:, None] - g[:, :d, 1, None]) > s
                )
                free_all, free_detail = apart.all(axis=1), apart[:, 0]
                pick = np.where(
                    free_all.any(1),
                    free_all.argmax(1),
                    np.where(free_detail.any(1), free_detail.argmax(1), a - 1),
                )
                g[:, d, 0], g[:, d, 1] = cx[rows, pick], cy[rows, pick]
        return out

    # ------------------------------------------------------------------ rendering
    def _render_array(self, i: int) -> np.ndarray:
        h, w = self.image_size
        rng = self._rng(i)
        # Smooth background: a coarse random colour grid, bilinearly upsampled.
        gh, gw = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        grid = rng.integers(0, _MAX_LEVEL + 1, size=(gh, gw, 3), dtype=np.uint8)
        img = Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(img)
        # Clutter: count proportional to area, sizes proportional to the image scale.
        scale = math.sqrt(h * w)
        n_items = max(3, round(rng.integers(6, 13) * h * w / 4096))
        kinds = rng.integers(0, 3, size=n_items)
        use_palette = rng.random(n_items) < 0.5
        palette_idx = rng.integers(0, self.num_classes, size=n_items)
        random_cols = rng.integers(0, _MAX_LEVEL + 1, size=(n_items, 3))
        centres = rng.random((n_items, 2)) * (w, h)
        sizes = rng.uniform(0.03, 0.16, size=(n_items, 2)) * scale
        widths = rng.integers(1, max(2, round(scale / 32)) + 1, size=n_items)
        for k in range(n_items):
            col = tuple(
                int(v) for v in (self._class_colours[palette_idx[k]] if use_palette[k] else random_cols[k])
            )
            cx, cy = centres[k]
            rx, ry = sizes[k]
            if kinds[k] == 0:
                draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=col)
            elif kinds[k] == 1:
                draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=col)
            else:
                draw.line(
                    (cx - 2 * rx, cy - 2 * ry, cx + 2 * rx, cy + 2 * ry), fill=col, width=int(widths[k])
                )
        arr = np.array(img)
        # Glyphs: distractors first (random non-white frame colours), the detail last so it is never hidden.
        s, t = self.side, self._frame_t
        glyphs = self._glyphs[i]
        frame_cols = rng.integers(0, _MAX_LEVEL + 1, size=(len(glyphs), 3), dtype=np.uint8)
        frame_cols[0] = FRAME_COLOUR
        for j in list(range(1, len(glyphs))) + [0]:
            x, y, code = (int(v) for v in glyphs[j])
            patch = arr[y : y + s, x : x + s]
            patch[...] = self._tiles[code]
            patch[:t], patch[-t:], patch[:, :t], patch[:, -t:] = (frame_cols[j],) * 4
        return arr

    def _array(self, i: int) -> np.ndarray:
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"index {i} out of range for a dataset of {self.num_samples} samples")
        i = int(i) % self.num_samples
        arr = self._cache.get(i)
        if arr is None:
            arr = self._render_array(i)
            if self.cache:
                self._cache[i] = arr
        return arr

    # ------------------------------------------------------------------ public API
    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_boxes(self) -> torch.Tensor | None:
        """The boxes in the frame the model sees (read by ``fgvc.evaluate``): ``boxes`` when the default
        to-tensor transform is used (images are drawn at the input size), None with a custom transform."""
        return self.boxes if self.transform is None else None

    @property
    def part_names(self) -> list[str]:
        """One part, the class-deciding detail: the synthetic stand-in for CUB's 15 named parts."""
        return ["detail"]

    @property
    def input_parts(self) -> torch.Tensor | None:
        """(N, 1, 3) the detail's centre (x, y as fractions of the model input) and visible (always 1), read by
        ``fgvc.evaluate(parts=True)``; in the frame of ``input_boxes`` (the images are drawn at the input
        size), so None with a custom transform, as they are."""
        if self.transform is not None:
            return None
        centre = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2  # (N, 2) x, y
        return torch.cat([centre, torch.ones(len(centre), 1)], dim=1)[:, None, :]

    def __len__(self) -> int:
        return self.num_samples

    def render(self, i: int) -> Image.Image:
        """The raw RGB picture of sample ``i`` (uint8), before any transform or normalisation."""
        return Image.fromarray(self._array(i).copy())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label = self.targets[i]
        if self.transform is not None:
            return self.transform(self.render(i)), label
        x = torch.from_numpy(self._array(i)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std, label

    def box_pixels(self, i: int) -> tuple[int, int, int, int]:
        """Box of sample ``i``'s detail in pixels: ``(x0, y0, x1, y1)`` with exclusive end."""
        x, y = (int(v) for v in self._glyphs[i, 0, :2])
        return x, y, x + self.side, y + self.side

    def __repr__(self) -> str:
        return (
            f"SyntheticFGVC(num_samples={self.num_samples}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, split={self.split!r}, seed={self.seed}, detail={self.side}px)"
        )


def synthetic_splits(
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 64,
    train: int = 2000,
    val: int = 500,
    test: int = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, SyntheticFGVC]:
    """Train/val/test datasets with the same generator settings and disjoint random streams."""
    sizes = {"train": train, "val": val, "test": test}
    return {
        split: SyntheticFGVC(
            n, num_classes=num_classes, image_size=image_size, seed=seed, split=split, **kwargs
        )
        for split, n in sizes.items()
    }


def draw_splits(img_size: int | tuple[int, int] | None = None, **options: Any) -> dict[str, SyntheticFGVC]:
    """A recipe's splits: ``synthetic_splits(**options)`` drawn at ``img_size`` unless ``options`` give
    ``image_size``."""
    if img_size is not None:
        options.setdefault("image_size", tuple(img_size) if not isinstance(img_size, int) else img_size)
    return synthetic_splits(**options)


def _count_classes(root: Any, options: Mapping[str, Any]) -> int:
    """The class count ``options`` give (``vocabulary``'s length, ``num_classes`` or the default 10)."""
    vocabulary = options.get("vocabulary")
    return len(vocabulary) if vocabulary is not None else int(options.get("num_classes") or 10)


DEFINITION = DatasetDef("synthetic", SyntheticFGVC, splits=tuple(_SPLITS), draw_splits=draw_splits,
                        count_classes=_count_classes)
