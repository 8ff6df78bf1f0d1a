"""Storage integrity: fgvc's files carry a checksum of their metadata as well as of their tensors, loading a
checkpoint never reaches outside the file, and what a file is called matches what it is."""

import json

import pytest
import timm
import torch
from conftest import TINY
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fgvc
import fgvc.backbones.shipped
from fgvc.io import (
    CHECKSUM_KEY,
    METADATA_CHECKSUM_KEY,
    add_metadata_checksum,
    load_state_dict_file,
    metadata_checksum,
    tensor_checksum,
)
from fgvc.storage.checkpoint import load_train_state, save_train_state

NAMES = [f"species {i}" for i in range(4)]


def _glsim(tmp_path, name="best.safetensors"):
    """A tiny GLSim with every weight random (so any change shows in the logits), saved with class names."""
    model = fgvc.create_model("glsim", num_classes=4, img_size=32, top_k=2, drop_path_rate=0.1, **TINY).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model.class_names = list(NAMES)
    return model, fgvc.save_model(model, tmp_path / name)


def _header(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def _rewrite(path, out, **entries):
    """``out``: the tensors of ``path`` with its metadata entries replaced by ``entries`` (None: removed)."""
    metadata = {k: v for k, v in dict(_header(path), **entries).items() if v is not None}
    save_file(load_file(str(path)), str(out), metadata=metadata)
    return out


def _train_state(tmp_path):
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999))
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    opt.step()
    state = dict(step=7, epoch=2, batches_done=3, epochs=4, world_size=1, batch_size=8, accumulate_steps=1, seed=0,
                 num_train=16, sums=[[1.5, 3.0, 5.0, 8.0]], history=[dict(epoch=1, val_top1=50.0)], best_epoch=1,
                 best_top1=50.0, rng=[], schedule=dict(base_lrs=[1e-3]))
    return save_train_state(tmp_path / "train_state.safetensors", model=model, optimizer=opt, tensors={},
                            state=state)


# ------------------------------------------------------------------------------------ the metadata checksum
def test_every_file_fgvc_writes_carries_a_checksum_of_its_whole_metadata(tmp_path):
    """Checkpoints and training states hold a SHA-256 of every other metadata entry, the tensor CRC included."""
    _, checkpoint = _glsim(tmp_path)
    for path in (checkpoint, _train_state(tmp_path)):
        header = _header(path)
        assert CHECKSUM_KEY in header and header[METADATA_CHECKSUM_KEY] == metadata_checksum(header)


@pytest.mark.parametrize("edit", ["top_k", "rename_options", "class_name", "drop_path_rate"])
def test_an_edited_checkpoint_header_is_refused_naming_the_file(tmp_path, edit):
    """Any change to the JSON of a checkpoint (the tensor CRC still valid) is a metadata checksum mismatch."""
    _, path = _glsim(tmp_path)
    meta = json.loads(_header(path)["fgvc"])
    if edit == "top_k":
        meta["options"]["top_k"] = 3
    elif edit == "rename_options":
        meta["optionz"] = meta.pop("options")
    elif edit == "class_name":
        meta["class_names"][1] = "species X"
    else:
        meta["drop_path_rate"] = 0.3
    edited = _rewrite(path, tmp_path / "edited.safetensors", fgvc=json.dumps(meta))
    message = r"edited.safetensors: metadata checksum mismatch: the file was modified or is corrupt"
    with pytest.raises(ValueError, match=message):
        fgvc.load_model(edited)
    with pytest.raises(ValueError, match=message):
        fgvc.read_metadata(edited)


@pytest.mark.parametrize("edit", ["batches_done", "step", "epoch", "best_top1", "weight_decay", "betas",
                                  "base_lrs", "history", "sums"])
