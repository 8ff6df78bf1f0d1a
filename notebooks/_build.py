"""Shared by the notebook generators (``make_*.py``): cells -> a notebook committed without outputs."""

from __future__ import annotations

import hashlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def build(cells: list[tuple[str, str]], key: str) -> nbformat.NotebookNode:
    """A notebook from ``(kind, source)`` cells, kind ``"md"``, ``"code"`` or ``"params"`` (a code cell tagged
    ``parameters``, which papermill / nbmake read); stable cell ids (hash of ``key`` and position), no outputs.
    """
    out = []
    for i, (kind, source) in enumerate(cells):
        source = source.strip("\n")
        cell_id = hashlib.sha1(f"{key}-{i}".encode()).hexdigest()[:8]
        if kind == "md":
            cell = new_markdown_cell(source, id=cell_id)
        else:
            cell = new_code_cell(source, id=cell_id)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        out.append(cell)
    nb = new_notebook(cells=out)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb
