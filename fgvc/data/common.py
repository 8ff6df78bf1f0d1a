"""What every file-backed dataset shares: reading images as RGB, checking files, and ``ImageDataset``.

A dataset reader (``read_cub``, ``read_cars``, ...) only parses annotations into ``Records`` (paths, labels,
class names, optional pixel boxes); ``ImageDataset`` turns records into a PyTorch dataset. Keeping the two
apart lets ``check_dataset`` inspect a folder with the very same parsing the training run will use.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from .contract import FGVCDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptImageError",
    "ImageDataset",
    "Records",
    "check_image",
    "inspect_image",
    "load_rgb",
    "missing_annotation",
    "read_table",
    "to_rgb",
]

#: File endings read as images by the folder readers (compared in lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 4096  # some encoders pad after the end-of-image marker; look for it in the last 4 KiB


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded (truncated, corrupt, or not an image)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: grayscale, palette, CMYK, 16-bit and transparent images included.

    Transparent pixels (RGBA, LA, or a palette / grayscale transparency key) are composited onto white, so what
    the model sees is what a viewer shows rather than whatever colour hides under alpha = 0. 16-bit and
    32-bit grayscale are rescaled to 0..255 (a plain ``convert`` would clip them to white).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully and return it as RGB; errors name the file.

    EXIF orientation is deliberately not applied: the datasets' boxes are given in stored pixel order.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptImageError(
            f"cannot read image {path}: {e} (find all such files with `fgvc data check`, or pass "
            "skip_corrupt=True to leave unreadable files out)"
        ) from e


def check_image(path: str | os.PathLike, full: bool = False) -> str | None:
    """Why ``path`` is not a usable image (``"missing"`` or a short reason), or None when it is fine.

    ``full=False`` is cheap: the header is parsed and verified (PIL's ``verify``, which checks PNG chunks),
    and a JPEG must end with its end-of-image marker, which catches truncated downloads without decoding.
    ``full=True`` decodes the whole image as training will (about a millisecond per small image).
    """
    return inspect_image(path, full)[0]


def inspect_image(path: str | os.PathLike, full: bool = False) -> tuple[str | None, tuple[int, int] | None]:
    """``check_image``'s reason, and the (width, height) read from the file (None when it cannot be read)."""
    if not os.path.isfile(path):
        return "missing", None
    size = None
    try:
        with warnings.catch_warnings():  # a very large image is reported by the caller, with its size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if full:
                size = load_rgb(path).size
                return None, size
            with Image.open(path) as im:
                fmt, size = im.format, im.size
                im.verify()
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _TAIL_BYTES))
                if _JPEG_END not in f.read():
                    return "truncated JPEG (no end-of-image marker)", size
    except (CorruptImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e.__cause__ or e) if isinstance(e, CorruptImageError) else str(e)
        return reason or type(e).__name__, size
    return None, size


def missing_annotation(path: Path, dataset: str, layout: str) -> FileNotFoundError:
    """The error for a missing annotation file: which file, and the layout the reader expects."""
    return FileNotFoundError(f"{dataset}: annotation file {path} is missing. Expected layout:\n{layout}")


def read_table(
    path: Path,
    columns: int,
    dataset: str,
    layout: str,
    *,
    from_right: bool = False,
    unique: Mapping[int, str] | None = None,
) -> list[list[str]]:
    """Rows of a whitespace-separated annotation file with exactly ``columns`` fields (blank lines skipped).

    The last field (or, with ``from_right``, the first) keeps any inner spaces, for names like "Bewick's
    Wren" or paths with spaces. ``unique`` maps column indices to what they hold (``{0: "image id"}``): a
    value seen twice there is an error naming both lines, since a later line would silently replace (relabel,
    move to another split) the earlier one. A missing file, a line that is not UTF-8 or a short line is an
    error naming the file and line.
    """
    if not path.is_file():
        raise missing_annotation(path, dataset, layout)
    rows = []
    seen: dict[tuple[int, str], int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{dataset}: {path}, line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); save the file as UTF-8"
                ) from None
            if not line:
                continue
            parts = line.rsplit(maxsplit=columns - 1) if from_right else line.split(maxsplit=columns - 1)
            if len(parts) != columns:
                raise ValueError(f"{dataset}: {path}, line {lineno}: expected {columns} fields, got {line!r}")
            for column, what in (unique or {}).items():
                first = seen.setdefault((column, parts[column]), lineno)
                if first != lineno:
                    raise ValueError(
                        f"{dataset}: {path}: {what} {parts[column]!r} on lines {first} and {lineno}; each must "
                        f"appear once"
                    )
            rows.append(parts)
    return rows


