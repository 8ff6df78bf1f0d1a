"""Datasets and transforms: CUB-200-2011, Stanford Cars, FGVC-Aircraft, NABirds, any image folder, and the
built-in synthetic fine-grained data; validation splits, class subsets, dataset checks.

    from fgvc.data import build_dataset, build_transforms, train_val_split
    train = build_dataset("cub", "data/CUB_200_2011", "train", build_transforms(model, train=True))
    train, val = train_val_split(train, 0.1, val_transform=build_transforms(model, train=False))
"""

from .aircraft import FGVCAircraft
from .cars import StanfordCars
from .check import DataReport, SplitReport, check_dataset
from .common import CorruptImageError, ImageDataset, ReaderDataset, Records, check_image, load_rgb, to_rgb
from .contract import (
    FGVCDataset,
    boxes_pixels_of,
    classes_of,
    display_names_of,
    input_boxes_of,
    num_classes_of,
    targets_of,
)
from .cub import CUB200
from .datasets import (
    DATASETS,
    build_dataset,
    dataset_definition,
    dataset_splits,
    list_datasets,
    register_dataset,
)
from .definition import DatasetDef
from .find import cub_subset, find_dataset
from .flowers import Flowers102
from .folder import ImageFolderDataset
from .hierarchy import class_hierarchy, load_hierarchy
from .nabirds import NABirds
from .parts import EvalParts, map_parts
from .splits import SubsetDataset, subset_classes, train_val_split
from .synthetic import SyntheticFGVC, synthetic_splits
from .transforms import EvalBoxes, build_transforms, default_resize, map_boxes

__all__ = [
    "CUB200",
    "DATASETS",
    "CorruptImageError",
    "DataReport",
    "DatasetDef",
    "EvalBoxes",
    "EvalParts",
    "FGVCDataset",
    "FGVCAircraft",
    "Flowers102",
    "ImageDataset",
    "ImageFolderDataset",
    "NABirds",
    "ReaderDataset",
    "Records",
    "SplitReport",
    "StanfordCars",
    "SubsetDataset",
    "SyntheticFGVC",
    "boxes_pixels_of",
    "build_dataset",
    "build_transforms",
    "check_dataset",
    "check_image",
    "class_hierarchy",
    "classes_of",
    "cub_subset",
    "dataset_definition",
    "dataset_splits",
    "find_dataset",
    "input_boxes_of",
    "default_resize",
    "display_names_of",
    "list_datasets",
    "load_hierarchy",
    "load_rgb",
    "map_boxes",
    "map_parts",
    "num_classes_of",
    "register_dataset",
    "subset_classes",
    "synthetic_splits",
    "targets_of",
    "to_rgb",
    "train_val_split",
]
