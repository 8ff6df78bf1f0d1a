"""Dataset readers (CUB, Cars, Aircraft, NABirds, folders, synthetic), splits, bad input, `fgvc data check`.

Tiny layouts are written by the tests; the real CUB subset in ../shared/data is used when present.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

import fgvc
from fgvc.cli import main
from fgvc.data import (
    CUB200,
    CorruptImageError,
    DatasetDef,
    EvalBoxes,
    FGVCDataset,
    SyntheticFGVC,
    build_dataset,
    check_dataset,
    dataset_splits,
    find_dataset,
    list_datasets,
    load_rgb,
    register_dataset,
    subset_classes,
    train_val_split,
)
from fgvc.data.cub import read_cub
from fgvc.studies.recipe import build_recipe_data

REAL_CUB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "CUB_200_2011_subset100"
needs_real_cub = pytest.mark.skipif(not (REAL_CUB / "images.txt").is_file(), reason="real CUB subset not present")


def write_image(path: Path, size=(40, 30), colour=(200, 40, 40), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)
    return path


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def make_cub(root: Path, boxes=True) -> Path:
    """A CUB layout with non-contiguous class ids 3, 7, 12 (2 train + 1 test image each)."""
    classes = {3: "003.Sooty_Albatross", 7: "007.Parakeet_Auklet", 12: "012.Yellow_headed_Blackbird"}
    images, labels, split, bbox = [], [], [], []
    iid = 0
    for cid, name in classes.items():
        for k in range(3):
            iid += 1
            rel = f"{name}/{name[4:]}_{k}.jpg"
            write_image(root / "images" / rel, size=(40 + iid, 30))
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {cid}")
            split.append(f"{iid} {1 if k < 2 else 0}")
            bbox.append(f"{iid} 4.0 3.0 {10 + iid}.0 12.0")
    write_lines(root / "images.txt", images)
    write_lines(root / "image_class_labels.txt", labels)
    write_lines(root / "train_test_split.txt", split)
    write_lines(root / "classes.txt", [f"{c} {n}" for c, n in reversed(classes.items())])  # order of ids matters, not lines
    if boxes:
        write_lines(root / "bounding_boxes.txt", bbox)
    return root


# ---------------------------------------------------------------- CUB


@needs_real_cub
def test_real_cub_subset_counts_names_and_items():
    train = build_dataset("cub", REAL_CUB, "train")
    test = build_dataset("cub", REAL_CUB, "test")
    assert (len(train), len(test)) == (2999, 2903)
    assert len(train.classes) == 100 and train.classes == test.classes
    assert train.classes[:2] == ["001.Black_footed_Albatross", "004.Groove_billed_Ani"]  # ids 1, 4 -> labels 0, 1
    assert train.display_names[0] == "Black footed Albatross"
    assert set(train.targets) == set(range(100)) == set(test.targets)
    assert train.boxes is None and train.boxes_pixels is None  # the subset has no bounding_boxes.txt
    image, label = train[0]
    assert image.mode == "RGB" and label == train.targets[0] == 0
    report = check_dataset("cub", REAL_CUB, quick=True)
    assert report.ok, str(report)
    assert [s.num_images for s in report.splits] == [2999, 2903]


def test_cub_layout_maps_sparse_ids_and_reads_boxes(tmp_path):
    root = make_cub(tmp_path / "CUB_200_2011")
    train = build_dataset("cub", tmp_path, "train")  # the parent folder works too
    test = build_dataset("cub", root, "test")
    assert train.classes == ["003.Sooty_Albatross", "007.Parakeet_Auklet", "012.Yellow_headed_Blackbird"]
    assert train.display_names[2] == "Yellow headed Blackbird"
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 1, 2]
    # image 1: 41 x 30 px, box x=4, y=3, w=11, h=12 -> (4, 3, 15, 15) px -> fractions of 41 x 30
    assert torch.equal(train.boxes_pixels[0], torch.tensor([4.0, 3.0, 15.0, 15.0]))
    torch.testing.assert_close(train.boxes[0], torch.tensor([4 / 41, 3 / 30, 15 / 41, 15 / 30]))
    assert train.boxes.shape == (6, 4) and train.image_sizes[1].tolist() == [42, 30]
    with pytest.raises(ValueError, match="train_val_split"):
        build_dataset("cub", root, "val")


def test_missing_annotation_names_the_file_and_shows_the_layout(tmp_path):
    root = make_cub(tmp_path / "cub")
    (root / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_test_split.txt is missing") as err:
        build_dataset("cub", root, "train")
    assert "image_class_labels.txt" in str(err.value) and "Expected layout" in str(err.value)
    report = check_dataset("cub", root, quick=True)
    assert not report.ok and "train_test_split.txt" in str(report)


def test_broken_folder_missing_and_truncated_files(tmp_path, capsys):
    root = make_cub(tmp_path / "cub", boxes=True)
    first = sorted((root / "images").rglob("*.jpg"))
    (first[0]).unlink()  # listed in images.txt, gone from disk (a training image)
    bad = first[2]  # a test image, truncated to half its bytes (noise, so the cut lands in the pixel data)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])

    with pytest.raises(FileNotFoundError, match=first[0].name):
        build_dataset("cub", root, "train")
    test = build_dataset("cub", root, "test")  # headers are fine: the error comes at decoding, naming the file
    broken = [i for i, (p, _) in enumerate(test.samples) if p == str(bad)][0]
    with pytest.raises(CorruptImageError, match=bad.name):
        test[broken]

    with pytest.warns(UserWarning, match="skipped 1 of 6") as caught:
        train = build_dataset("cub", root, "train", skip_corrupt=True)
    assert len(caught) == 1 and len(train) == 5 and train.boxes_pixels.shape == (5, 4)
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 .*truncated JPEG"):
        test = build_dataset("cub", root, "test", skip_corrupt=True)
    assert len(test) == 2 and test.skipped[0][0] == str(bad)

    quick = check_dataset("cub", root, quick=True)
    full = check_dataset("cub", root)
    for report in (quick, full):
        assert not report.ok
        assert [len(s.missing) for s in report.splits] == [1, 0]
        assert [len(s.unreadable) for s in report.splits] == [0, 1]
    assert main(["data", "check", str(root), "--dataset", "cub", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS (2)" in out and first[0].name in out and bad.name in out


def test_cli_data_check_passes_on_a_clean_folder(tmp_path, capsys):
    root = make_cub(tmp_path / "cub")
    assert main(["data", "check", str(root), "--dataset", "cub", "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "3 classes" in out


# ---------------------------------------------------------------- image modes


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "RGBA", "LA", "I;16", "P_transparent"])
def test_every_image_mode_loads_as_rgb(tmp_path, mode):
    if mode == "P_transparent":
        im = Image.new("P", (8, 6), 0)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.info["transparency"] = 0
        path = tmp_path / "p.png"
        im.save(path, transparency=0)
    elif mode == "I;16":
        path = tmp_path / "deep.png"
        Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(path)
    else:
        fmt = "jpeg" if mode in ("L", "CMYK") else "png"
        path = tmp_path / f"img.{fmt}"
        Image.new(mode, (8, 6)).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    if mode == "I;16":
        assert image.getpixel((0, 0)) == (255, 255, 255)  # full-scale 16-bit is white, not clipped garbage
    if mode in ("RGBA", "LA", "P_transparent"):
        assert image.getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> white background


def test_load_rgb_errors_name_the_file(tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    with pytest.raises(CorruptImageError, match="notes.jpg"):
        load_rgb(not_image)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        load_rgb(tmp_path / "gone.jpg")


# ---------------------------------------------------------------- Stanford Cars


def make_cars_devkit(base: Path) -> Path:
    import scipy.io as sio

    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    train = [(1, 2, 30, 20, 3, "00001.jpg"), (5, 6, 20, 25, 1, "00002.jpg"), (1, 1, 40, 30, 2, "00003.jpg")]
    test = [(3, 4, 10, 12, 2, "00001.jpg"), (2, 2, 39, 29, 3, "00002.jpg")]
    (base / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"], dtype=object)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    sio.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": np.array(train, dtype=fields)})
    sio.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": np.array(test, dtype=fields)})
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for row in rows:
            write_image(base / folder / row[5], size=(40, 30))
    return base


def test_cars_devkit_counts_labels_names_boxes(tmp_path):
    import torchvision

    make_cars_devkit(tmp_path / "stanford_cars")
    train = build_dataset("cars", tmp_path, "train")
    test = build_dataset("cars", tmp_path / "stanford_cars", "test")
    assert (len(train), len(test)) == (3, 2)
    assert train.classes[0] == "AM General Hummer SUV 2000" and len(train.classes) == 3
    assert train.targets == [2, 0, 1] and test.targets == [1, 2]  # 1-based class ids -> 0-based labels
    assert train.boxes_pixels[0].tolist() == [0.0, 1.0, 30.0, 20.0]  # MATLAB (1, 2, 30, 20) -> 0-based, end exclusive
    torch.testing.assert_close(train.boxes[2], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # the whole 40 x 30 image
    reference = torchvision.datasets.StanfordCars(tmp_path, split="train")  # torchvision reads the same devkit
    assert [t for _, t in reference._samples] == train.targets and reference.classes == train.classes
    assert check_dataset("cars", tmp_path, quick=True).ok


def test_cars_class_folders_and_missing_devkit_file(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for name in ("Audi R8 Coupe 2012", "BMW M3 Coupe 2012"):
            for k in range(n):
                write_image(tmp_path / "cars" / split / name / f"{k}.jpg")
    train = build_dataset("cars", tmp_path / "cars", "train")
    assert train.classes == ["Audi R8 Coupe 2012", "BMW M3 Coupe 2012"] and train.targets == [0, 0, 1, 1]
    assert train.boxes is None
    base = make_cars_devkit(tmp_path / "devkit_case")
    (base / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(FileNotFoundError, match="cars_test_annos_withlabels.mat"):
        build_dataset("cars", base, "test")


# ---------------------------------------------------------------- FGVC-Aircraft


def make_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A320", "Cessna 172"]
    families = {"707-320": "Boeing 707", "A320": "A320", "Cessna 172": "Cessna 172"}
    data.mkdir(parents=True)
    write_lines(data / "variants.txt", variants)
    write_lines(data / "families.txt", sorted(set(families.values())))
    write_lines(data / "manufacturers.txt", ["Airbus", "Boeing", "Cessna"])
    boxes, k = [], 0
    for split in ("train", "val", "test"):
        rows, fam = [], []
        for v in variants:
            k += 1
            image_id = f"{k:07d}"
            write_image(data / "images" / f"{image_id}.jpg", size=(50, 60))
            rows.append(f"{image_id} {v}")
            fam.append(f"{image_id} {families[v]}")
            boxes.append(f"{image_id} 2 3 40 50")
        write_lines(data / f"images_variant_{split}.txt", rows)
        write_lines(data / f"images_family_{split}.txt", fam)
    write_lines(data / "images_box.txt", boxes)
    return root


def test_aircraft_through_torchvision_with_boxes_and_banner(tmp_path):
    make_aircraft(tmp_path)
    train = build_dataset("aircraft", tmp_path, "train")
    assert train.classes == ["707-320", "A320", "Cessna 172"] and train.targets == [0, 1, 2]
    image, _ = train[0]
    assert image.size == (50, 40)  # the 20 px copyright banner is cut off
    assert train.boxes_pixels[0].tolist() == [1.0, 2.0, 40.0, 50.0]  # 1-based inclusive -> 0-based exclusive
    torch.testing.assert_close(train.boxes[0], torch.tensor([1 / 50, 2 / 40, 40 / 50, 1.0]))  # clipped at the banner
    family = build_dataset("aircraft", tmp_path / "fgvc-aircraft-2013b", "val", annotation_level="family")
    assert family.classes == ["A320", "Boeing 707", "Cessna 172"] and family.targets == [1, 0, 2]
    kept = build_dataset("aircraft", tmp_path, "test", remove_banner=False)
    assert kept[0][0].size == (50, 60)
    report = check_dataset("aircraft", tmp_path, quick=True)
    assert report.ok and [s.split for s in report.splits] == ["train", "val", "test"]
    with pytest.raises(FileNotFoundError, match="images_manufacturer_train.txt"):
        build_dataset("aircraft", tmp_path, "train", annotation_level="manufacturer")


# ---------------------------------------------------------------- Flowers-102


def test_flowers_official_mat_files_splits_and_names(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "flowers-102"
    labels = [1, 1, 2, 77, 102, 2]  # image_00001 .. image_00006, 1-based classes
    for i in range(1, 7):
        write_image(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 3]]), "valid": np.array([[5]]), "tstid": np.array([[2, 4, 6]])})
    train = build_dataset("flowers", tmp_path, "train")
    test = build_dataset("flowers", base, "test")
    assert len(train.classes) == 102 and train.classes[0] == "pink primrose"  # torchvision's names
    assert train.targets == [0, 1] and test.targets == [0, 76, 1]
    assert [Path(p).name for p, _ in test.samples] == ["image_00002.jpg", "image_00004.jpg", "image_00006.jpg"]
    assert train[0][0].mode == "RGB" and train.boxes_pixels is None
    assert check_dataset("flowers", tmp_path, quick=True).ok
    (base / "setid.mat").unlink()
    with pytest.raises(FileNotFoundError, match="setid.mat is missing"):
        build_dataset("flowers", tmp_path, "val")


# ---------------------------------------------------------------- NABirds


def test_nabirds_keeps_only_classes_with_images(tmp_path):
    root = tmp_path / "nabirds"
    uuids = ["0a1b-c2", "1d2e-f3", "2f3a-b4", "3b4c-d5"]
    classes = {0: "Birds", 295: "Bewick's Wren", 817: "Anna's Hummingbird (Adult Male)", 900: "Unused node"}
    image_class = [817, 295, 817, 295]
    for u, c in zip(uuids, image_class, strict=True):
        write_image(root / "images" / f"{c:04d}" / f"{u}.jpg")
    write_lines(root / "images.txt", [f"{u} {c:04d}/{u}.jpg" for u, c in zip(uuids, image_class, strict=True)])
    write_lines(root / "image_class_labels.txt", [f"{u} {c}" for u, c in zip(uuids, image_class, strict=True)])
    write_lines(root / "train_test_split.txt", [f"{u} {int(i < 2)}" for i, u in enumerate(uuids)])
    write_lines(root / "classes.txt", [f"{c} {n}" for c, n in classes.items()])
    write_lines(root / "bounding_boxes.txt", [f"{u} 1 2 10 8" for u in uuids])
    write_lines(root / "hierarchy.txt", ["295 0", "817 0", "900 0"])
    train = build_dataset("nabirds", tmp_path, "train")
    test = build_dataset("nabirds", root, "test")
    assert train.classes == ["Bewick's Wren", "Anna's Hummingbird (Adult Male)"]  # ids 295, 817 only
    assert train.targets == [1, 0] and test.targets == [1, 0]
    assert train.boxes_pixels[0].tolist() == [1.0, 2.0, 11.0, 10.0]


# ---------------------------------------------------------------- image folders and synthetic


def test_folder_with_split_folders_split_file_and_flat(tmp_path):
    for split, names in (("train", ("b_bird", "a_bird")), ("val", ("a_bird",)), ("test", ("a_bird", "b_bird"))):
        for name in names:
            write_image(tmp_path / "splits" / split / name / "x.png", fmt="PNG")
    (tmp_path / "splits" / "train" / "a_bird" / "notes.txt").write_text("not an image")
    val = build_dataset("folder", tmp_path / "splits", "val")
    assert val.classes == ["a_bird", "b_bird"] and val.targets == [0]  # classes come from every split
    assert len(build_dataset("folder", tmp_path / "splits", "train")) == 2

    flat = tmp_path / "flat"
    for name in ("cat x", "dog"):
        for k in range(3):
            write_image(flat / name / f"{k}.jpg")
    write_lines(flat / "split.txt", ["cat x/0.jpg train", "cat x/1.jpg train", "cat x/2.jpg test", "dog/0.jpg train",
                                     "dog/1.jpg val", "dog/2.jpg test"])
    train = build_dataset("folder", flat, "train")
    assert train.classes == ["cat x", "dog"] and train.targets == [0, 0, 1]
    assert [Path(p).name for p, _ in build_dataset("folder", flat, "test").samples] == ["2.jpg", "2.jpg"]
    (flat / "split.txt").unlink()
    assert len(build_dataset("folder", flat, "all")) == 6
    with pytest.raises(ValueError, match="offers"):
        build_dataset("folder", flat, "train")


def test_synthetic_by_name_and_unknown_names():
    data = build_dataset("synthetic", None, "val", num_samples=8, num_classes=4)
    assert isinstance(data, SyntheticFGVC) and data.split == "val" and len(data) == 8
    with pytest.raises(ValueError, match="unknown dataset 'dogs'"):
        build_dataset("dogs", "x", "train")


# ---------------------------------------------------------------- splits and class subsets


def test_train_val_split_is_stratified_deterministic_and_keeps_metadata(tmp_path):
    data = SyntheticFGVC(200, num_classes=5, image_size=48)
    train, val = train_val_split(data, val_fraction=0.2, seed=3)
    again_train, again_val = train_val_split(data, val_fraction=0.2, seed=3)
    other = train_val_split(data, val_fraction=0.2, seed=4)[1]
    assert val.indices == again_val.indices and train.indices == again_train.indices
    assert val.indices != other.indices
    assert sorted(train.indices + val.indices) == list(range(200))
    assert np.bincount(val.targets).tolist() == [8] * 5  # 20% of every class
    assert train.classes == data.classes and val.targets == [data.targets[i] for i in val.indices]
    assert torch.equal(val.boxes, data.boxes[val.indices])
    image, label = val[1]
    assert torch.equal(image, data[val.indices[1]][0]) and label == data.targets[val.indices[1]]
    plain = train_val_split(data, 0.2, seed=3, val_transform=lambda im: np.asarray(im).shape)[1]
    assert plain[0][0] == (48, 48, 3)  # the validation transform gets the untransformed picture


def test_subset_classes_relabels_and_keeps_boxes(tmp_path):
    root = make_cub(tmp_path / "cub")
    train = build_dataset("cub", root, "train")
    first = subset_classes(train, 2)
    assert first.classes == train.classes[:2] and first.targets == [0, 0, 1, 1]
    picked = subset_classes(train, ["012.Yellow_headed_Blackbird", 0])
    assert picked.classes == ["012.Yellow_headed_Blackbird", "003.Sooty_Albatross"]
    assert picked.targets == [1, 1, 0, 0] and picked[2][1] == 0
    assert picked.display_names[0] == "Yellow headed Blackbird"
    assert torch.equal(picked.boxes_pixels, train.boxes_pixels[torch.tensor(picked.indices)])
    tr, va = train_val_split(picked, 0.5, seed=0)
    assert sorted(va.targets) == [0, 1] and tr.classes == picked.classes
    with pytest.raises(ValueError, match="not one of"):
        subset_classes(train, ["no such bird"])


def test_a_class_subset_of_the_synthetic_data_keeps_its_crop_iou():
    """The subset's input_boxes are the parent's rows, so evaluate still scores the crop boxes against them."""
    data = SyntheticFGVC(24, num_classes=4, image_size=64)
    subset = subset_classes(data, [2, 0])
    assert torch.equal(subset.input_boxes, data.input_boxes[subset.indices])
    train, val = train_val_split(subset, 0.5, seed=0)
    assert torch.equal(val.input_boxes, subset.input_boxes[val.indices])
    model = fgvc.create_model("glsim", **TINY, num_classes=2, img_size=64)
    assert fgvc.evaluate(model, subset, batch_size=8).mean_iou is not None
    # with its own transform a view's output frame is unknown: no input boxes rather than wrong ones
    assert train_val_split(subset, 0.5, seed=0, val_transform=lambda im: im)[1].input_boxes is None


def test_every_dataset_follows_the_contract(tmp_path):
    cub = build_dataset("cub", make_cub(tmp_path / "cub"), "train")
    synthetic = build_dataset("synthetic", None, "train", num_samples=8, num_classes=4)
    views = [subset_classes(cub, 2), train_val_split(synthetic, 0.5)[1], EvalBoxes(cub, img_size=64)]
    for data in [cub, synthetic, *views]:
        assert isinstance(data, FGVCDataset)
        assert len(data.targets) == len(data) and data.num_classes == len(data.classes)
    assert cub.input_boxes is None and views[2].input_boxes.shape == (len(cub), 4)
    assert synthetic.boxes_pixels is None and synthetic.input_boxes.shape == (8, 4)


def test_a_new_dataset_is_one_definition(tmp_path):
    """A registered DatasetDef is built by name, lists its splits, is found and checked, and trains by recipe."""
    make_cub(tmp_path / "birds")
    register_dataset(DatasetDef("my_birds", CUB200, reader=read_cub, splits=("train", "test"), markers=("images.txt",)))
    try:
        assert "my_birds" in list_datasets() and dataset_splits("my_birds") == ["train", "test"]
        assert len(build_dataset("my_birds", tmp_path / "birds", "test")) == 3
        assert check_dataset("my_birds", tmp_path / "birds").ok
        assert find_dataset("my_birds", tmp_path, tmp_path / "birds") == tmp_path / "birds"
        recipe = dict(data=dict(dataset="my_birds", root=str(tmp_path / "birds"), val_fraction=0))
        model = fgvc.create_model("vit", **TINY, num_classes=3, img_size=32)
        splits = build_recipe_data(recipe, model)
        assert len(splits["train"]) == 6 and len(splits["test"]) == 3
    finally:
        unregister = fgvc.data.datasets
        for table in (unregister._DEFINITIONS, unregister.DATASETS, unregister.READERS):
            table.pop("my_birds")


def test_skip_corrupt_warns_once_for_many_files(tmp_path):
    root = make_cub(tmp_path / "cub")
    for path, _ in build_dataset("cub", root, "train").samples[:4]:
        Path(path).write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_dataset("cub", root, "train", skip_corrupt=True)
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1
    assert len(data) == 2 and len(data.skipped) == 4
