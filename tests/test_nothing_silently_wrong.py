"""Nothing silently wrong: what used to carry on with a poisoned, ignored or relabelled result now stops and says so.

Each test is one finding of a careful user's probe (crash, tamper, bad data, abuse): a non-finite update saved
as the "last good" checkpoint, backbone weights that did not match and were skipped, ``fgvc eval`` on another
split than training reported, duplicate ids relabelling images, resumed runs ignoring new settings, temporary
files left behind, errors that do not name the file, bit-flipped checkpoints and invalid settings.
"""

import json
import math

import pytest
import torch
from conftest import TINY
from PIL import Image
from safetensors.torch import load_file, save_file
from test_datasets import make_cub, write_image
from test_recipes import tiny_recipe
from test_train_evaluate import Blobs

import fgvc
from fgvc.cli import main
from fgvc.data import build_dataset, check_dataset
from fgvc.storage.checkpoint import load_train_state
from fgvc.studies.recipe import evaluate_checkpoint, load_recipe, train_recipe


def _all_finite(path):
    return all(torch.isfinite(t).all() for t in load_file(str(path)).values() if t.is_floating_point())


def _poison_on_call(model, call):
    """The ``call``-th loss is finite, but its gradient is NaN: the update that follows makes the weights NaN."""
    loss, calls = model.loss, [0]

    def poisoned(out, targets, **kwargs):
        calls[0] += 1
        value = loss(out, targets, **kwargs)
        if calls[0] == call:
            p = model.head.weight
            value = value + 0.0 * torch.sqrt(p - p.detach()).sum()  # forward 0, backward 0 * inf = NaN
        return value

    model.loss = poisoned


# ------------------------------------------------------------------ 1. a non-finite update is never saved
@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_a_finite_loss_whose_update_poisons_the_weights_is_never_saved(tmp_path, grad_clip):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, out_dir=tmp_path, progress=False, grad_clip=grad_clip)
    good = {p.name: p.read_bytes() for p in tmp_path.glob("*.safetensors")}
    _poison_on_call(model, 2)  # step 6 (epoch 2) has a finite loss; the step-6 save must not keep its update
    with pytest.raises(FloatingPointError, match=r"not finite after optimizer step 6 \(epoch 2") as err:
        fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False,
                 save_every_steps=3, grad_clip=grad_clip)
    assert ("gradient clipping" in str(err.value)) == (grad_clip is None)  # suggested only when it is off
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.safetensors")} == good
    assert all(_all_finite(p) for p in tmp_path.glob("*.safetensors"))
    model_state, saved, _ = load_train_state(tmp_path / "train_state.safetensors")
    assert saved["step"] == 4  # resuming from it works


def test_a_non_finite_loss_names_the_failing_step(tmp_path):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)

    class Poisoned(Blobs):
        def __getitem__(self, i):
            image, target = super().__getitem__(i)
            return image * math.nan, target

    with pytest.raises(FloatingPointError, match=r"loss is nan at optimizer step 1 \(epoch 1") as err:
        fgvc.fit(model, Poisoned(n=32), epochs=1, batch_size=8, progress=False)
    assert "gradient clipping" not in str(err.value)  # it is on by default


def test_weights_that_turn_non_finite_in_the_last_epoch_are_not_returned_silently():
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    _poison_on_call(model, 4)  # the last step of the only epoch: no later loss would show it
    with pytest.raises(FloatingPointError, match="not finite after optimizer step 4"):
        fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, progress=False)


# ------------------------------------------------------------------ 2. strict backbone loading
def _trained_vit(tmp_path):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), Blobs(n=8, seed=1), epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    return {k[len("backbone.") :]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}


@pytest.mark.parametrize("name", ["best.safetensors", "last.safetensors", "train_state.safetensors"])
def test_fgvc_checkpoints_load_as_a_backbone(tmp_path, name):
    trained = _trained_vit(tmp_path)
    model = fgvc.create_model("glsim", num_classes=7, img_size=32, top_k=2, checkpoint_path=tmp_path / name, **TINY)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(trained) and all(torch.equal(loaded[k], trained[k]) for k in trained)
    report = model.backbone.load_report
    assert report["loaded"] == len(trained) and report["file"] == str(tmp_path / name)


