"""Checkpoints written by the official GLSim and TransFG code, as fgvc models with the same outputs.

* ``glsim-official``: ``torch.save`` of ``arkel23/GLSim``'s trainer (``glsim/train_utils/trainer.py::
  save_model``): ``{"config": argparse.Namespace, "epoch", "model", "accuracy", "optimizer"}``, ``model`` the
  state dict of the ``VisionTransformer`` wrapper around ``ViTGLSim`` (keys ``model.patch_embedding.weight``,
  ``model.encoder.blocks.0.attn.proj_q.weight``, ..., a ``module.`` prefix after DistributedDataParallel).
  GLSim runs (``dynamic_anchor``: the crop of the ``dynamic_top`` patches most similar to CLS, one aggregator
  block) become fgvc ``glsim`` models; plain ViT runs of the same code (no crop) fgvc ``vit`` models. Settings
  come from the recorded config where it has them (image size, ``dynamic_top``, ``layer_norm_eps``, heads),
  else from the official defaults (``glsim/model_utils/configs.py``: LayerNorm eps 1e-12, not timm's 1e-6)
  and from the tensor shapes (width, depth, MLP size, patch size, position embeddings).
* ``transfg-official``: ``torch.save`` of ``TACJu/TransFG``'s ``train.py::save_model``: ``{"model": state dict}``
  (plus ``"amp"`` with ``--fp16``: apex O2 half-precision weights, converted to float32), keys
  ``transformer.embeddings.patch_embeddings.weight``, ``transformer.encoder.layer.0.attn.query.weight``, ...,
  ``transformer.encoder.part_layer``, ``part_norm``, ``part_head``. No config is stored: the width, depth and
  MLP size come from the shapes, the heads from the ViT family of that width (ViT-B: 12), and the image size
  and patch stride from the number of position embeddings (``--split overlap --slide_step 12`` at 448 px:
  37 x 37 patches; non-overlapping 16 px patches: 28 x 28).

Files are read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` besides tensors
and plain containers (``safe_globals``): a pickle that asks for anything else is refused, never run.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..hints import similar_files
from ..io import torch_load_safely
from ..methods.base import FGVCModel, create_model

__all__ = [
    "FORMATS",
    "convert_glsim_official",
    "convert_transfg_official",
    "detect_format",
    "load_converted",
    "read_official_checkpoint",
]

#: What ``fgvc.load_model(path, format=...)`` and ``fgvc convert`` accept.
FORMATS = ("fgvc", "glsim-official", "transfg-official")

# Official ViTConfig defaults (glsim/model_utils/configs.py) that a saved Namespace may not repeat.
GLSIM_DEFAULT_LAYER_NORM_EPS = 1e-12
GLSIM_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` allowing ``argparse.Namespace`` (the official config) and nothing else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{similar_files(path)}")
    obj = torch_load_safely(path, allowed=[argparse.Namespace])
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _strip(state: dict[str, Tensor], *prefixes: str) -> dict[str, Tensor]:
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def detect_format(obj: dict[str, Any]) -> str:
    """``glsim-official`` or ``transfg-official`` from the keys of a loaded checkpoint, else an error."""
    model = obj.get("model")
    if isinstance(model, dict):
        keys = _strip(dict(model), "module.", "model.")
        if "patch_embedding.weight" in keys or any(k.startswith("encoder.blocks.") for k in keys):
            return "glsim-official"
        if any(k.startswith("transformer.embeddings.") for k in keys):
            return "transfg-official"
    raise ValueError(
        "not a checkpoint of a known format: fgvc reads its own .safetensors, the official GLSim trainer's "
        "(a dict with 'config' and 'model': ViTGLSim keys) and the official TransFG train.py's ('model': "
        "transformer.embeddings... keys); pass format= to say which"
    )


def _config(obj: dict[str, Any]) -> dict[str, Any]:
    cfg = obj.get("config")
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    return dict(cfg) if isinstance(cfg, dict) else {}


def _block_count(state: dict[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _glsim_block(state: dict[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One official ``BlockVanilla`` (separate q, k, v projections) as a timm ``Block`` (one fused qkv)."""
    out = {
        f"{dst}attn.qkv.weight": torch.cat([state[f"{src}attn.proj_{n}.weight"] for n in "qkv"]),
        f"{dst}attn.qkv.bias": torch.cat([state[f"{src}attn.proj_{n}.bias"] for n in "qkv"]),
    }
    for a, b in (("proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2"), ("pwff.fc1", "mlp.fc1"),
                 ("pwff.fc2", "mlp.fc2")):
        out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
        out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]
    return out


