"""Part scores end to end: the synthetic data's detail as a one-part stand-in (no download), the figure of which
parts each method looks at (``fgvc.viz.plot_parts``), the ``fgvc eval --out`` report's part table and figure,
and ``fgvc eval --parts`` / ``--part-radius`` with a one-line error where the data has no parts."""

from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import TINY
from test_cub_parts import PART_NAMES, write_cub

import fgvc
from fgvc.cli import main
from fgvc.data import CUB200, SyntheticFGVC, build_transforms
from fgvc.studies.report import save_evaluation
from fgvc.viz import plot_parts


def tiny(method: str, num_classes: int, img_size: int, class_names=None):
    options = dict(top_k=2) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=num_classes, img_size=img_size, **TINY, **options)
    if class_names is not None:
        model.class_names = list(class_names)
    return model


def test_the_synthetic_data_has_one_part_at_the_centre_of_its_detail():
    data = SyntheticFGVC(12, num_classes=3, image_size=(48, 80), split="test")
    assert data.part_names == ["detail"]
    parts = data.input_parts
    assert parts.shape == (12, 1, 3) and parts.dtype == torch.float32
    assert torch.all(parts[:, 0, 2] == 1)  # always visible
    h, w = data.image_size
    for i in range(len(data)):
        x0, y0, x1, y1 = data.box_pixels(i)
        assert parts[i, 0, 0] * w == pytest.approx((x0 + x1) / 2) and parts[i, 0, 1] * h == pytest.approx((y0 + y1) / 2)
        pixel = data.render(i).getpixel((int(parts[i, 0, 0] * w), int(parts[i, 0, 1] * h)))
        assert pixel != (255, 255, 255)  # the centre is inside the glyph, not on its white frame
    # in the frame of input_boxes: None as they are when a transform changes the frame
    assert SyntheticFGVC(4, num_classes=2, transform=lambda im: im).input_parts is None


def test_evaluate_scores_the_synthetic_stand_in_with_no_download():
    data = SyntheticFGVC(6, num_classes=3, image_size=64, split="test")
    result = fgvc.evaluate(tiny("glsim", 3, 64), data, parts=True, progress=False)
    assert list(result.parts) == ["detail"] and result.parts["detail"]["visible"] == 6
    assert {"in_box", "similarity_peak", "similarity_mass", "uniform_mass"} <= set(result.parts["detail"])
    assert "| detail | 6 |" in result.parts_table()


def fake_result(parts: list[str], maps: dict[str, float], radius: float = 1.0) -> SimpleNamespace:
    """What plot_parts reads of an EvalResult: its per-part scores and radius."""
    row = {"visible": 10.0, "uniform_mass": 5.0}
    for name, value in maps.items():
        row.update({f"{name}_peak": value, f"{name}_mass": value / 2})
    return SimpleNamespace(parts={p: dict(row) for p in parts}, part_radius=radius)


