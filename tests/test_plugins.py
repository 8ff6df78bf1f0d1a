"""A method is one file: the command line loads a user's (``--plugin``, ``fgvc.methods`` entry points), and a
shipped one is its module plus one registration line, everything else read from the module through the registry.

The plugin is the method of docs/adding_a_method.md, written from the page's code blocks to a module here.
"""

import ast
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import TINY
from test_datasets import make_cub

from fgvc.cli import main
from fgvc.methods import SHIPPED_METHODS, list_models, shipped_methods, unregister_model
from fgvc.methods.plugins import plugin_modules
from fgvc.storage.checkpoint import read_metadata

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding_a_method.md"
MODULE, METHOD = "meanpool", "meanpool"  # the page's module name and registered name


def doc_method_source() -> str:
    """The page's class (section 1) with the members its later blocks add (indented ``def``s)."""
    blocks = [b.split("```", 1)[0] for b in DOC.read_text().split("```python\n")[1:]]
    members = [b for b in blocks if b.startswith("    def ")]
    assert "@register_model" in blocks[0] and members, "docs/adding_a_method.md no longer shows the method"
    return blocks[0] + "\n" + "\n".join(members)


def forget(module: str, *methods: str) -> None:
    """As a fresh process: the module not imported, its methods not registered."""
    sys.modules.pop(module, None)
    for name in methods:
        if name in list_models():
            unregister_model(name)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(doc_method_source())
    monkeypatch.syspath_prepend(str(folder))
    forget(MODULE, METHOD)
    yield folder
    forget(MODULE, METHOD)


def tiny_recipe(tmp_path: Path) -> Path:
    recipe = dict(
        name="tiny_meanpool", expected_top1=None, source="a test", seeds=[0],
        model=dict(method=METHOD, pooling="max", img_size=32, **TINY),
        data=dict(dataset="cub", root="set-on-the-command-line", val_fraction=0.5, resize=36),
        train=dict(epochs=1, batch_size=2, lr=1e-3),
    )
    path = tmp_path / "tiny_meanpool.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_docs_method_trains_as_a_plugin_and_its_checkpoint_needs_the_plugin_to_load(plugin_dir, tmp_path, capsys):
    root = make_cub(tmp_path / "CUB_200_2011")
    out = tmp_path / "run"
    assert main(["--plugin", MODULE, "train", "--config", str(tiny_recipe(tmp_path)), "--set", f"data.root={root}",
                 "--out", str(out), "--no-progress"]) == 0
    checkpoint = out / "seed0" / "best.safetensors"
    assert read_metadata(checkpoint)["method"] == METHOD
    assert read_metadata(checkpoint)["options"] == {"pooling": "max"}
    capsys.readouterr()

    forget(MODULE, METHOD)  # a new process: nothing imported the module
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert repr(METHOD) in err and "--plugin" in err

    assert main(["--plugin", MODULE, "eval", "--checkpoint", str(checkpoint), "--data", str(root),
                 "--no-progress"]) == 0
    assert "top1" in capsys.readouterr().out


