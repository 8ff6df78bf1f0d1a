"""One adapter over timm's ViT family, shared by every method.

The methods need more than timm's ``forward_features``: the tokens with their prefix (CLS, distillation or
register tokens), the blocks one by one, the final norm, the tokens of every layer, and on demand the
attention probabilities of every layer. ``ViTBackbone`` exposes exactly these, for any input resolution
(square or not; one call may also run at another size, position embeddings resampled), with weights from a timm name or a local ``.pth`` / ``.safetensors`` file, and optionally
with overlapping patches (``patch_stride``).

Fused attention (``F.scaled_dot_product_attention``) stays on unless attention maps are asked for: it never
forms the (T, T) probability map, the costly part at 448 px. Maps are recorded by switching the blocks to timm's explicit attention path for
that one call and reading the softmax output, then switching back (the model itself is never edited).

Activation checkpointing (``set_grad_checkpointing``): the adapter runs the blocks itself, so timm's flag alone
would not reach them; each block call goes through ``run_checkpointed`` instead, which keeps only the block's
input in training and recomputes the rest in backward (``torch.utils.checkpoint``, non-reentrant: the same
autograd graph and RNG state, so the gradients are bitwise those without it).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..io import backbone_state_dict, load_timm_state
from ..layers.geometry import PatchGrid
from ..settings import POS_EMBED_INTERPOLATIONS
from .shipped import shipped_backbone

__all__ = [
    "POS_EMBED_INTERPOLATIONS", "EncoderOutput", "OverlapPatchEmbed", "ViTBackbone", "resample_pos_embed",
    "run_checkpointed", "shape_repr", "to_2tuple",
]


def to_2tuple(size: int | Sequence[int]) -> tuple[int, int]:
    """``224 -> (224, 224)``; ``(448, 336) -> (448, 336)``: sizes are (height, width)."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return size  # type: ignore[return-value]


