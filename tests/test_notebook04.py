"""Notebook 04 on the data it is for: an official-layout CUB folder (a class subset, as a recipe may train on)
and a Stanford Cars devkit folder, with real checkpoints trained by ``fgvc train``, given to the notebook through
FGVC_CUB_ROOT, FGVC_CARS_ROOT and FGVC_CHECKPOINTS; and the helpers it calls."""

import base64
import os
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import TINY
from nbclient import NotebookClient
from test_datasets import make_cub, write_image

from fgvc.cli import main
from fgvc.studies.notebook import evaluate_checkpoints, examples, parse_checkpoints

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_evaluate_cub_cars.ipynb"


def train(tmp_path: Path, name: str, dataset: str, root: Path, method: str, **data) -> Path:
    """A real checkpoint of a tiny model, trained one epoch by ``fgvc train`` (config.yaml beside it)."""
    model = dict(method=method, img_size=32, **TINY)
    if method == "glsim":
        model["top_k"] = 2
    recipe = dict(name=name, expected_top1=None, source="a test", seeds=[0], model=model,
                  data=dict(dataset=dataset, root=str(root), val_fraction=0.34, resize=36, **data),
                  train=dict(epochs=1, batch_size=2, lr=1e-3))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / name), "--no-progress"]) == 0
    return tmp_path / name / "seed0" / "best.safetensors"


def make_cars(base: Path) -> Path:
    """A Stanford Cars devkit folder (.mat annotations as the official download has them): 3 classes with long
    names, 4 training and 2 test images each, of varied non-square sizes, with boxes."""
    import numpy as np
    import scipy.io as sio

    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    rows = {"train": [], "test": []}
    for cls in (1, 2, 3):
        for k in range(6):
            split = "train" if k < 4 else "test"
            name = f"{len(rows[split]) + 1:05d}.jpg"
            rows[split].append((3 + k, 4, 30 + cls, 22, cls, name))
            write_image(base / f"cars_{split}" / name, size=(44 + 3 * k, 30 + cls), colour=(60 * cls, 20 * k, 90))
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    names = np.array(["AM General Hummer SUV 2000", "Mercedes-Benz Sprinter Extended Cargo Van 2012",
                      "Rolls-Royce Phantom Drophead Coupe Convertible 2012"], dtype=object)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    sio.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": np.array(rows["train"], dtype=fields)})
    sio.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": np.array(rows["test"], dtype=fields)})
    return base


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb04")
    cub = make_cub(tmp / "CUB_200_2011")  # 3 classes with sparse ids and boxes; the run keeps 2 of them
    cars = make_cars(tmp / "stanford_cars")
    checkpoints = {
        ("cub", "glsim"): train(tmp, "glsim_cub", "cub", cub, "glsim", classes=2),
        ("cub", "vit"): train(tmp, "vit_cub", "cub", cub, "vit", classes=2),
        ("cars", "dcal"): train(tmp, "dcal_cars", "cars", cars, "dcal"),
    }
    return cub, cars, checkpoints


def test_checkpoints_are_read_as_dataset_method_path():
    assert parse_checkpoints("cub:glsim=a.safetensors, cars:vit=/x/b.safetensors") == {
        ("cub", "glsim"): Path("a.safetensors"), ("cars", "vit"): Path("/x/b.safetensors")}
    assert parse_checkpoints({"cub": {"dcal": "c"}}) == {("cub", "dcal"): Path("c")}
    assert parse_checkpoints("") == {}
    with pytest.raises(ValueError, match="dataset:method=path"):
        parse_checkpoints("glsim=a.safetensors")


def test_each_checkpoint_is_evaluated_with_its_own_transform_and_classes(folders, capsys):
    cub, cars, checkpoints = folders
    runs = evaluate_checkpoints({**checkpoints, ("cars", "vit"): "missing.safetensors"}, {"cub": cub, "cars": cars})
    assert set(runs.results) == set(checkpoints)
    assert "skipped (no checkpoint file): cars:vit" in capsys.readouterr().out
    cub_test = runs.tests["cub"]
    assert len(cub_test.classes) == 2 and len(cub_test) == 2  # the run's class subset, not the folder's 3
    x, y = cub_test[0]
    assert tuple(x.shape) == (3, 32, 32)  # the checkpoint's test transform: a normalized tensor at its size
    for (dataset, _), result in runs.results.items():
        assert len(result.predictions) == len(runs.tests[dataset])  # the bug was 2903 predictions vs 139 items
    batch = examples(runs.tests["cars"], 2)
    assert batch["images"].shape == (2, 3, 32, 32) and batch["gt_boxes"].shape == (2, 4)


def test_notebook_04_runs_on_official_folders_with_real_checkpoints(folders, tmp_path, monkeypatch):
    cub, cars, checkpoints = folders
    monkeypatch.setenv("FGVC_SMOKE", "1")
    monkeypatch.setenv("FGVC_CUB_ROOT", str(cub))
    monkeypatch.setenv("FGVC_CARS_ROOT", str(cars))
    monkeypatch.setenv("FGVC_CHECKPOINTS", ",".join(f"{d}:{m}={p}" for (d, m), p in checkpoints.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "NOT meaningful" in text  # the small-mode banner
    for (dataset, method), path in checkpoints.items():
        assert f"{dataset}:{method}: {path}" in text  # evaluated, not replaced by stand-ins
    assert "stand-in" not in text.lower()
    table = [line.split() for line in text.splitlines() if line.startswith(("cub ", "cars "))]
    assert [row[:2] for row in table] == [["cub", "chance"], ["cub", "glsim"], ["cub", "vit"],
                                          ["cars", "chance"], ["cars", "dcal"]]
    assert table[0][2] == "50.0" and table[3][2] == "33.3"  # 2 and 3 classes
    assert all(row[3] == "-" for row in table)  # no top-5 with 5 classes or fewer
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4  # per-class bars (2), maps (2), the confused pair when there is one
    assert all(base64.b64decode(o["data"]["image/png"]).startswith(b"\x89PNG") for o in pngs)


def test_notebook_02_runs_a_recipe_as_published_on_official_data_and_laptop_sized_elsewhere(tmp_path, monkeypatch):
    from fgvc.studies.notebook import LAPTOP, recipe_for_here

    cub = make_cub(tmp_path / "CUB_200_2011")
    recipe, note = recipe_for_here("glsim_cub_224", cub, smoke=False)
    assert recipe["data"]["root"] == str(cub) and recipe["model"]["pretrained"] is True  # untouched otherwise
    assert "as published" in note
    recipe, note = recipe_for_here("glsim_cub_224", cub, smoke=True)
    assert recipe["model"]["img_size"] == LAPTOP["smoke"]["model.img_size"] and recipe["data"]["classes"] == 5
    monkeypatch.setenv("FGVC_CUB_SUBSET", str(tmp_path / "none"))
    recipe, note = recipe_for_here("vit_cub_224", tmp_path / "none", smoke=True)
    assert recipe["data"]["dataset"] == "synthetic" and "synthetic" in note and "top_k" not in recipe["model"]
