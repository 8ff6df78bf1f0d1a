"""fgvc's settings in one shape: frozen dataclasses whose fields state each default, check and help once.

* ``TrainConfig``: the options of ``fgvc.fit`` (a recipe's ``train`` section, with ``RecipeTrainOptions``'
  ``steps`` and ``lr_base_batch_size``);
* ``DataConfig``: a recipe's ``data`` section (dataset, splits, class subset, transforms);
* the ``model`` section is the method's keyword arguments (``fgvc.create_model``), their defaults in the
  method's signature and the shared ones' checks in ``MODEL_RULES``;
* ``RecipeSettings``: a recipe's top level (seeds, protocol, the paper's number);
* ``fgvc.studies.demo.DemoSettings`` and ``fgvc.studies.pretrain.PretrainSettings`` are ``Settings`` too.

Every class is a ``Settings``: made from a mapping with ``from_mapping`` (an unknown key is refused, with the
closest name, by ``refuse_unknown``: the same message for a recipe, a ``--set`` override, a notebook's
overrides and a flag), checked when made (``ValueError`` naming the first invalid setting as the recipe
spells it, e.g. ``train.lr``), and turned into command-line flags by ``add_flags``. So ``batch_size=0``,
``epochs=0``, ``lr=nan`` or ``val_fraction=-0.2`` stop before a model is built, instead of ending in a
``ZeroDivisionError`` deep in a loop, or silently meaning something else."""

from __future__ import annotations

import argparse
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .hints import did_you_mean

if TYPE_CHECKING:
    import torch

__all__ = [
    "AMP_VALUES",
    "POS_EMBED_INTERPOLATIONS",
    "DataConfig",
    "RecipeSettings",
    "RecipeTrainOptions",
    "Settings",
    "TrainConfig",
    "add_flags",
    "check_data_settings",
    "check_fit_settings",
    "check_model_settings",
    "describe",
    "flag_changes",
    "like",
    "number_from_text",
    "option",
    "parse_value",
    "refuse_unknown",
]

AMP_VALUES = (None, False, True, "auto", "none", "fp32", "bf16", "bfloat16", "fp16", "float16")
Check = Callable[[str, Any], None]
S = TypeVar("S", bound="Settings")


# ---------------------------------------------------------------------------------------------- the checks
# Each returns a check ``(name, value) -> None`` that raises ``ValueError`` naming ``name``.


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: int, optional: bool = False) -> Check:
    """An integer >= ``low`` (``optional``: or None)."""
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}{' or null' if optional else ''}, got {value!r}")

    return check


def positive(optional: bool = False) -> Check:
    """A finite number > 0 (``optional``: or None)."""
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not _is_real(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0{' or null' if optional else ''}, got {value!r}")

    return check


def non_negative(name: str, value: Any) -> None:
    """A finite number >= 0."""
    if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def fraction(closed: bool) -> Check:
    """A number in [0, 1] (``closed``) or [0, 1)."""
    def check(name: str, value: Any) -> None:
        if not _is_real(value) or not (0 <= value <= 1 if closed else 0 <= value < 1):
            raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value!r}")

    return check


def integer(name: str, value: Any) -> None:
    """Any integer (a seed)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")


def _amp(name: str, value: Any) -> None:
    if not any(value is v or (isinstance(v, str) and value == v) for v in AMP_VALUES):
        raise ValueError(f"{name} must be 'auto', 'bf16', 'fp16' or None, got {value!r}")


def text(example: str, optional: bool = False) -> Check:
    """A non-empty string such as ``example`` (``optional``: or None)."""
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a name such as {example!r}{' or null' if optional else ''}, got {value!r}")

    return check


def flag(optional: bool = False) -> Check:
    """True or False (``optional``: or None)."""
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


def _image_size(name: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{name} must be a size N >= 1 or [height, width], got None")
    _size(name, value)


def _classes(name: str, value: Any) -> None:
    if value is None or (_is_int(value) and value >= 2) or (isinstance(value, (list, tuple)) and len(value) >= 2):
        return
    raise ValueError(f"{name} must be null, a class count >= 2 or a list of at least 2 classes, got {value!r}")


def mapping(optional: bool = False) -> Check:
    """A mapping of options (``optional``: or None)."""
    def check(name: str, value: Any) -> None:
        if not isinstance(value, Mapping) and not (optional and value is None):
            raise ValueError(f"{name} must be a mapping of options{' or null' if optional else ''}, got {value!r}")

    return check


def integers(low: int, optional: bool = False) -> Check:
    """A non-empty list of integers >= ``low`` (``optional``: or None)."""
    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v >= low for v in value):
            raise ValueError(f"{name} must be a non-empty list of integers >= {low}, got {value!r}")

    return check


# ------------------------------------------------------------------------------------- the settings shape


def option(default: Any = MISSING, check: Check | None = None, help: str = "", *,
           default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A settings field: its default (stated here only), the check its values pass, and a one-line help
    (what ``add_flags`` and ``fgvc list settings`` show)."""
    metadata = {"check": check, "help": help}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def like(cls: type[Settings], name: str, default: Any = MISSING, help: str | None = None) -> Any:
    """A field that means what ``cls``'s field ``name`` means (its check and help), with its own default:
    the demo's ``lr`` is checked as ``fit``'s ``lr`` is."""
    theirs = next(f for f in fields(cls) if f.name == name)  # type: ignore[arg-type]
    return option(_default(theirs) if default is MISSING else default, theirs.metadata.get("check"),
                  theirs.metadata.get("help", "") if help is None else help)