def test_the_figure_has_one_bar_per_part_and_method_and_says_its_score_and_radius():
    results = {"vit": fake_result(PART_NAMES, {"attention": 10, "rollout": 20}, 1.5),
               "glsim": fake_result(PART_NAMES, {"attention": 10, "rollout": 20, "similarity": 60}, 1.5),
               "dcal": fake_result(PART_NAMES, {"attention": 10, "rollout": 20, "glca_attention": 40}, 1.5),
               "transfg": fake_result(PART_NAMES, {"attention": 10, "rollout": 30}, 1.5)}
    fig = plot_parts(results, "peak", pyplot=False)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == len(PART_NAMES) * 4  # 15 parts x 4 methods
    assert [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == PART_NAMES
    assert "peak" in ax.get_title() and "1.5" in ax.get_title() and "1.5" in ax.get_xaxis().get_label_text()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # each method's own map by default (GLSim's similarity, DCAL's GLCA), else the last block's attention
    assert labels[:4] == ["vit (attention)", "glsim (similarity)", "dcal (glca attention)", "transfg (attention)"]
    widths = sorted({round(b.get_width()) for b in bars})
    assert widths == [10, 40, 60]
    mass = plot_parts(results, "mass", maps="rollout", pyplot=False).axes[0]
    assert {round(p.get_width()) for p in mass.patches if p.get_height() > 0} == {10, 15}
    assert "mass" in mass.get_xaxis().get_label_text()


def test_the_figure_refuses_results_without_parts_or_of_different_radii():
    with pytest.raises(ValueError, match="parts=True"):
        plot_parts({"vit": SimpleNamespace(parts=None, part_radius=None)})
    with pytest.raises(ValueError, match="different radii"):
        plot_parts({"a": fake_result(["x"], {"rollout": 1}, 1.0), "b": fake_result(["x"], {"rollout": 1}, 2.0)})
    with pytest.raises(ValueError, match="score is one of"):
        plot_parts({"a": fake_result(["x"], {"rollout": 1})}, "area")


def test_the_report_has_the_part_table_and_figure_when_parts_were_scored(tmp_path):
    data = SyntheticFGVC(6, num_classes=3, image_size=64, split="test")
    model = tiny("dcal", 3, 64)
    with_parts = fgvc.evaluate(model, data, parts=True, progress=False)
    written = save_evaluation(with_parts, tmp_path / "parts", examples=0)
    assert tmp_path / "parts" / "parts.md" in written and tmp_path / "parts" / "parts.png" in written
    assert (tmp_path / "parts" / "parts.png").read_bytes().startswith(b"\x89PNG")
    assert "| detail | 6 |" in (tmp_path / "parts" / "parts.md").read_text()
    save_evaluation(fgvc.evaluate(model, data, progress=False), tmp_path / "plain", examples=0)
    assert not (tmp_path / "plain" / "parts.md").exists() and not (tmp_path / "plain" / "parts.png").exists()


def synthetic_checkpoint(tmp_path):
    recipe = dict(name="synth", seeds=[0], model=dict(method="glsim", img_size=64, top_k=2, **TINY),
                  data=dict(dataset="synthetic", options=dict(num_classes=3, train=6, val=3, test=6)),
                  train=dict(epochs=1, batch_size=3))
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "synth"), "--no-progress"]) == 0
    return tmp_path / "synth" / "seed0" / "best.safetensors"


def test_fgvc_eval_parts_scores_the_synthetic_detail_and_writes_the_report(tmp_path, capsys):
    checkpoint = synthetic_checkpoint(tmp_path)
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", "none", "--parts", "--part-radius", "2",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Within 2 grid cell(s)" in text and "| detail | 6 |" in text and "parts.png" in text
    assert (out / "parts.png").is_file() and "| detail | 6 |" in (out / "parts.md").read_text()
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", "none", "--out", str(tmp_path / "plain"),
                 "--no-progress"]) == 0
    assert not (tmp_path / "plain" / "parts.md").exists()  # off by default


def cub_checkpoint(tmp_path, root):
    """A tiny GLSim on the CUB folder's classes, saved with the config.yaml fgvc train writes beside it."""
    model = tiny("glsim", 2, 32, CUB200(root, "test").classes)
    path = fgvc.save_model(model, tmp_path / "cub" / "best.safetensors")
    path.with_name("config.yaml").write_text(yaml.safe_dump(dict(data=dict(dataset="cub", resize=36))))
    return path


def test_fgvc_eval_parts_on_cub_maps_the_parts_through_the_test_transform(tmp_path, capsys):
    root = write_cub(tmp_path / "CUB_200_2011")
    checkpoint = cub_checkpoint(tmp_path, root)
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--parts", "--no-progress"]) == 0
    text = capsys.readouterr().out
    expected = fgvc.evaluate(  # the same numbers as the API's on the wrapped split
        fgvc.load_model(checkpoint), fgvc.data.parts.EvalParts(
            CUB200(root, "test", build_transforms(fgvc.load_model(checkpoint), train=False, resize=36)), 32,
            resize=36), parts=True, progress=False)
    assert expected.parts_table() in text


def test_fgvc_eval_parts_without_parts_is_one_line_naming_the_data(tmp_path, capsys):
    checkpoint = cub_checkpoint(tmp_path, write_cub(tmp_path / "with_parts"))
    root = write_cub(tmp_path / "CUB_200_2011", parts=False)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--parts", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--parts" in err and str(root) in err and "parts/part_locs.txt" in err
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--parts", "--part-radius", "0"]) == 1
    assert "--part-radius 0" in capsys.readouterr().err
