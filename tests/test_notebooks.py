"""The notebooks as committed: no outputs, the title then the tagged parameters cell reading FGVC_SMOKE, and
the generated ones match their generators. (The test suite also runs every notebook with nbmake.)"""

import importlib
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_title_then_the_parameters_cell_and_nothing_is_committed_run(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")  # the title comes first
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])  # the first code cell: what papermill / nbmake read
    assert 'os.environ.get("FGVC_SMOKE"' in first.source and "SMOKE =" in first.source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    assert any(c.cell_type == "markdown" for c in nb.cells)  # they explain what the reader sees


@pytest.mark.parametrize(
    "script, cells, name",
    [("make_02_04", "TRAIN_CUB", "02_train_cub"), ("make_02_04", "EVALUATE", "04_evaluate_cub_cars"),
     ("make_03_attention_visualization", "CELLS", "03_attention_visualization")],
)
def test_generated_notebooks_match_their_generator(script, cells, name, monkeypatch):
    folder = NOTEBOOKS[0].parent
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(script)
    from _build import build

    expected = build(getattr(module, cells), name[:2])
    committed = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    assert committed == expected, f"notebooks/{name}.ipynb differs from notebooks/{script}.py: edit the generator, then run it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_paste_no_helpers_and_say_when_numbers_mean_nothing(path):
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "smoke_banner(SMOKE)" in code  # small mode says its numbers are not meaningful
    assert "def find_root" not in code and "def cell(" not in code  # helpers live in the package
    assert "sys.path" not in code
