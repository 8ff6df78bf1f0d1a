"""Settings checked once, up front, each with a one-line message: the options ``fit`` and the recipes share.

``TrainConfig`` defines ``fit``'s options once: their names, defaults and checks. ``fit`` builds one from its
keywords, which checks them before it touches the data; a recipe's ``train`` section goes through the very
same checks when the recipe is loaded (``check_fit_settings``; ``train.lr`` then names the key as the recipe
spells it), and its ``data`` section through ``check_data_settings``. So ``batch_size=0``, ``epochs=0``,
``lr=nan`` or ``val_fraction=-0.2`` stop before a model is built, naming the setting, instead of ending in a
``ZeroDivisionError`` deep in a loop, or silently meaning something else."""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .hints import did_you_mean

if TYPE_CHECKING:
    import torch

__all__ = [
    "AMP_VALUES", "POS_EMBED_INTERPOLATIONS", "TrainConfig", "check_data_settings", "check_fit_settings", "check_model_settings", "number_from_text",
]

AMP_VALUES = (None, False, True, "auto", "none", "fp32", "bf16", "bfloat16", "fp16", "float16")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int, optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}{' or null' if optional else ''}, got {value!r}")

    return check


def _positive(optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not _is_real(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0{' or null' if optional else ''}, got {value!r}")

    return check


def _non_negative(name: str, value: Any) -> None:
    if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _fraction(closed: bool) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not _is_real(value) or not (0 <= value <= 1 if closed else 0 <= value < 1):
            raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value!r}")

    return check


def _integer(name: str, value: Any) -> None:
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")


def _amp(name: str, value: Any) -> None:
    if not any(value is v or (isinstance(v, str) and value == v) for v in AMP_VALUES):
        raise ValueError(f"{name} must be 'auto', 'bf16', 'fp16' or None, got {value!r}")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a name such as 'adamw' or 'sgd', got {value!r}")


def _flag(optional: bool) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, bool) and not (optional and value is None):
            raise ValueError(f"{name} must be true or false{' or null' if optional else ''}, got {value!r}")

    return check


def _size(name: str, value: Any) -> None:
    if value is None or (_is_int(value) and value >= 1):
        return
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v >= 1 for v in value):
        return
    raise ValueError(f"{name} must be null, a size N >= 1 or [height, width], got {value!r}")


def _classes(name: str, value: Any) -> None:
    if value is None or (_is_int(value) and value >= 2) or (isinstance(value, (list, tuple)) and len(value) >= 2):
        return
    raise ValueError(f"{name} must be null, a class count >= 2 or a list of at least 2 classes, got {value!r}")


def _option(default: Any, check: Callable[[str, Any], None] | None = None) -> Any:
    """A ``TrainConfig`` field: its default and the check its values pass (none: any value)."""
    return field(default=default, metadata={"check": check} if check is not None else {})


