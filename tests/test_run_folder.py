"""A run folder belongs to one run: a new run never mixes its files with an earlier run's, a second writer
is refused by name, and a resume continues only the very run it was saved by (model options, data)."""

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import TINY
from test_train_evaluate import Blobs

import fgvc
from fgvc.cli import main
from fgvc.data.splits import SubsetDataset
from fgvc.engine.run_folder import LOCK_FILE, RunFolderInUse, claim_run_folder
from fgvc.engine.run_state import data_fingerprint
from fgvc.storage.checkpoint import load_train_state
from fgvc.studies.demo import run_demo

FIT = dict(epochs=1, batch_size=8, progress=False, tensorboard=False)


def _model(**options):
    torch.manual_seed(0)
    return fgvc.create_model("vit", num_classes=4, img_size=32, **TINY, **options)


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


class Files(Blobs):
    """Blobs that say which image files they are (as fgvc's image datasets do): ``root`` and ``samples``."""

    def __init__(self, n=16, first=0, root="/data/birds", order=None):
        super().__init__(n=n)
        self.root = root
        names = [f"{root}/c{t}/img{first + i:04d}.jpg" for i, t in enumerate(self.targets)]
        self.samples = list(zip(names, self.targets, strict=True))
        if order is not None:
            self.samples = [self.samples[i] for i in order]


class DiesAfter(Blobs):
    """Raises (a run killed) at the ``calls``-th image it is asked for."""

    def __init__(self, calls, **kwargs):
        super().__init__(**kwargs)
        self.left = calls

    def __getitem__(self, i):
        self.left -= 1
        if self.left == 0:
            raise RuntimeError("killed")
        return super().__getitem__(i)


# ----------------------------------------------------------------------------------- one run per folder
def test_a_new_run_in_a_folder_holding_a_finished_run_is_refused_naming_the_folder_and_files(tmp_path):
    """resume=False where another run's files are: refused before anything is written, and nothing is lost."""
    fgvc.fit(_model(), Blobs(n=16), Blobs(n=8, seed=1), out_dir=tmp_path, **FIT)
    before = _contents(tmp_path)
    with pytest.raises(FileExistsError, match=rf"{tmp_path} holds files of another run: best.safetensors, "
                                              r"last.safetensors, log.jsonl, train_state.safetensors; pass "
                                              r"overwrite=True \(--overwrite\) .* or resume=True"):
        fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    assert _contents(tmp_path) == before


def test_overwrite_removes_the_old_runs_files_so_none_is_left_beside_the_new_ones(tmp_path):
    """A new run without validation leaves no ``best.safetensors`` of the old one; files not fgvc's stay."""
    fgvc.fit(_model(), Blobs(n=16), Blobs(n=8, seed=1), out_dir=tmp_path, epochs=2, batch_size=8, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    history = fgvc.fit(_model(), Blobs(n=24), out_dir=tmp_path, overwrite=True, **FIT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.safetensors", "log.jsonl", "notes.txt", "train_state.safetensors"]
    _, state, _ = load_train_state(tmp_path / "train_state.safetensors")
    assert state["num_train"] == 24 and state["history"] == history.epochs
    assert fgvc.History.from_jsonl(tmp_path).epochs == history.epochs


def test_a_new_run_killed_before_its_first_save_leaves_nothing_of_the_old_run_to_resume(tmp_path):
    """overwrite=True removes the old run up front: a resume after the kill starts over, not from the old run."""
    fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, epochs=2, batch_size=8, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        fgvc.fit(_model(), DiesAfter(3, n=16), out_dir=tmp_path, overwrite=True, **FIT)
    assert not (tmp_path / "train_state.safetensors").exists() and not (tmp_path / "last.safetensors").exists()
    history = fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, resume=True, **FIT)
    assert [e["epoch"] for e in history.epochs] == [1]


def test_resume_true_restarts_over_the_log_of_a_run_killed_before_its_first_save(tmp_path):
    """A requeued job (resume=True) whose first attempt saved nothing but its log starts afresh."""
    with pytest.raises(RuntimeError, match="killed"):
        fgvc.fit(_model(), DiesAfter(3, n=16), out_dir=tmp_path, resume=True, **FIT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
    assert len(fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, resume=True, **FIT)) == 1


def test_resume_true_without_a_state_in_a_folder_of_another_run_is_refused(tmp_path):
    """Checkpoints but no train_state to continue: not this run's to resume, nor to write over silently."""
    fgvc.fit(_model(), Blobs(n=16), Blobs(n=8, seed=1), out_dir=tmp_path, **FIT)
    (tmp_path / "train_state.safetensors").unlink()
    with pytest.raises(FileExistsError, match=r"has no train_state.safetensors to resume from but holds files of "
                                              r"another run: best.safetensors, last.safetensors"):
        fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, resume=True, **FIT)


def test_overwrite_and_resume_of_the_same_folder_are_refused_together(tmp_path):
    """One starts a new run, the other continues the old one: asking for both is an error, not a guess."""
    fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    before = _contents(tmp_path)
    with pytest.raises(ValueError, match="overwrite=True starts a new run .* pass one of them"):
        fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, resume=True, overwrite=True, **FIT)
    assert _contents(tmp_path) == before