def test_a_file_that_does_not_fit_the_backbone_is_refused_with_a_report(tmp_path):
    trained = _trained_vit(tmp_path)
    timm_style = {k[len("vit.") :]: v.contiguous() for k, v in trained.items()}
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in timm_style.items() if not k.startswith("blocks.1.")}, str(partial))
    with pytest.raises(ValueError, match=r"partial.safetensors does not fit test_vit: .*missing 12 .*blocks\.1\.") as e:
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=partial, **TINY)
    assert "matched" in str(e.value)
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, str(unrelated))
    with pytest.raises(ValueError, match=r"unrelated.safetensors does not fit .*matched 0 of 30.*unexpected 2"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=unrelated, **TINY)
    wrong_shape = tmp_path / "wide.safetensors"
    save_file(dict(timm_style, **{"blocks.0.mlp.fc1.bias": torch.zeros(7)}), str(wrong_shape))
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1\.bias: file \(7,\), model \(192,\)"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=wrong_shape, **TINY)


# ------------------------------------------------------------------ 3. eval evaluates the split training reported
def test_eval_of_a_synthetic_recipe_evaluates_the_reported_test_split(tmp_path, capsys):
    recipe = tiny_recipe(dataset="synthetic", options=dict(num_classes=3, train=24, val=12, test=10))
    result = train_recipe(dict(recipe, seeds=[0]), tmp_path)
    (run,) = result.runs
    ev = evaluate_checkpoint(run["checkpoint"], None)
    assert ev.num_samples == 10 and ev.top1 == pytest.approx(run["test_top1"])
    assert main(["eval", "--checkpoint", run["checkpoint"], "--data", "unused", "--split", "val", "--no-progress"]) == 0
    assert "      images: 12" in capsys.readouterr().out


# ------------------------------------------------------------------ 4. duplicate ids are an error
def test_a_duplicate_image_id_is_an_error_naming_the_file_and_lines(tmp_path):
    root = make_cub(tmp_path / "cub")
    lines = (root / "images.txt").read_text().splitlines()
    lines[8] = "2 " + lines[8].split(maxsplit=1)[1]  # line 9 reuses the id of line 2
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"images.txt: image id '2' on lines 2 and 9"):
        build_dataset("cub", root, "train")
    report = check_dataset("cub", root, quick=True)
    assert not report.ok and "image id '2' on lines 2 and 9" in str(report)


# ------------------------------------------------------------------ 5. resume with other settings
def test_resume_with_changed_settings_says_which_differ(tmp_path):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=32), epochs=1, batch_size=8, lr=1e-3, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr=0.01 \(saved: 0.001\)"):
        fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, lr=1e-2, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"weight_decay=0.0 \(saved: 0.05\)"):
        fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0, out_dir=tmp_path,
                 resume=True, progress=False)
    history = fgvc.fit(model, Blobs(n=32), epochs=2, batch_size=8, lr=1e-3, out_dir=tmp_path, resume=True,
                       progress=False)
    assert len(history) == 2