@dataclass(frozen=True)
class TrainConfig:
    """The options of ``fgvc.fit`` with their defaults and checks: the one definition that ``fit``, a recipe's
    ``train`` section and the command line share. A config is checked when it is made (``ValueError`` naming
    the first invalid option).

    Attributes:
        epochs, batch_size: ``batch_size`` images per process and forward pass; the optimizer sees
            ``batch_size * accumulate_steps * world_size`` images per step.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum), built by timm (no weight decay on norms and biases).
        lr, min_lr, warmup_steps: linear warmup (default: one epoch, at most 500 steps) then cosine decay to
            ``min_lr``, updated every optimizer step.
        backbone_lr_scale: the pretrained parameters (``model.pretrained_parameters()``: the backbone's, less
            any part the method re-initialises, such as TransFG's part block) train at ``lr * backbone_lr_scale``,
            the layers that start from scratch (heads, aggregator, cross-attention) at ``lr``: fine-tuning a
            pretrained backbone gently while the new layers learn fast. 1.0: one rate for all.
        label_smoothing: passed to the model's loss.
        grad_clip: clip the global gradient norm (None: off).
        amp: ``"auto"`` (bf16 on capable GPUs, fp32 on the CPU), ``"bf16"``, ``"fp16"`` (with a grad scaler
            on CUDA) or None.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (None: CUDA when available; under torchrun the local rank's).
        seed: seeds the data order, the augmentations and the training RNG (``seed + rank``).
        num_workers: data-loading worker processes.
        out_dir: if given, ``last.safetensors`` and ``train_state.safetensors`` are written every epoch (and
            every ``save_every_steps`` steps), ``best.safetensors`` whenever the validation top-1 improves,
            and ``log.jsonl`` (+ TensorBoard) as training goes.
        progress: progress bars and one printed line per epoch.
        resume: True: continue from ``out_dir/train_state.safetensors`` if it exists (else start fresh, so
            a requeued job can always pass it); a path (file or directory): continue from that state, which
            must exist. Model, optimizer, schedule, grad scaler, RNG and the position in the epoch are
            restored; the training data (its files and labels, by fingerprint) and every model option
            (``drop_path_rate``, ``norm_eps``, the method's own, ...) must match the saved run, and so must
            the optimizer settings (``lr``, ``weight_decay``, ``momentum`` for SGD, ``min_lr``,
            ``warmup_steps``, ``label_smoothing``, ``grad_clip``): a resume with others is refused, naming
            them. ``epochs`` may grow (the schedule is recomputed), not shrink below what was trained.
        overwrite: a new run (``resume=False``) in an ``out_dir`` that holds another run's files is refused,
            naming them; True removes that run's files (fgvc's own only) first. An ``out_dir`` is locked
            while a run writes to it (``fgvc.engine.run_folder``): a second process is refused, naming the first.
        save_every_steps: also checkpoint every N optimizer steps inside an epoch (for long epochs on
            preemptible machines); None: at epoch ends only.
        accumulate_steps: gradient accumulation: one optimizer step per this many forward passes.
        compile: ``torch.compile`` the training forward (the first steps compile; evaluation stays eager).
        channels_last: NHWC images and weights (only the patch-embedding convolution of a ViT benefits).
        tf32: on CUDA, allow TF32 matmuls / convolutions (True), forbid them (False), or leave PyTorch's
            setting (None). Restored when ``fit`` returns.
        log_every_steps: a ``log.jsonl`` line every N optimizer steps (plus one per epoch).
        tensorboard: write TensorBoard scalars to ``out_dir/tensorboard``; None: when it is installed.
        find_unused_parameters: passed to DistributedDataParallel (every built-in method uses all its
            parameters in training, so it stays off).
    """

    epochs: int = _option(10, _int_at_least(1))
    batch_size: int = _option(32, _int_at_least(1))
    optimizer: str = _option("adamw", _text)
    lr: float = _option(5e-4, _positive())
    weight_decay: float = _option(0.05, _non_negative)
    momentum: float = _option(0.9, _fraction(closed=False))
    warmup_steps: int | None = _option(None, _int_at_least(0, optional=True))
    min_lr: float = _option(1e-6, _non_negative)
    backbone_lr_scale: float = _option(1.0, _positive())
    label_smoothing: float = _option(0.0, _fraction(closed=False))
    grad_clip: float | None = _option(1.0, _positive(optional=True))
    amp: str | bool | None = _option("auto", _amp)
    device: str | torch.device | None = _option(None)
    seed: int = _option(0, _integer)
    num_workers: int = _option(0, _int_at_least(0))
    out_dir: str | os.PathLike | None = _option(None)
    progress: bool = _option(True, _flag(optional=False))
    resume: bool | str | os.PathLike = _option(False)
    overwrite: bool = _option(False, _flag(optional=False))
    save_every_steps: int | None = _option(None, _int_at_least(1, optional=True))
    accumulate_steps: int = _option(1, _int_at_least(1))
    compile: bool = _option(False, _flag(optional=False))
    channels_last: bool = _option(False, _flag(optional=False))
    tf32: bool | None = _option(None, _flag(optional=True))
    log_every_steps: int = _option(50, _int_at_least(1))
    tensorboard: bool | None = _option(None, _flag(optional=True))
    find_unused_parameters: bool = _option(False, _flag(optional=False))

    def __post_init__(self) -> None:
        check_fit_settings(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """The options as keyword arguments of ``fit`` (shallow: an ``out_dir`` stays the object given)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in ``fit``'s order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, config: TrainConfig | None, options: Mapping[str, Any], caller: str = "fit") -> TrainConfig:
        """``config`` (default: the defaults) with ``options`` replacing its values; an unknown option is a
        ``TypeError`` as for any unknown keyword argument of ``caller``, with the closest name."""
        for key in options:
            if key not in cls.__dataclass_fields__:
                hint = did_you_mean(key, cls.names())
                raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")
        return cls(**options) if config is None else replace(config, **options)


#: The checks of the recipe's ``train`` section: every ``TrainConfig`` option, and the two keys the recipe
#: reads itself (``fgvc.studies.recipe.fit_arguments``: ``steps`` -> epochs, ``lr`` scaled by the batch size).
FIT_RULES: dict[str, Callable[[str, Any], None]] = {
    **{f.name: f.metadata["check"] for f in fields(TrainConfig) if "check" in f.metadata},
    "steps": _int_at_least(1, optional=True),
    "lr_base_batch_size": _positive(optional=True),
}

DATA_RULES: dict[str, Callable[[str, Any], None]] = {
    "val_fraction": _fraction(closed=False),
    "split_seed": _integer,
    "classes": _classes,
    "resize": _size,
    "test_resize": _size,
    "trivial_augment": _flag(optional=False),
    "auto_augment": _flag(optional=False),
    "random_erasing": _fraction(closed=True),
}


def _image_size(name: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{name} must be a size N >= 1 or [height, width], got None")
    _size(name, value)


def _mapping(optional: bool) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, Mapping) and not (optional and value is None):
            raise ValueError(f"{name} must be a mapping of options{' or null' if optional else ''}, got {value!r}")

    return check


#: How position embeddings are resampled to another grid (``pos_embed_interpolation``): timm's antialiased
#: bicubic or bilinear (half-pixel centres), or ``"scipy_zoom"``, what the official GLSim and TransFG code
#: computes with ``scipy.ndimage.zoom(order=1)``: linear, the corner cells of both grids aligned.
POS_EMBED_INTERPOLATIONS = ("bicubic", "bilinear", "scipy_zoom")


def _pos_embed_interpolation(name: str, value: Any) -> None:
    if value is not None and value not in POS_EMBED_INTERPOLATIONS:
        raise ValueError(f"{name} must be one of {', '.join(POS_EMBED_INTERPOLATIONS)} or null, got {value!r}")


#: The checks of the options every method shares (``FGVCModel``; a recipe's ``model`` section).
MODEL_RULES: dict[str, Callable[[str, Any], None]] = {
    "img_size": _image_size,
    "pretrained": _flag(optional=False),
    "drop_path_rate": _fraction(closed=False),
    "norm_eps": _positive(optional=True),
    "patch_stride": _int_at_least(1, optional=True),
    "backbone_kwargs": _mapping(optional=True),
    "pos_embed_interpolation": _pos_embed_interpolation,
}


def check_model_settings(settings: Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first invalid shared model option (``prefix`` + key)."""
    for key, value in settings.items():
        rule = MODEL_RULES.get(key)
        if rule is not None:
            rule(prefix + key, value)


def check_fit_settings(settings: Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first invalid ``fit`` setting (``prefix`` + key); others are not checked."""
    for key, value in settings.items():
        rule = FIT_RULES.get(key)
        if rule is not None:
            rule(prefix + key, value)


def check_data_settings(settings: Mapping[str, Any], prefix: str = "data.") -> None:
    """Raise ``ValueError`` naming the first invalid setting of a recipe's ``data`` section."""
    for key, value in settings.items():
        rule = DATA_RULES.get(key)
        if rule is not None:
            rule(prefix + key, value)


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def number_from_text(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: numbers YAML 1.1 leaves as text (an exponent without a dot); anything else as is."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value
