"""Settings checked once, up front, each with a one-line message: the checks ``fit`` and the recipes share.

``fit`` checks its own arguments (``check_fit_settings``) before it touches the data; a recipe's ``train``
section goes through the very same function when the recipe is loaded (``train.lr`` then names the key as
the recipe spells it), and its ``data`` section through ``check_data_settings``. So ``batch_size=0``,
``epochs=0``, ``lr=nan`` or ``val_fraction=-0.2`` stop before a model is built, naming the setting, instead of
ending in a ``ZeroDivisionError`` deep in a loop, or silently meaning something else.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["AMP_VALUES", "check_data_settings", "check_fit_settings", "number_from_text"]

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


FIT_RULES: dict[str, Callable[[str, Any], None]] = {
    "epochs": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "optimizer": _text,
    "lr": _positive(),
    "weight_decay": _non_negative,
    "momentum": _fraction(closed=False),
    "warmup_steps": _int_at_least(0, optional=True),
    "min_lr": _non_negative,
    "label_smoothing": _fraction(closed=False),
    "grad_clip": _positive(optional=True),
    "amp": _amp,
    "seed": _integer,
    "num_workers": _int_at_least(0),
    "save_every_steps": _int_at_least(1, optional=True),
    "accumulate_steps": _int_at_least(1),
    "log_every_steps": _int_at_least(1),
    "progress": _flag(optional=False),
    "compile": _flag(optional=False),
    "channels_last": _flag(optional=False),
    "find_unused_parameters": _flag(optional=False),
    "tf32": _flag(optional=True),
    "tensorboard": _flag(optional=True),
    # recipe-only keys of the train section (read by fgvc.recipe.fit_arguments)
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
