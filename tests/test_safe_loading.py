"""Safe loading: .pth files only through torch.load(weights_only=True); a pickle that runs code is refused."""

import os
import pickle

import pytest
import torch
from conftest import TINY

import fgvc
from fgvc.storage.checkpoint import load_state_dict_file


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(params=["torch.save", "pickle.dump"])
def evil_pth(request, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = {"pos_embed": torch.zeros(1), "x": Payload(marker)}
    if request.param == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(evil_pth):
    path, marker = evil_pth
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pth.*could run code"):
        load_state_dict_file(path)
    with pytest.raises(ValueError, match="refusing to load"):
        fgvc.load_weights(model, path)
    with pytest.raises(ValueError, match="refusing to load"):
        fgvc.create_model("vit", num_classes=3, img_size=32, checkpoint_path=path, **TINY)
    assert not marker.exists(), "the pickle's code ran"


def test_legacy_pth_state_dict_loads(tmp_path):
    source = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    for p in source.parameters():
        torch.nn.init.normal_(p)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(source.state_dict(), plain)
    # a training script's checkpoint: DDP "module." prefixes inside {"model": ..., "epoch": ...}
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 7}, wrapped)
    for path in (plain, wrapped):
        model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
        assert fgvc.load_weights(model, path) == {}
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(),
                                                      strict=True))
    other = fgvc.create_model("vit", num_classes=5, img_size=32, **TINY)
    with pytest.raises(ValueError, match="head.weight has shape"):
        fgvc.load_weights(other, plain)


def test_fgvc_files_never_use_torch_load(tmp_path, monkeypatch):
    from test_train_evaluate import Blobs

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load called on an fgvc file")

    monkeypatch.setattr(torch, "load", forbidden)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    fgvc.fit(model, Blobs(n=16), Blobs(n=8, seed=1), epochs=1, batch_size=8, out_dir=tmp_path, progress=False)
    fgvc.fit(model, Blobs(n=16), Blobs(n=8, seed=1), epochs=2, batch_size=8, out_dir=tmp_path, resume=True,
             progress=False)
    fgvc.load_model(tmp_path / "best.safetensors")
    fgvc.load_weights(model, tmp_path / "last.safetensors")