def test_overwrite_is_checked_like_the_other_options():
    with pytest.raises(ValueError, match="overwrite must be true or false, got 'yes'"):
        fgvc.TrainConfig(overwrite="yes")


# ----------------------------------------------------------------------------------- one writer
def test_a_second_process_writing_to_a_run_folder_is_refused_by_name(tmp_path):
    """While one process holds the folder, another's fit stops before writing, naming pid, host and time."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fgvc.engine.run_folder import claim_run_folder\n"
         f"with claim_run_folder({str(tmp_path)!r}):\n    print('locked', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        host = socket.gethostname()
        with pytest.raises(RunFolderInUse, match=rf"{tmp_path} is in use by pid {holder.pid} on host {host} since "
                                                 r"\d{4}-\d\d-\d\dT"):
            fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and not (tmp_path / LOCK_FILE).exists()


def test_the_stale_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path):
    """Same host, process gone: the lock a killed run left is taken over (with a warning), then released."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps(dict(pid=pid, host=socket.gethostname(), started="earlier")))
    with pytest.warns(UserWarning, match=rf"took over the lock of pid {pid} \(since earlier\), which no longer runs"):
        fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    assert (tmp_path / "last.safetensors").is_file() and not (tmp_path / LOCK_FILE).exists()


def test_a_lock_of_another_host_is_not_taken_over(tmp_path):
    """Whether a process on another machine still runs cannot be told: refused, saying which file to delete."""
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps(dict(pid=1, host="another-host.example", started="2024-01-01T00:00:00")))
    with pytest.raises(RunFolderInUse, match=rf"in use by pid 1 on host another-host.example since 2024-01-01.*"
                                             rf"delete {lock}"):
        fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    """An exception ends the run and frees its folder: the next run (here a resume) is not locked out."""
    fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    with pytest.raises(RuntimeError, match="killed"):
        fgvc.fit(_model(), DiesAfter(3, n=16), out_dir=tmp_path, epochs=2, batch_size=8, resume=True, progress=False)
    assert not (tmp_path / LOCK_FILE).exists()
    assert len(fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, epochs=2, batch_size=8, resume=True,
                        progress=False)) == 2


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    """A recipe holds its seed folder while its own fit runs there; the lock goes with the outer claim."""
    with claim_run_folder(tmp_path):
        with claim_run_folder(tmp_path):
            assert (tmp_path / LOCK_FILE).is_file()
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()


# ----------------------------------------------------------------------------------- resume: the same run
@pytest.mark.parametrize("option, value, saved", [("drop_path_rate", 0.1, 0.0), ("norm_eps", 1e-12, None)])
def test_resume_with_another_model_option_is_refused_naming_it(tmp_path, option, value, saved):
    """Every model option must be the saved one's (drop-path rate, LayerNorm epsilon, ...), not only the shapes."""
    fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    with pytest.raises(ValueError, match=rf"trained with {option}={saved!r}, the model has {value!r}"):
        fgvc.fit(_model(**{option: value}), Blobs(n=16), out_dir=tmp_path, epochs=2, batch_size=8, resume=True,
                 progress=False)


def test_resume_on_other_files_of_the_same_size_and_classes_is_refused(tmp_path):
    """Another dataset with as many samples of the same classes is other data: the file list says so."""
    fgvc.fit(_model(), Files(first=0), out_dir=tmp_path, **FIT)
    with pytest.raises(ValueError, match=r"train_data differs from the data of the run saved in .*: the same 16 "
                                         r"samples in number but other files or labels"):
        fgvc.fit(_model(), Files(first=100), out_dir=tmp_path, epochs=2, batch_size=8, resume=True, progress=False)


def test_resume_accepts_the_same_files_moved_elsewhere_or_listed_in_another_order(tmp_path):
    """The fingerprint is of (path relative to the dataset root, label) pairs, sorted."""
    fgvc.fit(_model(), Files(root="/data/birds"), out_dir=tmp_path, **FIT)
    moved = Files(root="/mnt/other/birds", order=list(reversed(range(16))))
    assert len(fgvc.fit(_model(), moved, out_dir=tmp_path, epochs=2, batch_size=8, resume=True, progress=False)) == 2


def test_the_fingerprint_of_a_subset_is_that_of_its_files():
    """A validation split carved with another seed is other training data; the same samples are the same."""
    data = Files(n=16)
    a, b = SubsetDataset(data, range(8)), SubsetDataset(data, range(8, 16))
    assert data_fingerprint(a) == data_fingerprint(SubsetDataset(data, list(reversed(range(8)))))
    assert data_fingerprint(a) != data_fingerprint(b)
    assert data_fingerprint(Blobs(n=16)) != data_fingerprint(Blobs(n=16, num_classes=2))  # labels only