@dataclass
class Records:
    """Parsed annotations of one split: what a reader returns and ``ImageDataset`` consumes."""

    dataset: str  # registry name, e.g. "cub"
    root: Path
    split: str
    paths: list[str]  # absolute (or root-joined) image paths
    labels: list[int]  # contiguous 0..C-1
    classes: list[str]  # names in label order
    display_names: list[str] | None = None  # readable names in label order (default: ``classes``)
    boxes_pixels: torch.Tensor | None = None  # (N, 4) float (x0, y0, x1, y1), original pixels, end exclusive
    crop_bottom: int = 0  # pixels removed from the bottom of every image at load (FGVC-Aircraft's banner)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{self.dataset}: {len(self.paths)} paths but {len(self.labels)} labels")
        if self.boxes_pixels is not None and tuple(self.boxes_pixels.shape) != (len(self.paths), 4):
            raise ValueError(f"{self.dataset}: boxes_pixels must be ({len(self.paths)}, 4)")
        wrong = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if wrong:
            raise ValueError(
                f"{self.dataset} ({self.split}): label {wrong[0]} is outside 0..{len(self.classes) - 1} "
                f"({len(self.classes)} classes); {len(wrong)} of {len(self.labels)} labels are"
            )
        if self.boxes_pixels is not None and len(self.paths):
            b = self.boxes_pixels
            bad = (~torch.isfinite(b).all(1) | (b[:, 0] >= b[:, 2]) | (b[:, 1] >= b[:, 3])).nonzero().flatten()
            if len(bad):
                i = int(bad[0])
                box = ", ".join(f"{v:g}" for v in b[i].tolist())
                raise ValueError(
                    f"{self.dataset} ({self.split}): {len(bad)} boxes are empty, inverted or not finite, e.g. "
                    f"({box}) for {self.paths[i]}; a box (x0, y0, x1, y1) needs x0 < x1 and y0 < y1"
                )

    def select(self, keep: Sequence[int]) -> Records:
        """The records at positions ``keep`` (classes unchanged)."""
        keep = list(keep)
        boxes = None if self.boxes_pixels is None else self.boxes_pixels[torch.as_tensor(keep, dtype=torch.long)]
        return Records(
            self.dataset, self.root, self.split, [self.paths[i] for i in keep], [self.labels[i] for i in keep],
            self.classes, self.display_names, boxes, self.crop_bottom,
        )


