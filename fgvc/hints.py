"""Near-miss suggestions for error messages ("did you mean ...?"), shared by the library and the command line."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["did_you_mean", "similar_files"]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" (did you mean 'top_k'?)"`` for the closest of ``choices`` to ``word`` (difflib), or ``""``.

    Returned with its leading space so that it can be appended to any message unconditionally.
    """
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=n, cutoff=cutoff)
    if not close:  # a case slip or a missing/extra underscore is still a near miss
        folded = {c.lower().replace("_", "").replace("-", ""): c for c in choices}
        key = str(word).lower().replace("_", "").replace("-", "")
        close = [folded[key]] if key in folded else []
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def similar_files(path: str | os.PathLike, n: int = 3) -> str:
    """For a missing file, ``" (did you mean 'runs/x/best.safetensors'?)"`` from its folder's entries, or ``""``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return ""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(str(folder / c)) for c in close) + "?)"