def test_a_missing_plugin_module_is_a_one_line_error_naming_it(capsys):
    assert main(["--plugin", "no_such_fgvc_plugin", "list", "methods"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no plugin module 'no_such_fgvc_plugin'" in err


def test_a_plugin_that_fails_to_import_is_named_with_its_own_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_of_a_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--plugin", "broken_plugin", "list", "methods"]) == 1
    err = capsys.readouterr().err
    assert "plugin module 'broken_plugin' failed to import" in err and "no_such_dependency_of_a_plugin" in err
    sys.modules.pop("broken_plugin", None)


def test_an_installed_entry_point_of_the_group_is_loaded_at_the_command_start(plugin_dir, capsys):
    info = plugin_dir / "meanpool_dist-0.1.dist-info"  # what pip installs for [project.entry-points."fgvc.methods"]
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meanpool-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fgvc.methods]\n{METHOD} = {MODULE}\n")
    assert main(["list", "methods"]) == 0
    assert f"  {METHOD}  (pooling)" in capsys.readouterr().out.splitlines()


def test_a_plugin_module_declares_its_official_format_and_fgvc_reads_it(plugin_dir, capsys):
    from fgvc.storage.convert import detect_format, formats

    (plugin_dir / f"{MODULE}.py").write_text(doc_method_source() + textwrap.dedent('''
        from fgvc.methods import create_model
        from fgvc.methods.declare import OfficialFormat

        OFFICIAL_FORMAT = OfficialFormat(
            name="meanpool-official", description="the meanpool paper's ('model': pool.* keys)", keys=("pool.",),
            convert=lambda obj: create_model("meanpool", backbone="test_vit", num_classes=2, img_size=32),
        )
    '''))
    assert "meanpool-official" not in formats()
    with pytest.raises(SystemExit):  # the parser is built after the plugin's import: --format lists it
        main(["--plugin", MODULE, "convert", "--help"])
    assert "meanpool-official" in capsys.readouterr().out
    assert "meanpool-official" in formats()
    assert detect_format({"model": {"module.pool.weight": None}}) == "meanpool-official"
    assert detect_format({"model": {"transformer.embeddings.cls_token": None}}) == "transfg-official"


def test_demo_workers_import_the_modules_of_plugin_methods_only(plugin_dir):
    main(["--plugin", MODULE, "list", "methods"])
    assert plugin_modules([METHOD, "vit", "glsim"]) == [MODULE]
    assert plugin_modules(["vit", "glsim"]) == []


# ------------------------------------------------------------------------------------ shipping a method
METHODS_DIR = ROOT / "fgvc" / "methods"


def registered_names(path: Path) -> list[str]:
    """The names a module registers with ``@register_model("...")``, in file order."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "register_model":
                    names.append(dec.args[0].value)
    return names


def method_modules() -> dict[str, list[str]]:
    """``fgvc/methods`` modules that register a method -> the names they register."""
    found = {p.stem: registered_names(p) for p in sorted(METHODS_DIR.glob("*.py"))}
    return {stem: names for stem, names in found.items() if names}


def test_shipping_a_method_is_its_module_and_one_line_in_the_methods_init():
    modules = method_modules()
    lines = [node for node in ast.parse((METHODS_DIR / "__init__.py").read_text()).body
             if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in modules]
    imported = [node.module for node in lines]
    assert sorted(imported) == sorted(modules), "each method module is imported once in fgvc/methods/__init__.py"
    assert len({node.lineno for node in lines}) == len(lines) == len(modules)  # one line each
    assert [name for module in imported for name in modules[module]] == shipped_methods() == list(SHIPPED_METHODS)


def names_a_method_module(path: Path, shipped: set[str]) -> list[str]:
    """The imports in ``path`` that name a shipped method's module (``fgvc.methods.glsim``, ``from ..methods
    import glsim``, ``from .glsim import ...`` inside fgvc/methods)."""
    package = ["fgvc", *path.relative_to(ROOT / "fgvc").parent.parts] if path.is_relative_to(ROOT / "fgvc") else []
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [t for t in targets if t in {f"fgvc.methods.{m}" for m in shipped} or
                  any(t.startswith(f"fgvc.methods.{m}.") for m in shipped)]
    return found


def test_no_module_outside_the_methods_names_a_shipped_methods_module():
    shipped = set(method_modules())
    files = [p for p in sorted((ROOT / "fgvc").rglob("*.py")) if METHODS_DIR not in p.parents]
    files += sorted((ROOT / "scripts").rglob("*.py"))
    offenders = {str(p.relative_to(ROOT)): hits for p in files if (hits := names_a_method_module(p, shipped))}
    assert not offenders
    assert names_a_method_module(METHODS_DIR / "__init__.py", shipped)  # the check sees the registration lines


def test_the_shipped_formats_and_recipes_are_read_from_the_method_modules():
    import importlib.util

    from fgvc.methods.base import declared
    from fgvc.storage.convert import official_formats

    assert list(official_formats()) == ["glsim-official", "transfg-official"]
    assert [f.name for f in declared("OFFICIAL_FORMAT")] == list(official_formats())
    spec = importlib.util.spec_from_file_location("make_recipes", ROOT / "scripts" / "make_recipes.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.METHODS == tuple(SHIPPED_METHODS)  # every shipped method declares RECIPES
