"""Argument types shared by the commands of ``fgvc``."""

from __future__ import annotations

import argparse


def _img_size(text: str) -> int | tuple[int, int]:
    """``448`` -> 448; ``448x336`` -> (448, 336) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW (e.g. 448 or 448x336), got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _integers(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (at least one integer)."""
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        numbers = []
    if not numbers:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 0,1,2), got {text!r}")
    return numbers


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2], none repeated (a repeated seed would count twice in the mean +- std)."""
    seeds = _integers(text)
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers without repeats, got {text!r}")
    return seeds


def _accuracies(text: str) -> dict[str, float]:
    """``vit=83.5,glsim@448=86.1`` -> {"vit": 83.5, "glsim@448": 86.1}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"accuracies are METHOD=TOP1 pairs (e.g. vit=83.5,glsim=85.1), got {item!r}"
            )
    return out
