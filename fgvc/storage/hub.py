"""fgvc models on the Hugging Face Hub and in plain timm.

``save_pretrained(model, dir)`` writes a folder that ``from_pretrained`` reads back, locally or from a Hub
repository once uploaded (``push_to_hub``):

* ``model.safetensors``: the fgvc checkpoint (weights, and in its header everything needed to rebuild the
  model: method, backbone, options, input size, class names), the file ``fgvc.load_model`` reads;
* ``config.json``: the same rebuild information, plus the model's timm-style ``pretrained_cfg`` (mean, std,
  input size, crop), readable without fgvc;
* ``README.md``: a model card (method, backbone, data, metrics, fgvc version, how to load it).

``export_timm(model, path)`` writes the backbone (and, for the plain ``vit`` method, its classifier) as a
state dict that ``timm.create_model(name, checkpoint_path=path, ...)`` loads without fgvc.

Downloads go through ``huggingface_hub.hf_hub_download``: its cache, ``HF_HUB_OFFLINE=1`` and tokens behave
as for any Hub model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from ..io import cpu_tensors
from ..methods.base import BASELINE, FGVCModel
from ..version import __version__
from .checkpoint import load_model, read_metadata, run_config, save_model

__all__ = ["WEIGHTS_NAME", "checkpoint_card_info", "export_timm", "from_pretrained", "model_card", "push_to_hub", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_pretrained(
    model: FGVCModel,
    save_directory: str | os.PathLike,
    *,
    dataset: str | None = None,
    metrics: dict[str, float] | None = None,
    license: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` (model card) to ``save_directory``.

    ``dataset`` (e.g. ``"cub"``) and ``metrics`` (e.g. ``{"top1": 91.2}``, on the test split) go into the
    config and the card. Returns the folder.
    """
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in dict(dataset=dataset, metrics=metrics).items() if v is not None}
    save_model(model, out / WEIGHTS_NAME, class_names=model.class_names, extra=extra)
    config = dict(
        model.config,
        class_names=model.class_names,
        pretrained_cfg=_jsonable(model.pretrained_cfg),
        library="fgvc",
        fgvc_version=__version__,
        **extra,
    )
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    card = model_card(model, dataset=dataset, metrics=metrics, license=license, description=description)
    (out / "README.md").write_text(card)
    return out


def model_card(
    model: FGVCModel,
    *,
    repo_id: str | None = None,
    dataset: str | None = None,
    metrics: dict[str, float] | None = None,
    license: str | None = None,
    description: str | None = None,
) -> str:
    """A Hub model card (YAML front matter + markdown): method, backbone, input, data, metrics, fgvc version."""
    cfg = model.config
    h, w = model.img_size
    tags = ["image-classification", "fine-grained", "fgvc", "timm", model.method]
    front = ["---", "library_name: fgvc", "pipeline_tag: image-classification", "tags:"]
    front += [f"- {t}" for t in tags]
    if license:
        front.append(f"license: {license}")
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    front.append("---")
    options = ", ".join(f"{k}={v!r}" for k, v in (cfg.get("options") or {}).items()) or "defaults"
    lines = [
        *front,
        "",
        f"# {model.method} on {cfg['backbone']}",
        "",
        description or f"A fine-grained image classifier trained with fgvc (method `{model.method}`).",
        "",
        "| | |",
        "|---|---|",
        f"| method | `{model.method}` ({options}) |",
        f"| backbone | `{cfg['backbone']}`" + (f" with {cfg['backbone_kwargs']}" if cfg.get("backbone_kwargs") else "") + " |",
        f"| input | {h} x {w} px, mean {tuple(round(m, 4) for m in model.pretrained_cfg['mean'])}, "
        f"std {tuple(round(s, 4) for s in model.pretrained_cfg['std'])} |",
        f"| classes | {model.num_classes} |",
        f"| data | {dataset or 'not recorded'} |",
        f"| fgvc version | {__version__} |",
        "",
    ]
    if metrics:
        lines += ["## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    source = repr(repo_id) if repo_id else '"path/to/this/folder"'
    lines += [
        "## Use",
        "",
        "```python",
        "import fgvc",
        f"model = fgvc.from_pretrained({source})",
        "transform = fgvc.data.build_transforms(model, train=False)   # or timm.data.resolve_data_config(model=model)",
        "predictions = fgvc.predict(model, [\"bird.jpg\"])",
        "```",
        "",
    ]
    if model.class_names:
        shown = ", ".join(model.class_names[:10]) + (", ..." if len(model.class_names) > 10 else "")
        lines += [f"Classes: {shown}", ""]
    return "\n".join(lines)


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    device: str = "cpu",
) -> FGVCModel:
    """Load a model saved by ``save_pretrained``: a local folder (or ``.safetensors`` file), or a Hub repo id.

    A repo id (``"user/repo"``) is read with ``huggingface_hub.hf_hub_download`` (its cache; offline with
    ``HF_HUB_OFFLINE=1`` when the file is cached). The model comes back in eval mode with its class names.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}: not a folder written by save_pretrained")
        return load_model(path / WEIGHTS_NAME, device=device)
    if path.is_file():
        return load_model(path, device=device)
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise FileNotFoundError(f"{name} is neither a folder, a file, nor a Hub repo id like 'user/repo'")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with timm
        raise ImportError("loading from the Hub needs huggingface_hub: pip install huggingface_hub") from e
    file = hf_hub_download(
        repo_id=name, filename=WEIGHTS_NAME, revision=revision, cache_dir=cache_dir, token=token, library_name="fgvc"
    )
    return load_model(file, device=device)


def push_to_hub(
    model: FGVCModel,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload fgvc model",
    **card: Any,
) -> Any:
    """Create ``repo_id`` on the Hub if needed and upload ``save_pretrained``'s files. Returns the commit info.

    ``card`` keywords (``dataset``, ``metrics``, ``license``, ``description``) go to the model card.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, **card)
        text = (Path(tmp) / "README.md").read_text().replace('"path/to/this/folder"', repr(repo_id))
        (Path(tmp) / "README.md").write_text(text)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message, repo_type="model")