def test_an_edited_training_state_is_refused_naming_the_file(tmp_path, edit):
    """Any change to the JSON of ``train_state`` (the tensor CRC still valid) is a metadata checksum mismatch."""
    path = _train_state(tmp_path)
    state = json.loads(_header(path)["fgvc_train_state"])
    group = state["optimizer"]["param_groups"][0]
    if edit in ("batches_done", "step", "epoch"):
        state[edit] += 1
    elif edit == "best_top1":
        state[edit] = 99.0
    elif edit == "weight_decay":
        group["weight_decay"] = 0.5
    elif edit == "betas":
        group["betas"] = [0.8, 0.999]
    elif edit == "base_lrs":
        state["schedule"]["base_lrs"] = [1e-2]
    elif edit == "history":
        state["history"][0]["val_top1"] = 75.0
    else:
        state["sums"][0][1] = 4.0
    edited = _rewrite(path, tmp_path / "edited.safetensors", fgvc_train_state=json.dumps(state))
    with pytest.raises(ValueError, match=r"edited.safetensors: metadata checksum mismatch"):
        load_train_state(edited)


def _flip(raw, bit):
    out = bytearray(raw)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _sample_bits(raw, metadata_bits, other_bits):
    """A deterministic sample of the header's bits: ``metadata_bits`` in the ``__metadata__`` entry, spread
    over every bit position of its bytes, and ``other_bits`` over the rest of the header (length, tensors)."""
    size = int.from_bytes(raw[:8], "little")
    text = raw[: 8 + size].decode("latin-1")  # one character per byte: indices are byte offsets
    start = text.index('"__metadata__"', 8)
    _, end = json.JSONDecoder().raw_decode(text, text.index("{", start))
    inside = range(8 * start, 8 * end, max(1, (8 * (end - start)) // metadata_bits) | 1)
    outside = [b for b in range(0, 8 * (8 + size), max(1, (8 * (8 + size)) // other_bits) | 1)
               if not 8 * start <= b < 8 * end]
    return [*inside, *outside]


def test_no_single_bit_flip_of_a_checkpoint_header_loads_a_different_model(tmp_path):
    """Flipping any one bit of a saved GLSim's header is an error naming the file, or changes nothing."""
    model, path = _glsim(tmp_path)
    raw = path.read_bytes()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x).logits
    flipped = tmp_path / "flipped.safetensors"
    bits = _sample_bits(raw, metadata_bits=300, other_bits=100)
    assert len(bits) >= 350
    silent = []
    for bit in bits:
        flipped.write_bytes(_flip(raw, bit))
        try:
            loaded = fgvc.load_model(flipped)
        except (ValueError, FileNotFoundError) as e:
            assert "flipped.safetensors" in str(e), (bit, str(e))
            continue
        same = (loaded.config == model.config and loaded.class_names == NAMES
                and torch.equal(loaded(x).logits, expected))
        if not same:
            silent.append(bit)
    assert silent == [], f"bits {silent} load silently to a different model"


def _json_part(state):
    return json.dumps({k: v for k, v in state.items() if k != "optimizer_state_dict"}, sort_keys=True)


def test_no_single_bit_flip_of_a_training_state_header_resumes_other_values(tmp_path):
    """Flipping any one bit of a ``train_state`` header's metadata is an error naming the file, or changes nothing."""
    path = _train_state(tmp_path)
    raw = path.read_bytes()
    model_state, state, others = load_train_state(path)
    flipped = tmp_path / "flipped.safetensors"
    silent = []
    for bit in _sample_bits(raw, metadata_bits=200, other_bits=50):
        flipped.write_bytes(_flip(raw, bit))
        try:
            got = load_train_state(flipped)
        except (ValueError, FileNotFoundError) as e:
            assert "flipped.safetensors" in str(e), (bit, str(e))
            continue
        if _json_part(got[1]) != _json_part(state) or any(not torch.equal(got[0][k], v) for k, v in model_state.items()):
            silent.append(bit)
    assert silent == [], f"bits {silent} resume silently to other values"


# ------------------------------------------------------------------------------------ files of older fgvc
def test_a_file_with_the_tensor_crc_but_no_metadata_checksum_is_refused_until_stamped(tmp_path):
    """An fgvc file without a metadata checksum is refused with the way out; ``add_metadata_checksum`` restores
    it with bit-identical tensors and the same model."""
    model, path = _glsim(tmp_path)
    old = _rewrite(path, tmp_path / "old.safetensors", **{METADATA_CHECKSUM_KEY: None})
    with pytest.raises(ValueError, match=r"old.safetensors: metadata checksum missing: .*add_metadata_checksum"):
        fgvc.load_model(old)
    before = load_file(str(old))
    add_metadata_checksum(old)
    after = load_file(str(old))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fgvc.load_model(old)(x).logits, model(x).logits)


def test_a_file_with_no_checksum_at_all_still_loads(tmp_path):
    """A safetensors file written by another tool (no fgvc checksum of any kind) loads, its metadata validated."""
    model, path = _glsim(tmp_path)
    plain = _rewrite(path, tmp_path / "plain.safetensors", **{METADATA_CHECKSUM_KEY: None, CHECKSUM_KEY: None})
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fgvc.load_model(plain)(x).logits, model(x).logits)


def test_the_shipped_backbone_carries_both_checksums_over_its_original_tensors():
    """The shipped weights have a metadata checksum, and their tensors still give the CRC they were made with."""
    weights = fgvc.backbones.shipped.SHIPPED_BACKBONES["fgvc_synth_vit_tiny"].weights
    header = _header(weights)
    assert header[CHECKSUM_KEY] == "4f4592cf" == tensor_checksum(load_file(str(weights)))
    assert header[METADATA_CHECKSUM_KEY] == metadata_checksum(header)
    assert len(load_state_dict_file(weights)) == len(load_file(str(weights)))


# ------------------------------------------------------------------------------------ save_model keeps what it knows
def test_save_model_keeps_the_class_names_the_model_knows(tmp_path):
    """Without ``class_names=``, the checkpoint holds ``model.class_names``, so evaluating it on other classes fails."""
    from test_train_evaluate import Blobs

    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    model.class_names = list(NAMES)
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    assert fgvc.read_metadata(path)["class_names"] == NAMES
    loaded = fgvc.load_model(path)
    assert loaded.class_names == NAMES
    with pytest.raises(ValueError, match="differ from those of"):
        fgvc.evaluate(loaded, Blobs(n=8, num_classes=4))  # classes c0..c3, not the model's species


def test_extra_metadata_may_not_replace_what_rebuilds_the_model(tmp_path):
    """``extra`` adds to a checkpoint's metadata (metrics, epoch) but may not overwrite the method's options."""
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    with pytest.raises(ValueError, match="extra may not replace .*'options'"):
        fgvc.save_model(model, tmp_path / "m.safetensors", extra=dict(options=dict(top_k=5), epoch=3))
    assert not (tmp_path / "m.safetensors").exists()


# ------------------------------------------------------------------------------------ loading stays inside the file
def _crafted(tmp_path, name, **changes):
    """A checkpoint without checksums (as another tool would write it) whose fgvc metadata has ``changes``."""
    model = fgvc.create_model("glsim", num_classes=4, img_size=32, top_k=2, **TINY)
    meta = dict(model.config, class_names=None, format=1)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = dict(meta[key], **value)
        else:
            meta[key] = value
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"fgvc": json.dumps(meta)})
    return path