# ------------------------------------------------------------------ 6. temporary files of a killed write
def test_temporary_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    stale = [tmp_path / ".train_state.safetensors.tmp-999999999", tmp_path / ".last.safetensors.tmp-999999998"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    mine = tmp_path / "notes.tmp-1"
    mine.write_text("not fgvc's")
    fgvc.fit(model, Blobs(n=16), epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False)
    assert not any(p.exists() for p in stale) and mine.exists()


# ------------------------------------------------------------------ 7. errors name the file
def test_errors_name_the_file(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt.safetensors is not a readable safetensors file"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=corrupt, **TINY)

    tensors = load_file(str(path))
    for name, text in (("badjson", "{not json"), ("nomethod", json.dumps(dict(num_classes=3))),
                       ("notadict", "[1, 2]")):
        crafted = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(crafted), metadata={"fgvc": text})
        with pytest.raises(ValueError, match=f"{name}.safetensors"):
            fgvc.load_model(crafted)

    fgvc.fit(model, Blobs(n=16, num_classes=3), epochs=1, batch_size=8, out_dir=tmp_path / "run", progress=False)
    state = tmp_path / "run" / "train_state.safetensors"
    crafted = tmp_path / "state.safetensors"
    save_file(load_file(str(state)), str(crafted), metadata={"fgvc_train_state": json.dumps(dict(step=3))})
    with pytest.raises(ValueError, match=r"state.safetensors: the training state's metadata is incomplete"):
        fgvc.fit(model, Blobs(n=16, num_classes=3), epochs=2, batch_size=8, resume=crafted, progress=False)

    root = make_cub(tmp_path / "cub")
    raw = (root / "images.txt").read_bytes().replace(b"Sooty", b"S\xe9oty", 1)
    (root / "images.txt").write_bytes(raw)
    with pytest.raises(ValueError, match=r"images.txt, line 1: not UTF-8 text"):
        build_dataset("cub", root, "train")


# ------------------------------------------------------------------ 8. integrity of the tensor data
def _flip_a_bit_in_the_data(path):
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    raw[8 + header + (len(raw) - 8 - header) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_bit_flip_in_a_checkpoint_is_detected_on_load(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16, num_classes=3), epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    for name in ("last.safetensors", "train_state.safetensors"):
        _flip_a_bit_in_the_data(tmp_path / name)
    with pytest.raises(ValueError, match=r"last.safetensors is corrupt: .*checksum"):
        fgvc.load_model(tmp_path / "last.safetensors")
    with pytest.raises(ValueError, match=r"last.safetensors is corrupt"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=tmp_path / "last.safetensors", **TINY)
    with pytest.raises(ValueError, match=r"train_state.safetensors is corrupt"):
        fgvc.fit(model, Blobs(n=16, num_classes=3), epochs=2, batch_size=8, out_dir=tmp_path, resume=True,
                 progress=False)


def test_predict_never_prints_a_nan_prediction(tmp_path, capsys):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    with torch.no_grad():
        model.head.weight.fill_(math.nan)
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"fgvc": json.dumps(dict(model.config, class_names=None, format=1))})
    image = write_image(tmp_path / "bird.png", size=(32, 32))
    with pytest.raises(FloatingPointError, match=r"not finite \(NaN or inf\) for .*bird.png"):
        main(["predict", "--checkpoint", str(path), str(image), "--debug"])
    assert "nan" not in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(path), str(image)]) == 1  # without --debug: one line
    captured = capsys.readouterr()
    assert "nan" not in captured.out and captured.err.startswith("fgvc: error: the model's output is not finite")
    with pytest.raises(FloatingPointError, match="not finite"):
        fgvc.evaluate(model, Blobs(n=8, num_classes=3))


