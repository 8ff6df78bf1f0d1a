"""Tables with chance beside every accuracy, the small-mode banner, and finding data folders."""

import numpy as np
import pytest
from test_datasets import make_cub

from fgvc.data import cub_subset, find_dataset
from fgvc.engine.evaluate import EvalResult
from fgvc.studies.report import chance_levels, results_table, smoke_banner


def result(targets, predictions, classes):
    t, p = np.asarray(targets), np.asarray(predictions)
    cm = np.zeros((classes, classes), dtype=int)
    np.add.at(cm, (t, p), 1)
    top1 = 100.0 * float((t == p).mean())
    return EvalResult(top1=top1, top5=100.0, loss=1.0, num_samples=len(t), per_class_accuracy=np.zeros(classes),
                      confusion_matrix=cm, predictions=p, targets=t)


def test_chance_levels_by_hand():
    c = chance_levels([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], num_classes=6, box_fractions=[0.25, 0.75])
    assert c.top1 == pytest.approx(100 / 6) and c.top5 == pytest.approx(500 / 6)
    assert c.recall1 == pytest.approx(100 / 11)  # one other image of the class among 11
    assert c.pointing_game == pytest.approx(50.0)  # a random point lands in the box half the time
    assert chance_levels([0, 1, 2], num_classes=5).top5 is None  # top-5 of 5 classes is 100% by construction


def test_results_table_has_a_chance_row_per_dataset_and_no_top5_with_few_classes():
    results = {("cub", "vit"): result([0, 1, 2, 3], [0, 1, 2, 0], 4),
               ("cub", "glsim"): result([0, 1, 2, 3], [0, 1, 2, 3], 4),
               ("cars", "vit"): result(list(range(8)), list(range(8)), 8)}
    rows = [line.split() for line in results_table(results).splitlines()[2:]]
    assert [r[:2] for r in rows] == [["cub", "chance"], ["cub", "vit"], ["cub", "glsim"], ["cars", "chance"],
                                     ["cars", "vit"]]
    assert rows[0][2] == "25.0" and rows[1][2] == "75.0" and rows[3][2] == "12.5"
    assert rows[1][3] == "-" and rows[3][3] == "62.5" and rows[4][3] == "100.0"  # top-5 only beyond 5 classes


def test_smoke_banner_says_the_numbers_are_not_meaningful(capsys, monkeypatch):
    assert smoke_banner(False) == "" and capsys.readouterr().out == ""
    monkeypatch.setenv("FGVC_SMOKE", "1")
    assert "NOT meaningful" in smoke_banner() and "NOT meaningful" in capsys.readouterr().out


def test_find_dataset_takes_the_first_folder_in_the_official_layout(tmp_path, monkeypatch):
    cub = make_cub(tmp_path / "CUB_200_2011")
    assert find_dataset("cub", None, tmp_path / "nothing", cub) == cub
    assert find_dataset("cars", cub) is None
    (tmp_path / "cars" / "devkit").mkdir(parents=True)
    assert find_dataset("cars", tmp_path / "cars") == tmp_path / "cars"
    with pytest.raises(ValueError, match="no marker"):
        find_dataset("imagenet", cub)
    monkeypatch.setenv("FGVC_CUB_SUBSET", str(cub))
    assert cub_subset() == cub
    monkeypatch.setenv("FGVC_CUB_SUBSET", str(tmp_path / "nothing"))
    assert cub_subset() is None