@pytest.mark.parametrize("name,changes,message", [
    ("negative_size", dict(img_size=[-63, 32]), r"no valid 'img_size'"),
    ("options_list", dict(options=[1, 2]), r"no valid 'options'"),
    ("top_k_text", dict(options=dict(top_k="many")), r"does not describe a model fgvc can build"),
    ("unknown_method", dict(method="glsim2"), r"'glsim2' model, which fgvc does not know"),
    ("unknown_option", dict(options=dict(top_kk=2)), r"unknown options 'top_kk'"),
    ("classes_zero", dict(num_classes=0), r"no valid 'num_classes'"),
    ("rate_text", dict(drop_path_rate="0.1"), r"no valid 'drop_path_rate'"),
])
def test_crafted_metadata_is_an_error_naming_the_file(tmp_path, name, changes, message):
    """Wrong types or ranges in a checkpoint's metadata are a ``ValueError`` naming the file, not a torch error."""
    path = _crafted(tmp_path, name, **changes)
    with pytest.raises(ValueError, match=rf"{name}.safetensors: .*{message}"):
        fgvc.load_model(path)


@pytest.mark.parametrize("name,changes", [
    ("hub_backbone", dict(backbone="hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")),
    ("local_dir_backbone", dict(backbone="local-dir:/tmp/model")),
    ("path_option", dict(options=dict(checkpoint_path="/etc/passwd"))),
    ("pretrained_option", dict(options=dict(pretrained=True))),
    ("timm_checkpoint", dict(backbone_kwargs=dict(checkpoint_path="/etc/passwd"))),
    ("timm_pretrained_cfg", dict(backbone_kwargs=dict(pretrained_cfg=dict(file="/etc/passwd")))),
])
def test_loading_a_checkpoint_never_reaches_outside_the_file(tmp_path, monkeypatch, name, changes):
    """Metadata naming a Hub repository, another file or pretrained weights is refused before timm is called."""
    path = _crafted(tmp_path, name, **changes)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"timm.create_model called for {args} {kwargs}")

    monkeypatch.setattr(timm, "create_model", forbidden)
    with pytest.raises(ValueError, match=rf"{name}.safetensors: "):
        fgvc.load_model(path)