def export_timm(model: FGVCModel, path: str | os.PathLike) -> tuple[Path, str]:
    """Write the backbone as a timm state dict (``.safetensors``); returns the path and the timm call that loads it.

    For the plain ``vit`` method the classifier is included (timm's ``head``: the same pooled feature and
    linear layer), so timm's model gives fgvc's logits; for the other methods the file holds the fine-tuned
    backbone alone, loaded with ``num_classes=0``. Any timm classifier behind the ``vit`` baseline (ResNet,
    ConvNeXt, ...) exports the same way, its classifier under timm's name for it. Overlapping patches (``patch_stride``) have no timm
    equivalent and are refused.
    """
    cfg = model.config
    if cfg.get("patch_stride") is not None:
        raise ValueError(
            f"this model uses overlapping patches (patch_stride={cfg['patch_stride']}), which timm.create_model "
            f"cannot rebuild from a name; export the fgvc checkpoint instead"
        )
    if cfg.get("norm_eps") is not None:
        raise ValueError(
            f"this model's norms use eps={cfg['norm_eps']} (a converted official checkpoint); pass "
            f"norm_layer=functools.partial(torch.nn.LayerNorm, eps={cfg['norm_eps']}) to timm.create_model "
            f"yourself, or use the fgvc checkpoint"
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"export to a .safetensors file, got {path}")
    net = model.backbone.vit  # the timm model (num_classes=0)
    state = cpu_tensors(net.state_dict())
    head = getattr(model, "head", None)
    classifier = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or "head"  # "fc" for ResNets
    with_head = model.method == BASELINE and isinstance(head, nn.Linear)  # the baseline's head is timm's classifier
    if with_head:
        state[f"{classifier}.weight"] = head.weight.detach().contiguous().cpu().clone()
        state[f"{classifier}.bias"] = head.bias.detach().contiguous().cpu().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "fgvc_method": model.method, "timm_name": cfg["backbone"]})
    kwargs: dict[str, Any] = dict(num_classes=model.num_classes if with_head else 0)
    if getattr(model.backbone, "takes_img_size", True):
        kwargs["img_size"] = tuple(model.img_size)
    kwargs.update(cfg.get("backbone_kwargs") or {})
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    call = f"timm.create_model({cfg['backbone']!r}, {args}, checkpoint_path={str(path)!r})"
    return path, call


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x if x is None or isinstance(x, (str, int, float, bool)) else str(x)


def checkpoint_card_info(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """``dataset`` and test ``metrics`` of an fgvc checkpoint, from its run folder when ``fgvc train`` wrote it."""
    info: dict[str, Any] = {}
    config = run_config(checkpoint) or {}
    if (config.get("data") or {}).get("dataset"):
        info["dataset"] = config["data"]["dataset"]
    test = Path(checkpoint).with_name("test.json")
    if test.is_file():
        run = json.loads(test.read_text())
        info["metrics"] = {k[5:]: v for k, v in run.items() if k.startswith("test_") and v is not None}
    elif (read_metadata(checkpoint).get("metrics") or {}).get("val_top1") is not None:
        info["metrics"] = {"val_top1": read_metadata(checkpoint)["metrics"]["val_top1"]}
    return info