def refuse_unknown(given: Iterable[str], allowed: Iterable[str], what: str, origin: str = "", context: str = "") -> None:
    """Raise ``ValueError`` for keys of ``given`` not in ``allowed``, naming them, the closest allowed name and
    the allowed ones: ``"recipe.yaml: unknown train keys ['lrr'] (did you mean 'lr'?); allowed: ..."``. The one
    unknown-key check of recipes, overrides, notebooks and settings objects."""
    allowed = sorted(set(allowed))
    unknown = sorted(set(given) - set(allowed))
    if not unknown:
        return
    hint = next((h for h in (did_you_mean(k, allowed) for k in unknown) if h), "")
    where = f"{origin}: " if origin else ""
    raise ValueError(f"{where}unknown {what} keys {unknown}{context}{hint}; allowed: {allowed}")


class Settings:
    """What every settings dataclass shares (subclasses are ``@dataclass(frozen=True)`` with ``option``
    fields): checked when made, made from a mapping with unknown keys refused, shown as flags."""

    #: How the settings are named in messages and ``--set`` keys (``"train"``: ``train.lr``); "" for none.
    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        type(self).check_values(self.as_dict(), prefix=f"{self.section}." if self.section else "")

    def as_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments (shallow)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> list[str]:
        """The setting names, in the class's order."""
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{name: default}`` (a default factory is called)."""
        return {f.name: _default(f) for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def check_values(cls, values: Mapping[str, Any], prefix: str = "") -> None:
        """Raise ``ValueError`` naming the first invalid value (``prefix`` + name); other keys are not looked at."""
        checks = {f.name: f.metadata.get("check") for f in fields(cls)}  # type: ignore[arg-type]
        for key, value in values.items():
            check = checks.get(key)
            if check is not None:
                check(prefix + key, value)

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any], origin: str = "", base: S | None = None) -> S:
        """Settings from ``values`` (the defaults, or ``base``, for what is absent): an unknown key is refused
        (``refuse_unknown``) and each value checked, both named as ``section.key``."""
        refuse_unknown(values, cls.names(), cls.section or cls.__name__, origin)
        try:
            cls.check_values(values, prefix=f"{cls.section}." if cls.section else "")
        except ValueError as err:
            raise ValueError(f"{origin}: {err}" if origin else str(err)) from None
        return cls(**values) if base is None else replace(base, **values)  # type: ignore[call-arg]


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def number_from_text(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: numbers YAML 1.1 leaves as text (an exponent without a dot); anything else as is."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def parse_value(text_value: str) -> Any:
    """A value given as text (a ``--set`` override, a flag): read as YAML (``null``, ``true``, ``[1, 2]``),
    ``1e-3`` as a number; empty text is None."""
    import yaml

    return number_from_text(yaml.safe_load(text_value)) if text_value.strip() else None


def _flag_type(default: Any) -> Callable[[str], Any]:
    """How a flag's text is read: as a ``--set`` value, a list as ``A,B,...``; a number where the default is
    one (else argparse's usage error, naming the flag and the text)."""
    def number(t: str) -> Any:
        value = parse_value(t)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or (isinstance(default, int) and not isinstance(value, int))):
            kind = "an integer" if isinstance(default, int) else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {t!r}")
        return value

    def items(t: str) -> tuple[Any, ...]:  # "7,14,20" -> (7, 14, 20)
        values = tuple(parse_value(p) for p in t.split(",") if p.strip())
        if default and all(_is_int(v) for v in default) and (not values or not all(_is_int(v) for v in values)):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 7,14), got {t!r}")
        return values

    if isinstance(default, tuple):
        return items
    return number if isinstance(default, (int, float)) and not isinstance(default, bool) else parse_value