def convert_glsim_official(obj: dict[str, Any]) -> FGVCModel:
    """An official GLSim (``ViTGLSim``) checkpoint, already loaded, as an fgvc ``glsim`` (or ``vit``) model."""
    cfg = _config(obj)
    state = _strip(dict(obj["model"]), "module.", "model.")
    if "patch_embed.proj.weight" in state:
        raise ValueError(
            "this GLSim checkpoint uses the official code's timm backbone variant (TIMMViT); fgvc converts the "
            "ViTGLSim models (model_name vit_t16 ... vit_h14)"
        )
    conv = state["patch_embedding.weight"]  # (D, 3, P, P)
    dim, patch = conv.shape[0], conv.shape[-1]
    depth = _block_count(state, "encoder.blocks.")
    mlp = state["encoder.blocks.0.pwff.fc1.weight"].shape[0]
    heads = int(cfg.get("num_attention_heads") or GLSIM_HEADS_BY_WIDTH.get(dim, max(dim // 64, 1)))
    eps = float(cfg.get("layer_norm_eps") or GLSIM_DEFAULT_LAYER_NORM_EPS)
    if "class_token" not in state:
        raise ValueError("the official checkpoint has no class token (classifier without 'cls'): not supported")
    if "encoder_norm.weight" not in state:
        raise ValueError("the official checkpoint has no encoder_norm: not supported (fgvc's ViTs end with a norm)")
    tokens = state["positional_embedding.pos_embedding"].shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} position embeddings are not a square grid (the official code asserts one)")
    img_size = side * patch
    if cfg.get("image_size") not in (None, img_size):
        raise ValueError(f"config image_size {cfg['image_size']} but the position embeddings are for {img_size} px")
    num_classes = state["head.weight"].shape[0]
    mapped: dict[str, Tensor] = {
        "backbone.vit.patch_embed.proj.weight": conv,
        "backbone.vit.patch_embed.proj.bias": state["patch_embedding.bias"],
        "backbone.vit.cls_token": state["class_token"],
        "backbone.vit.pos_embed": state["positional_embedding.pos_embedding"],
        "backbone.vit.norm.weight": state["encoder_norm.weight"],
        "backbone.vit.norm.bias": state["encoder_norm.bias"],
        "head.weight": state["head.weight"],
        "head.bias": state["head.bias"],
    }
    for i in range(depth):
        mapped.update(_glsim_block(state, f"encoder.blocks.{i}.", f"backbone.vit.blocks.{i}."))
    common = dict(
        backbone="vit_base_patch16_224",
        num_classes=num_classes,
        img_size=img_size,
        norm_eps=eps,
        backbone_kwargs=dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp / dim),
    )
    crop = any(k.startswith("aggregator.") for k in state)
    if not crop:  # the official code's plain ViT: CLS after the final norm, one linear head
        model = create_model("vit", **common)
    else:
        if cfg.get("sim_metric") not in (None, "cos"):
            raise ValueError(f"sim_metric {cfg['sim_metric']!r}: fgvc's GLSim implements the cosine similarity")
        if _block_count(state, "aggregator.blocks.") != 1 or "aggregator_norm.weight" not in state:
            raise ValueError("fgvc's GLSim has one aggregator block and an aggregator norm; this checkpoint differs")
        if any(k.startswith("reducer.") for k in state):
            raise ValueError("a linear reducer (representation_size != hidden_size) is not supported")
        if cfg.get("num_anchors") not in (None, 1) or cfg.get("anchor_random"):
            raise ValueError("only the official dynamic anchor (one crop of the top patches) is supported")
        agg_dim = state["aggregator.blocks.0.norm1.weight"].shape[0]
        model = create_model(
            "glsim", top_k=int(cfg.get("dynamic_top") or 2), aggregator_heads=max(agg_dim // 64, 1), **common
        )
        mapped.update(_glsim_block(state, "aggregator.blocks.0.", "aggregator."))
        mapped["aggregator_norm.weight"] = state["aggregator_norm.weight"]
        mapped["aggregator_norm.bias"] = state["aggregator_norm.bias"]
    unused = set(state) - _glsim_used(state, depth, crop)
    if unused:
        raise ValueError(f"official GLSim checkpoint has weights fgvc does not know: {sorted(unused)[:5]}")
    model.load_state_dict(mapped, strict=True)
    return model


def _glsim_used(state: dict[str, Tensor], depth: int, crop: bool) -> set[str]:
    used = {"patch_embedding.weight", "patch_embedding.bias", "class_token", "positional_embedding.pos_embedding",
            "encoder_norm.weight", "encoder_norm.bias", "head.weight", "head.bias",
            "anchor_class_token"}  # created by the official model, never used in its forward
    prefixes = [f"encoder.blocks.{i}." for i in range(depth)]
    if crop:
        prefixes.append("aggregator.blocks.0.")
        used |= {"aggregator_norm.weight", "aggregator_norm.bias"}
    return used | {k for k in state if k.startswith(tuple(prefixes))}


# The official TransFG's strides (--slide_step, default 12) and the image sizes tried, in that order, when
# inferring (image size, stride) from the position embeddings: the first pair giving that grid wins.
TRANSFG_STRIDES = (12,)
TRANSFG_SIZES = (448, 224, 384, 512, 336, 320, 288, 256, 600)


def _transfg_geometry(side: int, patch: int, img_size: int | None, patch_stride: int | None) -> tuple[int, int]:
    """(image size, stride) whose grid is ``side`` x ``side``: given, or inferred as the module docstring says."""
    strides = [patch_stride] if patch_stride else [*TRANSFG_STRIDES, patch]
    sizes = [img_size] if img_size else list(TRANSFG_SIZES)
    for size in sizes:
        for stride in strides:
            if (size - patch) // stride + 1 == side:
                return size, stride
    raise ValueError(
        f"cannot tell the image size and patch stride of a {side}x{side} grid of {patch} px patches; pass "
        f"img_size= and patch_stride= to fgvc.storage.convert.convert_transfg_official"
    )


def _transfg_block(state: dict[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One official TransFG ``Block`` (query / key / value / out, attention_norm, ffn_norm) as a timm ``Block``."""
    out = {
        f"{dst}attn.qkv.weight": torch.cat([state[f"{src}attn.{n}.weight"] for n in ("query", "key", "value")]),
        f"{dst}attn.qkv.bias": torch.cat([state[f"{src}attn.{n}.bias"] for n in ("query", "key", "value")]),
    }
    for a, b in (("attn.out", "attn.proj"), ("attention_norm", "norm1"), ("ffn_norm", "norm2"),
                 ("ffn.fc1", "mlp.fc1"), ("ffn.fc2", "mlp.fc2")):
        out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
        out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]
    return out


def convert_transfg_official(
    obj: dict[str, Any], *, img_size: int | None = None, patch_stride: int | None = None
) -> FGVCModel:
    """An official TransFG checkpoint, already loaded, as an fgvc ``transfg`` model (float32)."""
    state = _strip(dict(obj["model"] if isinstance(obj.get("model"), dict) else obj), "module.")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # apex O2: fp16 weights
    emb = "transformer.embeddings."
    conv = state[f"{emb}patch_embeddings.weight"]  # (D, 3, P, P)
    dim, patch = conv.shape[0], conv.shape[-1]
    layers = _block_count(state, "transformer.encoder.layer.")  # the first L-1 blocks
    mlp = state["transformer.encoder.layer.0.ffn.fc1.weight"].shape[0]
    heads = GLSIM_HEADS_BY_WIDTH.get(dim, max(dim // 64, 1))
    tokens = state[f"{emb}position_embeddings"].shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} position embeddings are not a square grid")
    size, stride = _transfg_geometry(side, patch, img_size, patch_stride)
    mapped: dict[str, Tensor] = {
        "backbone.vit.patch_embed.proj.weight": conv,
        "backbone.vit.patch_embed.proj.bias": state[f"{emb}patch_embeddings.bias"],
        "backbone.vit.cls_token": state[f"{emb}cls_token"],
        "backbone.vit.pos_embed": state[f"{emb}position_embeddings"],
        "backbone.vit.norm.weight": state["transformer.encoder.part_norm.weight"],
        "backbone.vit.norm.bias": state["transformer.encoder.part_norm.bias"],
        "head.weight": state["part_head.weight"],
        "head.bias": state["part_head.bias"],
    }
    for i in range(layers):
        mapped.update(_transfg_block(state, f"transformer.encoder.layer.{i}.", f"backbone.vit.blocks.{i}."))
    mapped.update(_transfg_block(state, "transformer.encoder.part_layer.", f"backbone.vit.blocks.{layers}."))
    model = create_model(
        "transfg",
        backbone="vit_base_patch16_224",
        num_classes=state["part_head.weight"].shape[0],
        img_size=size,
        patch_stride=None if stride == patch else stride,
        backbone_kwargs=dict(patch_size=patch, embed_dim=dim, depth=layers + 1, num_heads=heads, mlp_ratio=mlp / dim),
    )
    used = {f"{emb}patch_embeddings.weight", f"{emb}patch_embeddings.bias", f"{emb}cls_token",
            f"{emb}position_embeddings", "transformer.encoder.part_norm.weight", "transformer.encoder.part_norm.bias",
            "part_head.weight", "part_head.bias"}
    used |= {k for k in state if k.startswith(("transformer.encoder.layer.", "transformer.encoder.part_layer."))}
    unknown = set(state) - used
    if unknown:
        raise ValueError(f"official TransFG checkpoint has weights fgvc does not know: {sorted(unknown)[:5]}")
    model.load_state_dict(mapped, strict=True)
    return model


def load_converted(path: str | os.PathLike, format: str | None = None) -> FGVCModel:
    """Read an official checkpoint file (format detected, or given) as an fgvc model in eval mode."""
    if format not in (None, "glsim-official", "transfg-official"):
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    obj = read_official_checkpoint(path)
    try:
        format = format or detect_format(obj)
        model = convert_glsim_official(obj) if format == "glsim-official" else convert_transfg_official(obj)
    except KeyError as e:  # a tensor the official model always has
        raise ValueError(f"{path}: not a complete {format or 'official'} checkpoint: it has no {e}") from None
    except (ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:  # shapes / values it cannot have
        text = str(e)
        raise ValueError(text if str(path) in text else f"{path}: {text}") from None
    return model.eval()
