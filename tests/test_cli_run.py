"""``fgvc train``, ``fgvc eval`` and ``fgvc predict`` on a small official CUB layout, end to end."""

import json
import re

import pytest
import yaml
from conftest import TINY
from test_datasets import make_cub, write_image

from fgvc.cli import main


@pytest.fixture
def cub_run(tmp_path, capsys):
    root = make_cub(tmp_path / "CUB_200_2011")
    recipe = dict(
        name="tiny_cub",
        expected_top1=None,
        source="a test",
        seeds=[0],
        model=dict(method="glsim", img_size=32, top_k=2, **TINY),
        data=dict(dataset="cub", root="set-on-the-command-line", val_fraction=0.5, resize=36),
        train=dict(epochs=2, batch_size=2, lr=1e-3),
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    code = main(["train", "--config", str(path), "--set", f"data.root={root}", "train.lr=0.002", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    return root, out, capsys.readouterr().out


def test_train_writes_checkpoints_config_and_results(cub_run):
    root, out, printed = cub_run
    assert (out / "seed0" / "best.safetensors").is_file() and (out / "seed0" / "last.safetensors").is_file()
    config = yaml.safe_load((out / "seed0" / "config.yaml").read_text())
    assert config["train"]["lr"] == 0.002 and config["data"]["root"] == str(root)  # --set applied and saved
    assert {"fgvc", "torch", "timm", "git_commit"} <= set(config["run_info"])
    results = json.loads((out / "results.json").read_text())
    assert results["name"] == "tiny_cub" and len(results["runs"]) == 1
    assert "| mean ± std |" in printed


def test_eval_reads_the_run_config_and_reports_metrics(cub_run, capsys, tmp_path):
    root, out, _ = cub_run
    metrics = tmp_path / "metrics.json"
    code = main(["eval", "--checkpoint", str(out / "seed0" / "best.safetensors"), "--data", str(root),
                 "--out", str(metrics), "--no-progress"])
    assert code == 0
    saved = json.loads(metrics.read_text())
    assert saved["num_samples"] == 3 and 0 <= saved["top1"] <= 100 and "mean_iou" in saved  # CUB has boxes
    assert "top1" in capsys.readouterr().out


def test_eval_on_the_wrong_dataset_names_the_class_mismatch(cub_run, tmp_path, capsys):
    _, out, _ = cub_run
    other = tmp_path / "other"
    for cls in ("a", "b", "c", "d"):
        write_image(other / "test" / cls / "x.jpg")
        write_image(other / "train" / cls / "x.jpg")
    code = main(["eval", "--checkpoint", str(out / "seed0" / "best.safetensors"), "--data", str(other),
                 "--dataset", "folder"])
    assert code == 1
    assert re.fullmatch(r"fgvc: error: .*has 4 classes but checkpoint .* has 3.*\n", capsys.readouterr().err)


def test_predict_prints_top_classes_with_names(cub_run, capsys):
    root, out, _ = cub_run
    image = sorted((root / "images").rglob("*.jpg"))[0]
    code = main(["predict", "--checkpoint", str(out / "seed0" / "best.safetensors"), str(image), "--topk", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(image) in printed and printed.count("%") == 2
    classes = printed.replace(str(image), "")  # the image's own path names its class folder
    assert sum(name in classes for name in ("Albatross", "Auklet", "Blackbird")) == 2  # class names, not ids


def test_predict_names_an_unreadable_file(cub_run, tmp_path, capsys):
    _, out, _ = cub_run
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert main(["predict", "--checkpoint", str(out / "seed0" / "best.safetensors"), str(broken)]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    with pytest.raises(Exception, match="broken.jpg"):  # --debug: the exception itself, with its traceback
        main(["predict", "--checkpoint", str(out / "seed0" / "best.safetensors"), str(broken), "--debug"])


def test_every_option_has_help():
    from fgvc.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "eval", "predict"):
        for action in subparsers[name]._actions:
            assert action.help, f"fgvc {name} {action.option_strings or action.dest} has no help"


def test_train_resume_continues_the_finished_run_instead_of_starting_over(cub_run, tmp_path):
    root, out, _ = cub_run
    before = json.loads((out / "results.json").read_text())["runs"][0]
    log_lines = (out / "seed0" / "log.jsonl").read_text().splitlines()
    config = out / "seed0" / "config.yaml"
    recipe = yaml.safe_load(config.read_text())
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k not in ("run_info", "resolved_fit_arguments")}))
    assert main(["train", "--config", str(path), "--out", str(out), "--resume", "--no-progress"]) == 0
    after = json.loads((out / "results.json").read_text())["runs"][0]
    assert after["test_top1"] == before["test_top1"] and after["best_epoch"] == before["best_epoch"]
    epochs_logged = [json.loads(line) for line in (out / "seed0" / "log.jsonl").read_text().splitlines()]
    assert len(epochs_logged) == len(log_lines)  # nothing was trained again


def test_torchrun_fgvc_train_with_two_processes_writes_one_set_of_results(tmp_path):
    # torchrun --nproc_per_node=2 -m fgvc train ...: gloo on the CPU, rank 0 alone writes, test metrics exact
    import os
    import subprocess
    import sys

    root = make_cub(tmp_path / "CUB_200_2011")
    recipe = dict(
        name="ddp", expected_top1=None, source="a test", seeds=[0],
        model=dict(method="vit", img_size=32, **TINY),
        data=dict(dataset="cub", root=str(root), val_fraction=0.5, resize=36),
        train=dict(epochs=1, batch_size=1, lr=1e-3, device="cpu"),
    )
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fgvc",
           "train", "--config", str(path), "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.count("| mean ± std |") == 1  # printed by rank 0 only
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert (out / "seed0" / "best.safetensors").is_file() and (out / "seed0" / "log.jsonl").is_file()
    # the sharded test evaluation equals a single-process evaluation of the saved checkpoint
    single = main(["eval", "--checkpoint", run["checkpoint"], "--data", str(root), "--out", str(tmp_path / "m.json"),
                   "--no-progress"])
    assert single == 0
    assert json.loads((tmp_path / "m.json").read_text())["top1"] == pytest.approx(run["test_top1"])