def _shown(value: Any, as_yaml: bool = False) -> str:
    """A default as a flag takes it (``7,14``) or, ``as_yaml``, as a recipe or ``--set`` writes it (``[7, 14]``)."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shown(v, True) for v in value) + "]" if as_yaml else ",".join(map(_shown, value))
    if isinstance(value, bool) or value is None:
        return {None: "null", True: "true", False: "false"}[value]
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_flags(parser: argparse.ArgumentParser, cls: type[Settings], names: Iterable[str] | None = None,
              defaults: Settings | None = None) -> None:
    """One ``--name`` flag per field of ``cls`` (``names``: these only), with its help and default
    (``defaults``' values where given): ``--batch-size 64``, ``--detail-sides 7,14``, ``--pretrained`` /
    ``--no-pretrained``. Values are read as ``--set`` values are and checked by the field's check when the
    settings are made (``flag_changes``)."""
    chosen = None if names is None else list(names)
    shown = cls.defaults() if defaults is None else defaults.as_dict()
    for f in fields(cls):  # type: ignore[arg-type]
        if chosen is not None and f.name not in chosen:
            continue
        text_help = f"{f.metadata.get('help', '')} (default: {_shown(shown[f.name])})".strip()
        dest, name = f.name, "--" + f.name.replace("_", "-")
        if isinstance(_default(f), bool):
            parser.add_argument(name, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text_help)
        else:
            parser.add_argument(name, dest=dest, type=_flag_type(_default(f)), default=None,
                                metavar=_metavar(_default(f)), help=text_help)


def describe(cls: type[Settings], prefix: str | None = None, skip: Iterable[str] = ()) -> list[str]:
    """One line per setting: ``section.name = default  help`` (``fgvc list settings``); ``prefix``: instead
    of the section's."""
    prefix = (f"{cls.section}." if cls.section else "") if prefix is None else prefix
    rows = [(prefix + k, _shown(v, as_yaml=True)) for k, v in cls.defaults().items() if k not in set(skip)]
    width = max(len(k) + len(v) for k, v in rows) + 3
    helps = {f.name: f.metadata.get("help", "") for f in fields(cls)}  # type: ignore[arg-type]
    return [f"{f'{k} = {v}':<{width}}  {helps[k[len(prefix):]]}".rstrip() for k, v in rows]


def _metavar(default: Any) -> str:
    if isinstance(default, tuple):
        return "A,B,..."
    return "N" if isinstance(default, int) else "X" if isinstance(default, float) else "VALUE"


def flag_changes(cls: type[Settings], args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given as flags (``add_flags``): ``{name: value}``, absent flags left out."""
    return {name: getattr(args, name) for name in cls.names() if getattr(args, name, None) is not None}


# ---------------------------------------------------------------------------------------- fit's options


@dataclass(frozen=True)
class TrainConfig(Settings):
    """The options of ``fgvc.fit``: the one definition that ``fit``, a recipe's ``train`` section and the
    command line share (each field's help says what it does). A config is checked when it is made
    (``ValueError`` naming the first invalid option). The longer stories:

    * ``batch_size`` images per process and forward pass; the optimizer sees ``batch_size *
      accumulate_steps * world_size`` images per step.
    * ``backbone_lr_scale``: the pretrained parameters (``model.pretrained_parameters()``: the backbone's,
      less any part the method re-initialises, such as TransFG's part block) train at ``lr *
      backbone_lr_scale``, the layers that start from scratch (heads, aggregator, cross-attention) at ``lr``:
      fine-tuning a pretrained backbone gently while the new layers learn fast. 1.0: one rate for all.
    * ``out_dir``: ``last.safetensors`` and ``train_state.safetensors`` are written every epoch (and every
      ``save_every_steps`` steps), ``best.safetensors`` whenever the validation top-1 improves, and
      ``log.jsonl`` (+ TensorBoard) as training goes.
    * ``resume``: True: continue from ``out_dir/train_state.safetensors`` if it exists (else start fresh, so
      a requeued job can always pass it); a path (file or directory): continue from that state, which must
      exist. Model, optimizer, schedule, grad scaler, RNG and the position in the epoch are restored; the
      training data (its files and labels, by fingerprint) and every model option (``drop_path_rate``,
      ``norm_eps``, the method's own, ...) must match the saved run, and so must the optimizer settings
      (``lr``, ``weight_decay``, ``momentum`` for SGD, ``min_lr``, ``warmup_steps``, ``label_smoothing``,
      ``grad_clip``): a resume with others is refused, naming them. ``epochs`` may grow (the schedule is
      recomputed), not shrink below what was trained.
    * ``overwrite``: a new run (``resume=False``) in an ``out_dir`` that holds another run's files is
      refused, naming them; True removes that run's files (fgvc's own only) first. An ``out_dir`` is locked
      while a run writes to it (``fgvc.engine.run_folder``): a second process is refused, naming the first.
    """

    section: ClassVar[str] = ""

    epochs: int = option(10, at_least(1), "passes over the training data")
    batch_size: int = option(32, at_least(1), "images per process and forward pass")
    optimizer: str = option("adamw", text("adamw"), "adamw or sgd (momentum), built by timm (no weight decay on "
                            "norms, biases and position embeddings)")
    lr: float = option(5e-4, positive(), "peak learning rate of the new layers")
    weight_decay: float = option(0.05, non_negative, "weight decay")
    momentum: float = option(0.9, fraction(closed=False), "SGD momentum")
    warmup_steps: int | None = option(None, at_least(0, optional=True),
                                      "linear warmup steps (null: one epoch, at most 500), then cosine decay")
    min_lr: float = option(1e-6, non_negative, "the cosine decay's final learning rate")
    backbone_lr_scale: float = option(1.0, positive(), "the pretrained parameters' learning rate over lr")
    label_smoothing: float = option(0.0, fraction(closed=False), "passed to the model's loss")
    grad_clip: float | None = option(1.0, positive(optional=True), "clip the global gradient norm (null: off)")
    amp: str | bool | None = option("auto", _amp, "auto (bf16 on capable GPUs, fp32 on the CPU), bf16, fp16 or null")
    device: str | torch.device | None = option(None, None, "cpu, cuda or cuda:N (null: CUDA when available; under "
                                               "torchrun the local rank's)")
    seed: int = option(0, integer, "seeds the data order, the augmentations and the training RNG (seed + rank)")
    num_workers: int = option(0, at_least(0), "data-loading worker processes")
    out_dir: str | os.PathLike | None = option(None, None, "where checkpoints and logs go (null: nowhere)")
    progress: bool = option(True, flag(), "progress bars and one printed line per epoch")
    resume: bool | str | os.PathLike = option(False, None, "continue a run: true (out_dir's state if any) or a path")
    overwrite: bool = option(False, flag(), "remove another run's files in out_dir first (else refused)")
    save_every_steps: int | None = option(None, at_least(1, optional=True),
                                          "also checkpoint every N optimizer steps (null: at epoch ends only)")
    accumulate_steps: int = option(1, at_least(1), "forward passes per optimizer step (gradient accumulation)")
    compile: bool = option(False, flag(), "torch.compile the training forward (evaluation stays eager)")
    channels_last: bool = option(False, flag(), "NHWC images and weights")
    grad_checkpointing: bool = option(False, flag(), "activation checkpointing in training: the blocks' activations "
                                      "recomputed in backward (less memory, slower steps, the same gradients)")
    tf32: bool | None = option(None, flag(optional=True), "on CUDA: allow TF32 (true), forbid it (false), or leave "
                               "PyTorch's setting (null); restored when fit returns")
    log_every_steps: int = option(50, at_least(1), "a log.jsonl line every N optimizer steps (plus one per epoch)")
    tensorboard: bool | None = option(None, flag(optional=True), "TensorBoard scalars in out_dir/tensorboard "
                                      "(null: when installed)")
    find_unused_parameters: bool = option(False, flag(), "passed to DistributedDataParallel")

    @classmethod
    def from_options(cls, config: TrainConfig | None, options: Mapping[str, Any], caller: str = "fit") -> TrainConfig:
        """``config`` (default: the defaults) with ``options`` replacing its values; an unknown option is a
        ``TypeError`` as for any unknown keyword argument of ``caller``, with the closest name."""
        for key in options:
            if key not in cls.__dataclass_fields__:
                hint = did_you_mean(key, cls.names())
                raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")
        return cls(**options) if config is None else replace(config, **options)


@dataclass(frozen=True)
class RecipeTrainOptions(Settings):
    """The two keys of a recipe's ``train`` section that the recipe reads itself (``fit_arguments``); the
    rest are ``TrainConfig``'s, less ``seed`` and ``out_dir`` (``train_recipe`` sets those per seed)."""

    section: ClassVar[str] = "train"
    #: TrainConfig options a recipe does not set: one run per seed, each in its own folder.
    SET_PER_RUN: ClassVar[tuple[str, ...]] = ("seed", "out_dir")

    steps: int | None = option(None, at_least(1, optional=True), "total optimizer updates (TransFG's count), "
                               "converted to the epochs that reach it; give steps or epochs")
    lr_base_batch_size: float | None = option(None, positive(optional=True), "scale lr by images per update / "
                                              "this (DeiT's and DCAL's convention; null: off)")

    @classmethod
    def train_keys(cls) -> list[str]:
        """Every key a recipe's ``train`` section may hold."""
        return [n for n in TrainConfig.names() if n not in cls.SET_PER_RUN] + cls.names()

    @classmethod
    def check_section(cls, train: Mapping[str, Any], origin: str = "") -> None:
        """A recipe's ``train`` section: unknown keys refused, every value checked as ``fit`` checks it."""
        refuse_unknown(train, cls.train_keys(), "train", origin)
        if train.get("steps") is not None and train.get("epochs") is not None:
            raise ValueError(f"{origin + ': ' if origin else ''}give train.steps or train.epochs, not both")
        try:
            TrainConfig.check_values(train, prefix="train.")
            cls.check_values(train, prefix="train.")
        except ValueError as err:
            raise ValueError(f"{origin}: {err}" if origin else str(err)) from None


# -------------------------------------------------------------------------------------------- the data


#: ``DataConfig.test_resize``'s default: the test images are resized as the training images are.
AS_RESIZE = "as_resize"


def _test_resize(name: str, value: Any) -> None:
    if value != AS_RESIZE:
        _size(name, value)


def _split_name(optional: bool) -> Check:
    def check(name: str, value: Any) -> None:
        if not (optional and value is None) and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{name} must be a split name such as 'train' or 'test'{' or null' if optional else ''}, "
                             f"got {value!r}")

    return check


def _erasing_scale(name: str, value: Any) -> None:
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_real(v) and 0 < v <= 1 for v in value)
            or value[0] > value[1]):
        raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= 1, got {value!r}")


@dataclass(frozen=True)
class DataConfig(Settings):
    """A recipe's ``data`` section: which images, which splits, which transforms (``build_recipe_data``)."""

    section: ClassVar[str] = "data"

    dataset: str | None = option(None, text("cub", optional=True), "the dataset (fgvc list datasets)")
    root: str | None = option(None, None, "the dataset's folder (null: the dataset's default place)")
    train_split: str | None = option(None, _split_name(optional=True), "the split trained on (null: the "
                                     "dataset's default: trainval for FGVC-Aircraft, train elsewhere)")
    test_split: str = option("test", _split_name(optional=False), "the split tested on")
    val_fraction: float = option(0.1, fraction(closed=False), "held out of the training split (stratified) "
                                 "to choose the checkpoint; ignored under protocol paper")
    split_seed: int = option(0, integer, "seeds the validation split")
    classes: int | list | None = option(None, _classes, "a class subset: a count (the first N) or a list")
    resize: int | list | None = option(None, _size, "resize before the crop: N (shorter side) or [h, w]")
    test_resize: int | list | str | None = option(AS_RESIZE, _test_resize,
                                                  "the test images' resize (as_resize: the same as resize)")
    trivial_augment: bool = option(False, flag(), "TrivialAugment on the training images")
    auto_augment: bool = option(False, flag(), "AutoAugment on the training images")
    random_erasing: float = option(0.0, fraction(closed=True), "random erasing probability")
    random_erasing_scale: tuple[float, float] = option((0.02, 0.33), _erasing_scale, "the erased area's range")
    options: Mapping[str, Any] = option(None, mapping(optional=True), "the dataset's own options",
                                        default_factory=dict)

    def test_resize_value(self) -> Any:
        """The test images' resize, ``resize`` when not given."""
        return self.resize if self.test_resize == AS_RESIZE else self.test_resize


# ------------------------------------------------------------------------------------------- the model

#: How position embeddings are resampled to another grid (``pos_embed_interpolation``): timm's antialiased
#: bicubic or bilinear (half-pixel centres), or ``"scipy_zoom"``, what the official GLSim and TransFG code
#: computes with ``scipy.ndimage.zoom(order=1)``: linear, the corner cells of both grids aligned.
POS_EMBED_INTERPOLATIONS = ("bicubic", "bilinear", "scipy_zoom")


def _pos_embed_interpolation(name: str, value: Any) -> None:
    if value is not None and value not in POS_EMBED_INTERPOLATIONS:
        raise ValueError(f"{name} must be one of {', '.join(POS_EMBED_INTERPOLATIONS)} or null, got {value!r}")


#: The checks of the options every method shares (``FGVCModel``; a recipe's ``model`` section). Their
#: defaults are ``FGVCModel.__init__``'s; a method's own options are its ``__init__``'s keyword arguments.
MODEL_RULES: dict[str, Check] = {
    "img_size": _image_size,
    "pretrained": flag(),
    "drop_path_rate": fraction(closed=False),
    "norm_eps": positive(optional=True),
    "patch_stride": at_least(1, optional=True),
    "backbone_kwargs": mapping(optional=True),
    "pos_embed_interpolation": _pos_embed_interpolation,
}


def check_model_settings(settings: Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first invalid shared model option (``prefix`` + key)."""
    for key, value in settings.items():
        rule = MODEL_RULES.get(key)
        if rule is not None:
            rule(prefix + key, value)


# ------------------------------------------------------------------------------------- a recipe's top level

#: Which checkpoint a recipe evaluates on test (``fgvc.studies.recipe``): the best on a held-out validation
#: split, or the papers' protocol (the whole training split, the final checkpoint).
PROTOCOLS = ("val", "paper")


def _protocol(name: str, value: Any) -> None:
    if value not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {value!r}")


def _seeds(name: str, value: Any) -> None:
    """One run per seed: a repeated seed would overwrite its run and count twice in the mean +- std."""
    if (not isinstance(value, (list, tuple)) or not value or not all(_is_int(s) for s in value)
            or len(set(value)) != len(value)):
        raise ValueError(f"{name} must be a non-empty list of integers without repeats, got {list(value) if isinstance(value, tuple) else value!r}")


@dataclass(frozen=True)
class RecipeSettings(Settings):
    """A recipe's top level; its ``model``, ``data`` and ``train`` sections have their own settings."""

    section: ClassVar[str] = ""
    #: The sections, and what ``train_recipe`` adds to a run's saved ``config.yaml``.
    SECTIONS: ClassVar[tuple[str, ...]] = ("model", "data", "train")
    SAVED_ONLY: ClassVar[tuple[str, ...]] = ("resolved_fit_arguments", "run_info")

    name: str | None = option(None, None, "the recipe's name (the default output folder: runs/NAME)")
    description: str | None = option(None, None, "what the recipe trains")
    expected_top1: float | None = option(None, None, "the paper's top-1, compared only under protocol paper")
    source: str | None = option(None, None, "where expected_top1 comes from")
    seeds: tuple[int, ...] = option((0,), _seeds, "one run per seed; mean +- std reported")
    protocol: str = option("val", _protocol, "val: the best checkpoint on a held-out split; paper: the whole "
                           "training split and the final checkpoint")

    @classmethod
    def of(cls, recipe: Mapping[str, Any]) -> RecipeSettings:
        """The top-level settings of a (validated) recipe mapping."""
        return cls(**{k: recipe[k] for k in cls.names() if k in recipe})

    @classmethod
    def check_top_level(cls, recipe: Mapping[str, Any], origin: str = "") -> None:
        """Unknown top-level keys refused, ``seeds`` and ``protocol`` checked."""
        refuse_unknown(recipe, [*cls.names(), *cls.SECTIONS, *cls.SAVED_ONLY], "top-level", origin)
        try:
            cls.check_values(recipe)
        except ValueError as err:
            raise ValueError(f"{origin}: {err}" if origin else str(err)) from None


# ------------------------------------------------------------------------------ the checks as functions


def check_fit_settings(settings: Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first invalid ``fit`` setting (``prefix`` + key); others are not checked."""
    TrainConfig.check_values(settings, prefix)
    RecipeTrainOptions.check_values(settings, prefix)


def check_data_settings(settings: Mapping[str, Any], prefix: str = "data.") -> None:
    """Raise ``ValueError`` naming the first invalid setting of a recipe's ``data`` section."""
    DataConfig.check_values(settings, prefix)