def run_checkpointed(fn: Any, *args: Any, enabled: bool, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; with ``enabled``, under activation checkpointing when gradients are recorded.

    Non-reentrant ``torch.utils.checkpoint.checkpoint``: only the inputs are kept, the activations inside ``fn``
    are recomputed in backward (RNG state restored, so dropout and drop-path draw the same), and the autograd
    graph is the one without checkpointing: gradients are bitwise the same. Any outputs (tuples, None) pass.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def shape_repr(x: Any) -> str:
    """``(2, 10)`` for a tensor or array, ``[(2, 3), ...]`` for a list of them, repr for anything else.

    What the output values (``EncoderOutput``, ``ModelOutput``) print instead of their numbers.
    """
    if hasattr(x, "shape"):
        return str(tuple(x.shape))
    if isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") for v in x):
        return f"[{len(x)} x {tuple(x[0].shape)}]" if len({tuple(v.shape) for v in x}) == 1 else f"[{len(x)} tensors]"
    return repr(x)


def _check_pos_embed_interpolation(value: str | None) -> None:
    """``pos_embed_interpolation`` must be None (timm's loader's own rule) or one of ``POS_EMBED_INTERPOLATIONS``."""
    if value is not None and value not in POS_EMBED_INTERPOLATIONS:
        raise ValueError(f"pos_embed_interpolation must be one of {', '.join(POS_EMBED_INTERPOLATIONS)} (or None: "
                         f"timm's rule), got {value!r}")


def resample_pos_embed(
    pos_embed: Tensor,
    new_size: Sequence[int],
    old_size: Sequence[int],
    num_prefix_tokens: int,
    interpolation: str | None = None,
) -> Tensor:
    """Position embeddings (1, [prefix +] rows * cols, D) on an ``old_size`` grid -> the same on ``new_size``.

    ``interpolation`` (``POS_EMBED_INTERPOLATIONS``; None is "bicubic"): "bicubic" and "bilinear" are timm's
    ``resample_abs_pos_embed`` (antialiased when shrinking); "scipy_zoom" is bilinear with ``align_corners=True``
    and no antialiasing, which is what ``scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)``
    computes (its output cell i reads input coordinate ``i * (old - 1) / (new - 1)``). The prefix tokens'
    embeddings are kept as they are.
    """
    _check_pos_embed_interpolation(interpolation)
    new_size, old_size = list(to_2tuple(tuple(new_size))), list(to_2tuple(tuple(old_size)))
    if interpolation in (None, "bicubic", "bilinear"):
        return resample_abs_pos_embed(pos_embed, new_size=new_size, old_size=old_size,
                                      num_prefix_tokens=num_prefix_tokens, interpolation=interpolation or "bicubic")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    work = torch.promote_types(grid.dtype, torch.float32)  # half precision is resampled in float32
    grid = grid.to(work).reshape(1, *old_size, dim).permute(0, 3, 1, 2)  # (1, D, rows, cols)
    grid = F.interpolate(grid, size=new_size, mode="bilinear", align_corners=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def _pos_embed_filter(filter_fn: Any, interpolation: str | None, origin: str) -> Any:
    """timm's checkpoint filter of a model family, with the position embedding resampled by ``interpolation``.

    timm's filter converts the file's layout (and resamples with its own bicubic rule); the embedding is then
    resampled again from the file's own ``pos_embed`` (a square grid) with ``resample_pos_embed``.
    """

    def filtered(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        out = filter_fn(state, model) if filter_fn is not None else dict(state)
        target = getattr(model, "pos_embed", None)
        if interpolation is None or target is None or "pos_embed" not in out:
            return out
        for key in ("model", "state_dict"):  # the nestings timm's filters unwrap
            state = state[key] if isinstance(state.get(key), dict) else state
        raw = state.get("pos_embed")
        if raw is None:
            raise ValueError(f"pos_embed_interpolation={interpolation!r}: {origin} keeps its position embedding "
                             f"under another name than timm's 'pos_embed'; leave pos_embed_interpolation unset "
                             f"(timm's own resampling) for this file")
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        cells = raw.shape[1] - prefix
        side = math.isqrt(max(cells, 0))
        grid = tuple(model.patch_embed.grid_size)
        if raw.shape[1] == target.shape[1] and (side * side != cells or (side, side) == grid):
            return out  # already the model's grid
        if side * side != cells:
            raise ValueError(f"{origin}: its position embedding has {cells} grid cells, not a square grid; "
                             f"pos_embed_interpolation needs one")
        out["pos_embed"] = resample_pos_embed(raw, grid, (side, side), prefix, interpolation)
        return out

    return filtered


class OverlapPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with a convolution stride S smaller than the patch P: overlapping patches.

    The kernel (and so the pretrained weights) is that of P x P patches; the grid is ``((H - P) // S + 1,
    (W - P) // S + 1)``. Built by timm in place of ``PatchEmbed`` (``embed_layer``), so the model's position
    embeddings have the overlapping grid from the start and timm's pretrained loading resamples the
    checkpoint's position embeddings to it once.
    """

    def __init__(self, *args: Any, stride: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ph, pw = self.patch_size
        if not isinstance(stride, int) or not 1 <= stride <= min(ph, pw):
            raise ValueError(f"patch_stride must be an int in 1..{min(ph, pw)} (the patch size), got {stride!r}")
        if self.dynamic_img_pad:
            raise ValueError("overlapping patches (patch_stride) are not supported with dynamic_img_pad")
        self.stride = (stride, stride)
        self.proj.stride = self.stride
        self.img_size, self.grid_size, self.num_patches = self._init_img_size(self.img_size)

    def _init_img_size(self, img_size: int | tuple[int, int] | None) -> tuple[Any, Any, Any]:
        """(img_size, grid_size, num_patches) for the strided grid (timm's uses stride = patch size)."""
        stride = getattr(self, "stride", self.patch_size)  # unset while timm's __init__ runs
        if img_size is None:
            return None, None, None
        img_size = to_2tuple(img_size)
        grid = tuple((s - p) // t + 1 for s, p, t in zip(img_size, self.patch_size, stride, strict=True))
        return img_size, grid, grid[0] * grid[1]

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        """Input pixels per token step: the stride (timm reads it for feature-map reductions)."""
        return max(self.stride) if as_scalar else self.stride

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The strided grid at another input size (timm's dynamic-size path)."""
        return tuple((s - p) // t + 1 for s, p, t in zip(img_size, self.patch_size, self.stride, strict=True))


@dataclass
class EncoderOutput:
    """What one encoder pass returns.

    tokens: (B, T, D) last block's output after the final norm; T = prefix tokens + patches.
    hidden_states: per block, (B, T, D) outputs before the final norm (only when asked for).
    attentions: per block, (B, heads, T, T) softmax attention probabilities (only when asked for).

    The backbone reads the tokens, so that no caller slices the sequence by hand: ``bb.patch_grid.split``
    gives the prefix and patch tokens, ``bb.global_token`` the token for the whole image.
    """

    tokens: Tensor
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None

    def __repr__(self) -> str:
        """Shapes, not values."""
        parts = [f"tokens={shape_repr(self.tokens)}"]
        parts += [f"{k}={shape_repr(v)}" for k, v in (("hidden_states", self.hidden_states), ("attentions", self.attentions)) if v is not None]
        return "EncoderOutput(" + ", ".join(parts) + ")"


class ViTBackbone(nn.Module):
    """A timm ViT (ViT, DeiT, DeiT-distilled, ...) at any resolution, without its classifier head.

    Args:
        name: timm model name, with or without a pretrained tag (``vit_base_patch16_224.augreg_in21k``), or
            the name of a backbone that ships with fgvc (``fgvc_synth_vit_tiny``, see ``fgvc.backbones.shipped``).
        img_size: input resolution, int or (height, width); each side a multiple of the patch size.
            Position embeddings of pretrained weights are resampled to it (``pos_embed_interpolation``).
        pretrained: load timm's pretrained weights for ``name`` (from the Hugging Face hub or its cache).
        checkpoint_path: load backbone weights from a local ``.pth`` / ``.safetensors`` file instead: a timm
            state dict (its classifier is dropped, position embeddings are resampled by timm's own filter of
            the model family, or by ``pos_embed_interpolation``), or fgvc's own ``best`` / ``last`` checkpoints and ``train_state`` (their backbone
            is taken, the method's layers left aside). Loading is strict: a file that does not give every
            backbone tensor, in its shape, or that holds tensors the backbone does not have, is refused with
            what matched, what is missing and what is unexpected. ``load_report`` says what was loaded. Also
            an original ViT ``.npz`` in Google's layout (``ViT-B_16.npz``, read by timm's ``load_pretrained``,
            position embeddings resampled).
            ``.pth`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is
            refused.
        drop_path_rate: stochastic depth.
        patch_stride: overlapping patches (``OverlapPatchEmbed``): the patch-embedding convolution keeps its
            P x P kernel but moves by this stride (1..P); None: stride P, the usual non-overlapping grid.
            Set when the model is built, before pretrained weights load, so pretrained position embeddings
            are resampled once, from their own grid to the overlapping one. Timm's ``VisionTransformer``
            family only (it must accept ``embed_layer``).
        pos_embed_interpolation: how position embeddings are resampled to another grid
            (``POS_EMBED_INTERPOLATIONS``, see ``resample_pos_embed``): pretrained weights (timm's, a state-dict
            file or Google's ``.npz``) resampled to ``img_size``, and ``pos_embed_at``. None: timm's own rule
            (antialiased bicubic; bilinear for Google's ``.npz``, as timm's reader of it).
            ``"scipy_zoom"`` is the official GLSim and TransFG code's ``scipy.ndimage.zoom(order=1)``.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``depth=6, patch_size=8`` for a tiny model).
    """

    def __init__(
        self,
        name: str = "vit_base_patch16_224.augreg_in21k",
        *,
        img_size: int | tuple[int, int] = 224,
        pretrained: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        drop_path_rate: float = 0.0,
        patch_stride: int | None = None,
        pos_embed_interpolation: str | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_pos_embed_interpolation(pos_embed_interpolation)
        self.name = name
        self.img_size = to_2tuple(img_size)
        #: how position embeddings are resampled (None: timm's rule); see the class doc
        self.pos_embed_interpolation = pos_embed_interpolation
        timm_name = name
        shipped = shipped_backbone(name)
        if shipped is not None:  # fgvc's own pretrained backbone: a timm architecture + a packaged file
            timm_name, timm_kwargs = shipped.timm_name, {**shipped.timm_kwargs, **timm_kwargs}
            if pretrained and checkpoint_path is None:
                if not shipped.weights.is_file():
                    raise FileNotFoundError(
                        f"the weights of {name} are missing from this installation ({shipped.weights}); "
                        f"re-create them with the command in its model card, or reinstall fgvc"
                    )
                checkpoint_path = shipped.weights
        kwargs: dict[str, Any] = dict(num_classes=0, img_size=self.img_size, drop_path_rate=drop_path_rate)
        kwargs.update(timm_kwargs)
        if patch_stride is not None:
            if "embed_layer" in kwargs:
                raise ValueError("patch_stride replaces timm's embed_layer; give one or the other")
            kwargs["embed_layer"] = functools.partial(OverlapPatchEmbed, stride=patch_stride)
        state: dict[str, Tensor] | None = None
        npz = None
        if checkpoint_path is not None:
            checkpoint_path = os.fspath(checkpoint_path)
            if not os.path.isfile(checkpoint_path):
                raise FileNotFoundError(f"backbone checkpoint not found: {checkpoint_path}")
            if checkpoint_path.endswith(".npz"):
                npz = checkpoint_path  # Google's ViT layout: timm's own reader, once the model is built
            else:
                # read safely (.pth through torch.load(weights_only=True)) before building anything; a given
                # pretrained_cfg_overlay (e.g. a recipe's mean / std) stays in kwargs and applies as usual
                state, aside = backbone_state_dict(checkpoint_path)
            pretrained = False
        self._check_divisible(kwargs.get("patch_size") or _patch_size_from_name(timm_name))
        # timm's own loading resamples with its rule; another rule loads the weights here through timm's loader
        # with the resampling filter (``_pos_embed_filter``)
        own_rule = pos_embed_interpolation is not None and pretrained
        self.vit = timm.create_model(timm_name, pretrained=pretrained and not own_rule, **kwargs)
        if own_rule:
            from timm.models import load_pretrained

            load_pretrained(self.vit, pretrained_cfg=self.vit.pretrained_cfg, num_classes=self.vit.num_classes,
                            in_chans=kwargs.get("in_chans", 3),
                            filter_fn=_pos_embed_filter(_family_filter(self.vit), pos_embed_interpolation,
                                                        f"the pretrained weights of {name}"))
        if npz is not None:
            if not hasattr(self.vit, "load_pretrained"):
                raise ValueError(f"{name} cannot read Google's .npz weights (timm's VisionTransformer family can)")
            self.vit.load_pretrained(npz)  # numpy without pickles; position embeddings resampled to the grid
            if pos_embed_interpolation is not None:
                self._resample_npz_pos_embed(npz)
        if not hasattr(self.vit, "blocks") or not hasattr(self.vit, "patch_embed"):
            raise ValueError(f"{name} is not a ViT-family model (it has no patch_embed and blocks)")
        self._check_divisible(self.vit.patch_embed.patch_size)
        #: what ``checkpoint_path`` gave: the file, the tensors loaded and those left aside (None otherwise)
        self.load_report: dict[str, Any] | None = None
        if npz is not None:
            self.load_report = dict(file=npz, loaded=len(self.vit.state_dict()), left_aside=[])
        if state is not None:
            filter_fn = None
            if pos_embed_interpolation is not None:
                filter_fn = _pos_embed_filter(_family_filter(self.vit), pos_embed_interpolation, checkpoint_path)
            self.load_report = load_timm_state(self.vit, state, checkpoint_path, name, filter_fn=filter_fn)
            self.load_report["left_aside"] += aside
        self._pos_embed_cache: dict[Any, Tensor] = {}  # pos_embed_at without gradients: one resampled size
        #: activation checkpointing of the blocks in training (``set_grad_checkpointing``)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them: less memory, more time.

        Sets timm's flag where the timm model has one (its own ``forward_features``), and checkpoints the
        blocks this adapter runs (``encode``, ``forward``) in training mode; the methods' own block calls go
        through ``FGVCModel.run_block``, switched with it by ``FGVCModel.set_grad_checkpointing``.
        """
        self.grad_checkpointing = bool(enable)
        if callable(getattr(self.vit, "set_grad_checkpointing", None)):
            self.vit.set_grad_checkpointing(self.grad_checkpointing)

    def run_block(self, block: Any, *args: Any, **kwargs: Any) -> Any:
        """``block(*args, **kwargs)`` (a block, or a function of one such as ``block_forward``), checkpointed
        when ``grad_checkpointing`` is on, in training mode with gradients (evaluation never checkpoints)."""
        return run_checkpointed(block, *args, enabled=self.grad_checkpointing and self.training, **kwargs)

    @torch.no_grad()
    def _resample_npz_pos_embed(self, npz: str) -> None:
        """Resample the position embedding of Google's ``.npz`` again, from the file, by ``pos_embed_interpolation``
        (timm's reader of it resamples bilinearly)."""
        import numpy as np

        with np.load(npz, allow_pickle=False) as w:
            keys = [k for k in w.files if k.endswith("pos_embedding")]
            if len(keys) != 1:
                raise ValueError(f"{npz}: expected one position embedding (Transformer/posembed_input/pos_embedding), "
                                 f"found {keys or 'none'}")
            raw = torch.from_numpy(w[keys[0]].copy())
        filtered = _pos_embed_filter(None, self.pos_embed_interpolation, npz)({"pos_embed": raw}, self.vit)
        self.vit.pos_embed.copy_(filtered["pos_embed"].reshape(self.vit.pos_embed.shape))

    def _check_divisible(self, patch: int | Sequence[int] | None) -> None:
        """Fail early, naming the numbers, when the resolution does not tile into patches."""
        if patch is None:
            return
        ph, pw = to_2tuple(patch)
        h, w = self.img_size
        if h % ph or w % pw:
            raise ValueError(
                f"img_size {h}x{w} is not divisible by the patch size {ph}x{pw} of {self.name}; "
                f"use e.g. {max(h // ph, 1) * ph}x{max(w // pw, 1) * pw}"
            )

    # ---------------------------------------------------------------- what the methods read
    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_heads(self) -> int:
        return self.vit.blocks[0].attn.num_heads

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def blocks(self) -> nn.Sequential:
        return self.vit.blocks

    @property
    def norm(self) -> nn.Module:
        return self.vit.norm

    @property
    def num_prefix_tokens(self) -> int:
        """CLS (+ distillation / register) tokens before the patch tokens."""
        return self.vit.num_prefix_tokens

    @property
    def has_class_token(self) -> bool:
        return getattr(self.vit, "cls_token", None) is not None

    @property
    def patch_size(self) -> tuple[int, int]:
        return to_2tuple(self.vit.patch_embed.patch_size)

    @property
    def patch_stride(self) -> tuple[int, int]:
        """Stride of the patch embedding: ``patch_size`` unless the patches overlap."""
        return to_2tuple(self.vit.patch_embed.proj.stride)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, cols) of patch tokens at ``img_size``, as the patch embedding computes them."""
        return to_2tuple(self.vit.patch_embed.grid_size)

    @property
    def data_config(self) -> dict[str, Any]:
        """mean / std / interpolation from the pretrained configuration, input_size at ``img_size``."""
        cfg = dict(timm.data.resolve_model_data_config(self.vit))
        cfg["input_size"] = (3, *self.img_size)
        return cfg

    # ---------------------------------------------------------------- forward
    def grid_at(self, img_size: int | Sequence[int]) -> tuple[int, int]:
        """(rows, cols) of patch tokens for inputs of ``img_size`` (the model's own grid at ``img_size``)."""
        size = to_2tuple(img_size)
        ph, pw = self.patch_size
        if size[0] % ph or size[1] % pw:
            raise ValueError(f"size {size[0]}x{size[1]} is not divisible by the patch size {ph}x{pw} of {self.name}")
        return to_2tuple(self.vit.patch_embed.dynamic_feat_size(size))

    def pos_embed_at(self, img_size: int | Sequence[int]) -> Tensor | None:
        """The position embedding (1, [prefix +] rows * cols, D) resampled to the grid of ``img_size``.

        ``resample_pos_embed`` with ``pos_embed_interpolation`` (as for pretrained weights; None: timm's
        bicubic), computed from the model's own ``pos_embed`` on every call while gradients are recorded, so
        training reaches the original parameter; without gradients the result is cached per size (and dropped
        when the parameter changes).
        """
        v = self.vit
        size = to_2tuple(img_size)
        if size == self.img_size or v.pos_embed is None:
            return v.pos_embed
        grid = self.grid_at(size)
        record = torch.is_grad_enabled() and v.pos_embed.requires_grad
        key = (grid, v.pos_embed.device, v.pos_embed.dtype, v.pos_embed._version)
        cache = self._pos_embed_cache
        if not record and key in cache:
            return cache[key]
        pos = resample_pos_embed(v.pos_embed, grid, self.grid_size, 0 if v.no_embed_class else v.num_prefix_tokens,
                                 self.pos_embed_interpolation)
        if not record:
            cache.clear()  # one entry: a new size or a changed parameter replaces it
            cache[key] = pos
        return pos

    def embed(
        self, x: Tensor, *, img_size: int | Sequence[int] | None = None, pos_embed: Tensor | None = None
    ) -> Tensor:
        """Images (B, 3, H, W) -> tokens (B, T, D): patch embedding, prefix tokens, position embedding.

        ``img_size``: the size ``x`` has when it is not the model's (e.g. GLSim's crop re-encoded smaller); the
        position embeddings are resampled to its grid (``pos_embed_at``). Without it, ``x`` must be at the
        model's ``img_size``. ``pos_embed``: a position embedding of ``x``'s grid to use instead (the shape of
        ``pos_embed_at``'s), for a pass that learns its own (GLSim's ``crop_pos_embed="learned"``).
        """
        size = self.img_size if img_size is None else to_2tuple(img_size)
        if pos_embed is not None:  # its own grid's embedding: x may be at any size
            size = tuple(x.shape[-2:])
        if x.shape[-2:] != size:
            got = f"got {x.shape[-2]}x{x.shape[-1]}"
            if img_size is None:
                raise ValueError(f"{self.name} was built for {size[0]}x{size[1]} inputs, {got}; build the model "
                                 f"with img_size={tuple(x.shape[-2:])}")
            raise ValueError(f"{self.name} was asked for {size[0]}x{size[1]} inputs (img_size), {got}")
        v = self.vit
        if size == self.img_size and pos_embed is None:
            x = v.patch_embed(x)
            x = v._pos_embed(x)
            if isinstance(x, tuple):  # EVA: (tokens, rotary embedding); patch dropout already applied inside
                return v.norm_pre(x[0])
        else:
            if getattr(v, "rope", None) is not None:
                raise ValueError(f"{self.name}: rotary position embeddings are built for one grid; inputs at "
                                 "another size than img_size are not supported")
            x = self._patch_tokens(x)  # (B, rows * cols, D)
            if pos_embed is None:
                pos_embed = self.pos_embed_at(size)
            elif pos_embed.shape[1] != x.shape[1] + (0 if v.no_embed_class else self.num_prefix_tokens):
                raise ValueError(f"pos_embed has {pos_embed.shape[1]} positions, too many or too few for "
                                 f"{size[0]}x{size[1]} inputs")
            x = self._add_pos_embed(x, pos_embed)
        x = v.patch_drop(x)
        return v.norm_pre(x)

    def _patch_tokens(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) at any patch-divisible size -> patch tokens (B, rows * cols, D).

        timm's ``PatchEmbed`` forward without its check of the built size (same convolution and per-token norm).
        """
        pe = self.vit.patch_embed
        if getattr(pe, "dynamic_img_pad", False):
            raise ValueError(f"{self.name}: other input sizes are not supported with dynamic_img_pad")
        self.grid_at(x.shape[-2:])  # a clear error for a size that does not tile
        x = pe.proj(x)  # (B, D, rows, cols)
        return pe.norm(x.flatten(2).transpose(1, 2))  # (B, rows * cols, D)

    def _add_pos_embed(self, x: Tensor, pos_embed: Tensor | None) -> Tensor:
        """Patch tokens (B, N, D) -> (B, prefix + N, D): prefix tokens and ``pos_embed``, as timm's ``_pos_embed``."""
        v = self.vit
        prefix = [t.expand(x.shape[0], -1, -1) for t in (v.cls_token, v.reg_token) if t is not None]
        if pos_embed is None:
            x = torch.cat([*prefix, x], dim=1)
        elif v.no_embed_class:  # the position embedding covers the patches only
            x = torch.cat([*prefix, x + pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + pos_embed
        return v.pos_drop(x)

    def encode(self, tokens: Tensor, *, attn_mask: Tensor | None = None) -> Tensor:
        """Embedded tokens (B, T, D) -> the last block's tokens after the final norm (B, T, D).

        attn_mask: optional (B, 1, 1, T) boolean key mask (True: attend), for sequences padded to one length.
        """
        extra = self.block_kwargs()
        if attn_mask is not None:
            extra["attn_mask"] = attn_mask
        if not extra and not self.grad_checkpointing:
            return self.norm(self.blocks(tokens))
        for block in self.blocks:
            tokens = self.run_block(block, tokens, **extra)
        return self.norm(tokens)

    def block_kwargs(self) -> dict[str, Any]:
        """What every block call needs besides the tokens: ``rope`` for EVA-02's rotary embeddings, else nothing.

        Callers that run the blocks one by one write ``block(tokens, **bb.block_kwargs())``.
        """
        rope = getattr(self.vit, "rope", None)
        if rope is None:
            return {}
        if getattr(self.vit, "rope_mixed", False):
            raise ValueError(f"{self.name}: depth-dependent ('mixed') rotary embeddings are not supported")
        return {"rope": rope.get_embed()}

    @property
    def patch_grid(self) -> PatchGrid:
        """Where the patch tokens lie on the input at ``img_size`` (boxes, centres, crops: ``fgvc.layers.geometry``)."""
        return PatchGrid(*self.grid_size, self.patch_size, self.patch_stride, self.img_size, self.num_prefix_tokens)

    def global_token(self, tokens: Tensor) -> Tensor:
        """Tokens (B, T, D) -> the token that stands for the whole image (B, D).

        The CLS token where the ViT has one; for ViTs without one (SigLIP, ``*_gap_*``, register-only models)
        the mean of the patch tokens (prefix / register tokens left out). GLSim's similarity and crop
        aggregation, DCAL's rollout and TransFG's part selection use this token.
        """
        if self.has_class_token:
            return tokens[:, 0]
        return tokens[:, self.num_prefix_tokens :].mean(dim=1)

    def forward(
        self,
        x: Tensor,
        *,
        img_size: int | Sequence[int] | None = None,
        return_hidden_states: bool = False,
        return_attention: bool = False,
    ) -> EncoderOutput:
        """Images (B, 3, H, W) -> ``EncoderOutput`` (tokens after the final norm, optional per-layer data).

        ``img_size``: see ``embed`` (inputs at another size than the model's, position embeddings resampled).
        """
        tokens = self.embed(x, img_size=img_size)
        if not (return_hidden_states or return_attention):
            return EncoderOutput(tokens=self.encode(tokens))
        extra = self.block_kwargs()
        hidden: list[Tensor] = []
        with self.record_attention(enabled=return_attention) as maps:
            for block in self.blocks:  # recorded maps would be recorded again by a recomputation: not checkpointed
                tokens = block(tokens, **extra) if return_attention else self.run_block(block, tokens, **extra)
                hidden.append(tokens)
        return EncoderOutput(
            tokens=self.norm(tokens),
            hidden_states=hidden if return_hidden_states else None,
            attentions=list(maps) if return_attention else None,
        )

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens (B, T, D) -> image feature (B, D) the way the timm model pools (CLS token, or average)."""
        return self.vit.forward_head(tokens, pre_logits=True)

    @contextlib.contextmanager
    def record_attention(
        self, blocks: Sequence[nn.Module] | None = None, *, enabled: bool = True
    ) -> Iterator[list[Tensor]]:
        """Within the context, every forward of ``blocks`` appends its (B, heads, T, T) attention to the list.

        The blocks run timm's explicit attention path meanwhile (the softmax output is read where it enters
        attention dropout); on exit they return to fused attention and the hooks are removed.
        """
        maps: list[Tensor] = []
        if not enabled:
            yield maps
            return
        blocks = list(self.blocks if blocks is None else blocks)
        handles, saved = [], []
        try:
            for block in blocks:
                attn = block.attn
                if not hasattr(attn, "fused_attn") or not hasattr(attn, "attn_drop"):
                    raise TypeError(f"cannot record attention of {type(attn).__name__}")
                saved.append((attn, attn.fused_attn))
                attn.fused_attn = False
                handles.append(attn.attn_drop.register_forward_hook(lambda m, inp, out: maps.append(inp[0])))
            yield maps
        finally:
            for h in handles:
                h.remove()
            for attn, fused in saved:
                attn.fused_attn = fused


def _family_filter(vit: nn.Module) -> Any:
    """timm's ``checkpoint_filter_fn`` of the module that defines ``vit``'s class, or None."""
    return getattr(sys.modules.get(type(vit).__module__), "checkpoint_filter_fn", None)


def _patch_size_from_name(name: str) -> int | None:
    """``vit_base_patch16_224`` -> 16 (used only to give an early, clear error)."""
    base = name.split(".")[0]
    for part in base.split("_"):
        if part.startswith("patch") and part[5:].isdigit():
            return int(part[5:])
    return None