# ------------------------------------------------------------------ 9. settings checked up front
@pytest.mark.parametrize("override,message", [
    ("train.batch_size=0", "train.batch_size must be an integer >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
    ("train.lr=nan", "train.lr must be a finite number > 0, got 'nan'"),
    ("train.lr=-1", "train.lr must be a finite number > 0, got -1"),
    ("train.grad_clip=0", "train.grad_clip must be a finite number > 0 or null, got 0"),
    ("train.label_smoothing=1.5", r"train.label_smoothing must be in \[0, 1\), got 1.5"),
    ("data.val_fraction=-0.2", r"data.val_fraction must be in \[0, 1\), got -0.2"),
    ("data.val_fraction=1", r"data.val_fraction must be in \[0, 1\), got 1"),
])
def test_bad_recipe_settings_are_one_line_errors(override, message):
    with pytest.raises(ValueError, match=message) as err:
        load_recipe("vit_cub_224", [override])
    assert "\n" not in str(err.value)


def test_numbers_written_the_short_way_are_read_as_numbers():
    assert load_recipe("vit_cub_224", ["train.lr=1e-3"])["train"]["lr"] == 0.001  # YAML 1.1 reads '1e-3' as text


@pytest.mark.parametrize("settings,message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
    (dict(lr=math.nan), "lr must be a finite number > 0, got nan"),
    (dict(lr="1e-3"), "lr must be a finite number > 0, got '1e-3'"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0, got -1.0"),
    (dict(amp="fp8"), "amp must be"),
])
def test_fit_checks_its_settings_before_anything_runs(settings, message):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    with pytest.raises(ValueError, match=message):
        fgvc.fit(model, Blobs(n=16), **dict(dict(epochs=1, batch_size=8, progress=False), **settings))


def test_a_recipe_path_that_is_a_directory_is_named_as_such(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not a recipe file"):
        load_recipe(tmp_path)


def test_predict_topk_must_be_positive(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    image = write_image(tmp_path / "bird.png", size=(32, 32))
    with pytest.raises(ValueError, match="topk must be >= 1, got 0"):
        main(["predict", "--checkpoint", str(path), str(image), "--topk", "0", "--debug"])


def test_eval_out_that_cannot_be_written_fails_before_evaluating(tmp_path, monkeypatch):
    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated before checking --out")

    monkeypatch.setattr("fgvc.studies.recipe.evaluate_checkpoint", evaluated)
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    for out in (tmp_path / "no" / "such" / "dir" / "m.json", tmp_path / "m.safetensors"):  # --out: .json or DIR
        with pytest.raises(OSError, match="cannot write the (metrics|evaluation report)"):
            main(["eval", "--checkpoint", str(path), "--data", str(tmp_path), "--out", str(out), "--debug"])


def test_data_check_warns_about_huge_images(tmp_path):
    root = make_cub(tmp_path / "cub")
    huge = sorted((root / "images").rglob("*.jpg"))[0]
    Image.new("1", (10_000, 10_000)).save(huge, format="PNG")  # 100 megapixels, a small file
    report = check_dataset("cub", root, quick=True)
    assert report.ok and any("100.0 megapixels" in n and huge.name in n for n in report.warnings)
    assert "100.0 megapixels" in str(report)


def test_the_same_checks_guard_the_recipe_and_fit():
    from fgvc.settings import check_fit_settings

    assert check_fit_settings(dict(lr=0.1, epochs=3)) is None
    with pytest.raises(ValueError, match="train.epochs must be an integer >= 1, got 2.5"):
        check_fit_settings(dict(epochs=2.5), prefix="train.")



# ------------------------------------------------------------------ found by probing further
def test_resuming_with_fewer_epochs_than_already_trained_is_refused(tmp_path):
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), epochs=3, batch_size=8, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"already trained 3 epochs.*epochs=2"):
        fgvc.fit(model, Blobs(n=16), epochs=2, batch_size=8, out_dir=tmp_path, resume=True, progress=False)
    assert len(fgvc.fit(model, Blobs(n=16), epochs=3, batch_size=8, out_dir=tmp_path, resume=True,
                        progress=False)) == 3  # the finished run itself


def test_validation_classes_in_another_order_are_refused():
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    val = Blobs(n=8, seed=1)
    val.classes = ["c1", "c0", "c2", "c3"]  # label 0 means another class than in training
    with pytest.raises(ValueError, match=r"val_data's classes differ from train_data's: label 0 is 'c1' vs 'c0'"):
        fgvc.fit(model, Blobs(n=16), val, epochs=1, batch_size=8, progress=False)


def test_repeated_seeds_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"seeds must be .*without repeats, got \[0, 0\]"):
        load_recipe("vit_cub_224", ["seeds=[0, 0]"])
    with pytest.raises(ValueError, match=r"seeds .*without repeats, got \[1, 1\]"):
        train_recipe(tiny_recipe(dataset="synthetic"), tmp_path, seeds=[1, 1])


def test_an_image_listed_twice_in_one_split_is_a_problem(tmp_path):
    root_split = tmp_path / "folder"
    for cls in ("a", "b"):
        write_image(root_split / cls / "x.jpg")
    (root_split / "split.txt").write_text("a/x.jpg train\nb/x.jpg test\na/x.jpg train\n")
    with pytest.raises(ValueError, match=r"split.txt: image 'a/x.jpg' on lines 1 and 3"):
        build_dataset("folder", root_split, "train")


def test_class_names_that_do_not_match_the_head_are_refused(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"fgvc": json.dumps(dict(model.config, class_names=["a", "b"], format=1))})
    with pytest.raises(ValueError, match=r"m.safetensors: 2 class names for 3 classes"):
        fgvc.load_model(path)