class ImageDataset(FGVCDataset):
    """Images on disk with integer labels: items ``(transform(rgb_pil_image), label)``.

    Attributes: ``classes`` (names in label order), ``display_names`` (readable names), ``targets`` (labels),
    ``samples`` (``(path, label)`` pairs), ``boxes_pixels`` ((N, 4) original-pixel boxes or None) and, read
    lazily, ``image_sizes`` ((N, 2) width, height) and ``boxes`` ((N, 4) fractions of the original width and
    height; ``fgvc.data.EvalBoxes`` maps them into the model's input frame for ``fgvc.evaluate``). Without a
    transform, items are PIL images.

    Files are checked when the dataset is built: a missing image is an error naming it. ``skip_corrupt=True``
    instead leaves out missing and unreadable files (header check, see ``check_image``; ``"full"`` decodes
    every image) with one warning, so an evaluation never silently substitutes another sample.
    """

    def __init__(
        self,
        records: Records,
        transform: Callable[[Image.Image], Any] | None = None,
        skip_corrupt: bool | str = False,
    ) -> None:
        if skip_corrupt not in (False, True, "quick", "full"):
            raise ValueError(f"skip_corrupt must be False, True, 'quick' or 'full', got {skip_corrupt!r}")
        self.skipped: list[tuple[str, str]] = []  # (path, reason) of the files left out
        records = self._validate(records, skip_corrupt)
        self.name = records.dataset
        self.root = records.root
        self.split = records.split
        self.transform = transform
        self.classes: list[str] = list(records.classes)
        self.display_names: list[str] = list(records.display_names or records.classes)
        self.samples: list[tuple[str, int]] = list(zip(records.paths, records.labels, strict=True))
        self.targets: list[int] = list(records.labels)
        self.boxes_pixels: torch.Tensor | None = records.boxes_pixels
        self.crop_bottom = int(records.crop_bottom)
        self._image_sizes: torch.Tensor | None = None
        self._boxes: torch.Tensor | None = None

    def _validate(self, records: Records, skip_corrupt: bool | str) -> Records:
        if not skip_corrupt:
            missing = [p for p in records.paths if not os.path.isfile(p)]
            if missing:
                shown = ", ".join(missing[:3])
                raise FileNotFoundError(
                    f"{records.dataset} ({records.split}): {len(missing)} of {len(records.paths)} listed images "
                    f"are missing, e.g. {shown}. Inspect the folder with `fgvc data check {records.root} "
                    f"--dataset {records.dataset}`, or pass skip_corrupt=True to leave them out"
                )
            return records
        full = skip_corrupt == "full"
        keep = []
        for i, p in enumerate(records.paths):
            reason = check_image(p, full=full)
            if reason is None:
                keep.append(i)
            else:
                self.skipped.append((p, reason))
        if self.skipped:
            shown = "; ".join(f"{p} ({r})" for p, r in self.skipped[:3])
            warnings.warn(
                f"{records.dataset} ({records.split}): skipped {len(self.skipped)} of {len(records.paths)} "
                f"images that are missing or unreadable, e.g. {shown}",
                stacklevel=3,
            )
        return records.select(keep)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[Image.Image, int]:
        """Sample ``i`` before the transform: the RGB PIL image and its label."""
        path, label = self.samples[i]
        image = load_rgb(path)
        if self.crop_bottom:
            image = image.crop((0, 0, image.width, max(1, image.height - self.crop_bottom)))
        return image, label

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.load(i)
        return (self.transform(image) if self.transform is not None else image), label

    @property
    def image_sizes(self) -> torch.Tensor:
        """(N, 2) int64 (width, height) as loaded, read from the file headers on first access (no decoding)."""
        if self._image_sizes is None:
            sizes = []
            for path, _ in self.samples:
                try:
                    with Image.open(path) as im:
                        w, h = im.size
                except (OSError, SyntaxError, ValueError) as e:
                    raise CorruptImageError(f"cannot read the header of image {path}: {e}") from e
                sizes.append((w, max(1, h - self.crop_bottom)))
            self._image_sizes = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
        return self._image_sizes

    @property
    def boxes(self) -> torch.Tensor | None:
        """(N, 4) float32 boxes as fractions (x0, y0, x1, y1) of the original width / height, or None.

        Computed on first access from ``boxes_pixels`` and the image headers. Fractions of the *original*
        image match the model input only when the whole image is resized to it; after resize + center crop
        use ``fgvc.data.EvalBoxes``, whose ``input_boxes`` (what ``fgvc.evaluate`` reads) are fractions of the
        model input.
        """
        if self.boxes_pixels is None:
            return None
        if self._boxes is None:
            wh = self.image_sizes.to(torch.float32).repeat(1, 2)
            self._boxes = (self.boxes_pixels / wh).clamp_(0.0, 1.0)
        return self._boxes

    def __repr__(self) -> str:
        boxes = ", boxes" if self.boxes_pixels is not None else ""
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, {len(self)} images, "
            f"{len(self.classes)} classes{boxes}, root={str(self.root)!r})"
        )


class ReaderDataset(ImageDataset):
    """An ``ImageDataset`` built from ``root`` and ``split`` by the subclass's annotation ``reader``.

    The datasets whose reader takes no option but the split (CUB, Stanford Cars, NABirds, Flowers-102, image
    folders) are one line each: ``class CUB200(ReaderDataset): reader = staticmethod(read_cub)``.
    """

    reader: ClassVar[Callable[..., Records]]

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        *,
        skip_corrupt: bool | str = False,
    ) -> None:
        super().__init__(type(self).reader(root, split), transform, skip_corrupt)
