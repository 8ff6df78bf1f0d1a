"""build_transforms (train / test pipelines from the model's data config) and boxes mapped through them."""

import pytest
import torch
from conftest import TINY
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

import fgvc
from fgvc.data import EvalBoxes, SyntheticFGVC, build_transforms, default_resize, map_boxes
from fgvc.data.transforms import resized_size

HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


def test_default_resize_keeps_the_crop_ratio():
    assert default_resize(448) == 512 and default_resize(224) == 256 and default_resize(112) == 128
    assert default_resize((224, 448)) == (256, 512)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("img_size", [32, (24, 40)])
def test_outputs_are_normalized_plain_tensors_of_the_input_size(train, img_size):
    t = build_transforms(HALF, train=train, img_size=img_size)
    out = t(Image.new("RGB", (70, 50), (255, 0, 128)))
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    assert type(out) is torch.Tensor and out.shape == (3, h, w) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, h // 2, w // 2], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))


def test_normalization_comes_from_the_model():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    t = build_transforms(model, train=False)  # img_size from model.data_config
    norm = [s for s in t.transforms if isinstance(s, v2.Normalize)][0]
    assert list(norm.mean) == list(model.data_config["mean"]) and list(norm.std) == list(model.data_config["std"])
    assert t(Image.new("RGB", (40, 40))).shape == (3, 32, 32)


def test_train_options_and_bad_sizes():
    t = build_transforms(HALF, train=True, img_size=32, resize=40, trivial_augment=True, random_erasing=1.0)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "TrivialAugmentWide", "ToImage", "ToDtype",
                     "Normalize", "RandomErasing", "ToPureTensor"]
    out = t(Image.new("RGB", (60, 50), (255, 255, 255)))
    assert (out == 0).any() and (out == 1).any()  # an erased (zero) patch on a white (1.0) image
    test_names = [type(s).__name__ for s in build_transforms(HALF, train=False, img_size=32).transforms]
    assert test_names == ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize", "ToPureTensor"]
    with pytest.raises(ValueError, match="resize=30"):
        build_transforms(HALF, train=True, img_size=32, resize=30)
    with pytest.raises(ValueError, match="img_size is needed"):
        build_transforms(HALF, train=False)


def test_map_boxes_by_hand():
    # 200 x 100 image, short side -> 64: 128 x 64; center crop 56: left = 36, top = 4; scale 0.64.
    # box (50, 20, 150, 80) -> (32, 12.8, 96, 51.2) -> minus (36, 4) -> (-4, 8.8, 60, 47.2) -> clipped to 56.
    got = map_boxes(torch.tensor([[50.0, 20, 150, 80]]), torch.tensor([[200, 100]]), img_size=56, resize=64)
    torch.testing.assert_close(got, torch.tensor([[0.0, 8.8 / 56, 1.0, 47.2 / 56]]))
    # non-square input 32 x 48 (h, w), default exact resize (36, 54): 100 x 50 image scales by (0.54, 0.72);
    # top = 2, left = 3; box (10, 10, 60, 40) -> (5.4 - 3, 7.2 - 2, 32.4 - 3, 28.8 - 2) / (48, 32).
    got = map_boxes(torch.tensor([[10.0, 10, 60, 40]]), torch.tensor([[100, 50]]), img_size=(32, 48))
    torch.testing.assert_close(got, torch.tensor([[2.4 / 48, 5.2 / 32, 29.4 / 48, 26.8 / 32]]))


def test_map_boxes_agrees_with_torchvision_geometry():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[200, 100], [101, 257], [64, 64], [333, 91]])
    boxes = []
    for w, h in sizes.tolist():
        x0, y0 = torch.randint(0, w // 2, (1,), generator=g).item(), torch.randint(0, h // 2, (1,), generator=g).item()
        boxes.append([x0, y0, x0 + w // 3, y0 + h // 3])
    boxes = torch.tensor(boxes, dtype=torch.float32)
    for img_size, resize in ((56, 64), (56, None), ((32, 48), None), ((30, 40), 45)):
        mapped = map_boxes(boxes, sizes, img_size, resize)
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        geometry = v2.Compose([v2.Resize(resize or default_resize(img_size)), v2.CenterCrop(img_size)])
        for k, (iw, ih) in enumerate(sizes.tolist()):
            box = tv_tensors.BoundingBoxes(boxes[k : k + 1], format="XYXY", canvas_size=(ih, iw))
            image, out = geometry(tv_tensors.Image(torch.zeros(3, ih, iw)), box)
            assert image.shape[-2:] == (h, w)
            expected = out[0] / torch.tensor([w, h, w, h])
            torch.testing.assert_close(mapped[k], expected.float(), atol=1e-5, rtol=0)
    assert resized_size(200, 100, 64) == (128, 64) and resized_size(101, 257, 64) == (64, 162)


def test_eval_boxes_feeds_evaluate_in_input_coordinates(tmp_path):
    class WithPixelBoxes(torch.utils.data.Dataset):
        """Synthetic images saved at 80 x 60 with their pixel boxes, read through the test transform."""

        def __init__(self):
            self.source = SyntheticFGVC(6, num_classes=3, image_size=(60, 80))
            self.transform = build_transforms(HALF, train=False, img_size=32)
            self.classes, self.targets = self.source.classes, self.source.targets
            self.boxes_pixels = torch.tensor([self.source.box_pixels(i) for i in range(6)], dtype=torch.float32)
            self.image_sizes = torch.tensor([[80, 60]] * 6)

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return self.transform(self.source.render(i)), self.targets[i]

    data = WithPixelBoxes()
    wrapped = EvalBoxes(data, img_size=32)
    torch.testing.assert_close(wrapped.boxes, map_boxes(data.boxes_pixels, data.image_sizes, 32))
    assert wrapped.classes == data.classes and len(wrapped) == 6
    model = fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=2, **TINY)
    result = fgvc.evaluate(model, wrapped)
    assert result.num_samples == 6 and 0.0 <= result.mean_iou <= 1.0
    with pytest.raises(ValueError, match="no boxes_pixels"):
        EvalBoxes(SyntheticFGVC(4, num_classes=2), img_size=32)