# ----------------------------------------------------------------------------------- model options
@pytest.mark.parametrize("options, message", [
    (dict(drop_path_rate=-1), r"drop_path_rate must be in \[0, 1\), got -1"),
    (dict(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\), got 1.0"),
    (dict(norm_eps=0.0), r"norm_eps must be a finite number > 0 or null, got 0.0"),
    (dict(patch_stride=0), r"patch_stride must be an integer >= 1 or null, got 0"),
])
def test_model_options_out_of_range_are_refused_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        _model(**options)


def test_a_recipes_model_option_out_of_range_is_named_with_its_key():
    with pytest.raises(ValueError, match=r"model.drop_path_rate must be in \[0, 1\), got -1"):
        fgvc.load_recipe("glsim_cub_224", ["model.drop_path_rate=-1"])


# ----------------------------------------------------------------------------------- recipes, CLI, demo
def test_train_recipe_refuses_a_used_seed_folder_before_rewriting_its_config(tmp_path):
    """``fgvc train`` into an OUT with a finished run: refused, the run's config.yaml untouched; --overwrite runs."""
    from test_recipes import tiny_recipe

    recipe = dict(tiny_recipe(dataset="synthetic", options=dict(num_classes=3, train=12, val=6, test=6)), seeds=[0])
    fgvc.train_recipe(recipe, tmp_path)
    before = _contents(tmp_path / "seed0")
    changed = dict(recipe, train=dict(recipe["train"], lr=2e-3))
    with pytest.raises(FileExistsError, match=r"seed0 holds files of another run: best.safetensors, config.yaml"):
        fgvc.train_recipe(changed, tmp_path)
    assert _contents(tmp_path / "seed0") == before
    fgvc.train_recipe(changed, tmp_path, overwrite=True)
    assert "lr: 0.002" in (tmp_path / "seed0" / "config.yaml").read_text()


def test_fgvc_train_and_pretrain_take_overwrite(tmp_path, monkeypatch, capsys):
    """``--overwrite`` reaches train_recipe; a refused pretrain folder is one line and exit code 1."""
    seen = {}

    class Result:
        def to_markdown(self):
            return "trained"

    def train_recipe(recipe, out, seeds=None, **options):
        seen.update(options)
        return Result()

    monkeypatch.setattr("fgvc.studies.recipe.train_recipe", train_recipe)
    assert main(["train", "--config", "glsim_cub_224", "--out", str(tmp_path), "--overwrite"]) == 0
    assert seen["overwrite"] is True
    (tmp_path / "log.jsonl").write_text("")
    capsys.readouterr()
    assert main(["pretrain", "--out", str(tmp_path), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files of another run: log.jsonl; pass overwrite=True (--overwrite)" in err


def test_the_demo_run_twice_into_one_folder_replaces_its_own_runs(tmp_path):
    """``fgvc demo`` again into the same OUT: deliberately its own folders, replaced (not refused)."""
    from test_demo_cli import TINY as DEMO

    settings = replace(DEMO, methods=("vit",))
    first = run_demo(out_dir=tmp_path, settings=settings, progress=False)
    second = run_demo(out_dir=tmp_path, settings=settings, progress=False)
    assert [r["top1"] for r in first] == [r["top1"] for r in second]
    assert not (tmp_path / "vit" / LOCK_FILE).exists()


@pytest.mark.parametrize("bad", [dict(train=Blobs(n=0)), dict(tensorboard=True)])
def test_overwrite_removes_nothing_when_the_new_run_fails_its_checks(tmp_path, monkeypatch, bad):
    """The old run's files go only after every check of the new run passed (empty data, missing tensorboard)."""
    fgvc.fit(_model(), Blobs(n=16), out_dir=tmp_path, **FIT)
    before = _contents(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    options = dict(FIT, **{k: v for k, v in bad.items() if k != "train"})
    with pytest.raises((ValueError, ImportError), match="train_data is empty|pip install tensorboard"):
        fgvc.fit(_model(), bad.get("train", Blobs(n=16)), out_dir=tmp_path, overwrite=True, **options)
    assert _contents(tmp_path) == before and not (tmp_path / LOCK_FILE).exists()


DDP_WORKER = r'''
import json, os, sys
import torch
import fgvc
sys.path.insert(0, sys.argv[2])
from conftest import TINY
from test_train_evaluate import Blobs

torch.manual_seed(0)
model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
try:
    fgvc.fit(model, Blobs(n=16), epochs=1, batch_size=4, out_dir=sys.argv[1], progress=False, device="cpu")
    outcome = "trained"
except FileExistsError as e:
    outcome = f"refused: {e}"
with open(os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.txt"), "w") as f:
    f.write(outcome)
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_under_torchrun_every_rank_gets_rank_zeros_refusal(tmp_path):
    """Only rank 0 checks and locks the folder; its refusal reaches every rank (none waits for the others)."""
    out = tmp_path / "run"
    fgvc.fit(_model(), Blobs(n=16), out_dir=out, **FIT)
    before = _contents(out)
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    tests = os.path.dirname(__file__)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(out), tests, str(tmp_path)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # a guard against a hang
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    said = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert said[0] == said[1] and said[0].startswith(f"refused: {out} holds files of another run")
    assert _contents(out) == before and not (out / LOCK_FILE).exists()