def test_metadata_asking_for_a_larger_model_than_the_file_holds_is_refused_before_building(tmp_path, monkeypatch):
    """A model far wider than the file's tensors is refused from its shapes, without allocating its weights."""
    path = _crafted(tmp_path, "wide", backbone_kwargs=dict(embed_dim=2**18))  # ~1e12 parameters if built
    real = torch.nn.Linear.__init__

    def no_huge_layers(self, *args, **kwargs):
        real(self, *args, **kwargs)
        assert self.weight.is_meta or self.weight.numel() < 2**26, f"a real weight of shape {tuple(self.weight.shape)}"

    monkeypatch.setattr(torch.nn.Linear, "__init__", no_huge_layers)
    with pytest.raises(ValueError, match=r"wide.safetensors: .* has shape .* the model its metadata describes"):
        fgvc.load_model(path)


# ------------------------------------------------------------------------------------ what a file is called
@pytest.mark.parametrize("content,looks", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200), "a JPEG image"),
    (b"epoch 3: top-1 81.2\n", "text"),
    (b"", "an empty file"),
    ("safetensors", "a safetensors file"),
])
def test_a_file_that_is_no_pickle_is_named_for_what_it_looks_like(tmp_path, content, looks):
    """A JPEG, a text file or a renamed safetensors file is "not a checkpoint fgvc can read", not a risky pickle."""
    path = tmp_path / "weights.pth"
    if content == "safetensors":
        save_file({"w": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    for load in (load_state_dict_file, fgvc.load_model):
        with pytest.raises(ValueError, match=rf"weights.pth is not a checkpoint fgvc can read \(looks like {looks}\)"):
            load(path)


def test_a_file_that_is_no_safetensors_is_named_for_what_it_looks_like(tmp_path):
    """A torch pickle given a .safetensors name is called what it is."""
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors checkpoint "
                                         r"\(looks like a torch checkpoint \(zip archive\)\)"):
        fgvc.load_model(path)


@pytest.mark.parametrize("state,missing", [
    ({"patch_embedding.weight": torch.zeros(8, 3, 4, 4)}, "encoder.blocks.0.pwff.fc1.weight"),
    ({"transformer.embeddings.cls_token": torch.zeros(1, 1, 8)}, "transformer.embeddings.patch_embeddings.weight"),
])
def test_an_incomplete_official_checkpoint_is_an_error_naming_the_file(tmp_path, state, missing):
    """An official GLSim / TransFG file without a tensor its model always has names the file and the tensor."""
    path = tmp_path / "official.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=rf"official.pth: not a complete .*-official checkpoint: it has no '{missing}'"):
        fgvc.load_model(path)
