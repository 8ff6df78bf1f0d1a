"""The demo's methods train side by side in worker processes with the same numbers, and its figure shows every
test image in colour beside the maps."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from fgvc.cli import build_parser
from fgvc.methods.base import create_model
from fgvc.studies import demo
from fgvc.studies.demo import QUICK, run_demo
from fgvc.viz import denormalize

TINY = replace(QUICK, train=40, val=20, test=20, epochs=1, batch_size=20, methods=("vit", "glsim"))
METRICS = ("method", "seed", "top1", "top5", "crop_iou", "pointing_game", "params_m")


def test_several_workers_give_the_table_of_one_at_a_time(tmp_path, capsys):
    serial = run_demo(out_dir=tmp_path / "serial", settings=TINY, seeds=[0, 1], progress=False)
    parallel = run_demo(out_dir=tmp_path / "parallel", settings=TINY, seeds=[0, 1], progress=False, workers=2)
    assert [[r[k] for k in METRICS] for r in parallel] == [[r[k] for k in METRICS] for r in serial]
    saved = json.loads((tmp_path / "parallel" / "results.json").read_text())
    assert saved["workers"] == 2 and saved["versions"]["threads"] == TINY.threads
    for seed in (0, 1):
        assert (tmp_path / "parallel" / f"seed{seed}" / "where_they_look.png").stat().st_size > 10_000
        assert (tmp_path / "parallel" / f"seed{seed}" / "glsim" / "best.safetensors").exists()
    printed = capsys.readouterr().out
    assert printed.count("| method | seed | top-1 (%)") == 4  # as each run finishes and in the final table, twice


def test_workers_default_to_one_per_threads_cpu_cores_and_to_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert demo._count_workers(None, 5, 2, "cpu") == 4
    assert demo._count_workers(None, 3, 2, "cpu") == 3  # never more than there are runs
    assert demo._count_workers(None, 5, 2, "cuda") == 1
    assert demo._count_workers(3, 5, 2, "cuda") == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert demo._count_workers(None, 5, 2, "cpu") == 1  # a 2-core machine: one at a time, at 2 threads
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        demo._count_workers(0, 5, 2, "cpu")


def test_cli_parses_workers():
    assert build_parser().parse_args(["demo", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["demo"]).workers is None  # one per 2 cores
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--workers", "0"])


def test_the_figure_shows_each_test_image_in_colour_beside_the_methods_maps():
    import matplotlib.pyplot as plt

    from fgvc.studies.demo import looks_figure

    data = TINY.splits()["test"]
    torch.manual_seed(0)
    models = {m: create_model(m, backbone=TINY.backbone, pretrained=True, num_classes=TINY.num_classes,
                              img_size=TINY.img_size) for m in TINY.methods}
    n = 3
    fig = looks_figure(models, data, n)
    try:
        cols = 1 + len(models)
        grid = fig.axes[: n * cols]  # row-major; the colour bar comes last
        assert len(fig.axes) == n * cols + 1
        model = models["vit"]
        images = torch.stack([data[i][0] for i in range(n)])
        rgb = denormalize(images, model.data_config["mean"], model.data_config["std"])
        for i in range(n):
            first = grid[i * cols]
            shown = np.asarray(first.images[0].get_array())
            np.testing.assert_allclose(shown, rgb[i])  # the image itself, in colour
            assert np.abs(shown[..., 0] - shown[..., 1]).max() > 0.2
            assert first.get_xlabel() == f"true: {data.classes[data[i][1]]}"
            for ax in grid[i * cols + 1: (i + 1) * cols]:
                under = np.asarray(ax.images[0].get_array())  # the map's grey copy of the image
                assert np.abs(under[..., 0] - under[..., 1]).max() < 1e-6
                assert ax.get_xlabel() in data.classes  # the method's prediction
        assert [ax.get_title().split("\n")[0] for ax in grid[1:cols]] == list(models)
    finally:
        plt.close(fig)
