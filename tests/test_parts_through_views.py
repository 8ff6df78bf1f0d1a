"""Part locations survive the dataset views fgvc builds (class subsets, splits), as boxes do."""

import torch
from test_cub_parts import IMG, scripted_model, write_cub

import fgvc
from fgvc.data import CUB200, EvalParts, build_transforms, subset_classes, train_val_split


def test_a_class_subset_keeps_each_samples_parts_and_the_part_names(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011")
    full = CUB200(root, "test")
    sub = subset_classes(full, ["002.Auklet"])  # the second test image only
    assert sub.part_names == full.part_names
    assert torch.equal(sub.parts_pixels, full.parts_pixels[1:2])
    assert torch.equal(sub.image_sizes, full.image_sizes[1:2])


def test_a_split_with_its_own_transform_has_no_input_parts_but_keeps_the_pixels(tmp_path):
    data = fgvc.data.SyntheticFGVC(20, num_classes=2, image_size=32, detail_fraction=0.05)
    train, val = train_val_split(data, 0.5, seed=0)
    assert torch.equal(val.input_parts, data.input_parts[torch.as_tensor(val.indices)])
    retransformed = fgvc.data.SubsetDataset(data, [0, 1], transform=lambda image: image)
    assert retransformed.input_parts is None and retransformed.part_names == ["detail"]


def test_evaluate_scores_parts_on_a_class_subset_of_cub(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011")
    model = scripted_model()
    test = subset_classes(CUB200(root, "test", build_transforms(model, train=False)), ["001.Albatross", "002.Auklet"])
    result = fgvc.evaluate(model, EvalParts(test, img_size=IMG), parts=True, batch_size=1)
    assert result.parts["back"]["visible"] == 2
