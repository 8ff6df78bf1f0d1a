"""Methods from outside the package: a module that registers them (``@register_model``) is imported by name.

``fgvc --plugin MODULE`` imports ``MODULE`` before the command runs; an installed package lists its modules in
the ``fgvc.methods`` entry-point group, which the ``fgvc`` command loads at its start (docs/adding_a_method.md).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable
from types import ModuleType

from .base import _REGISTRY

__all__ = [
    "ENTRY_POINT_GROUP", "PluginError", "import_plugins", "load_entry_points", "load_plugin", "plugin_modules",
]

#: The entry-point group of installed packages' method modules (``[project.entry-points."fgvc.methods"]``).
ENTRY_POINT_GROUP = "fgvc.methods"


class PluginError(ImportError):
    """A plugin module that is missing or fails to import."""


def load_plugin(name: str) -> ModuleType:
    """Import the module ``name`` (dotted, on ``sys.path`` or in the current folder), registering its methods."""
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(f"plugin {name!r} is not a module name (a dotted Python name such as my_methods.pool)")
    cwd = os.getcwd()
    try:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not _is_missing(name, err) or cwd in sys.path:
                raise
            sys.path.append(cwd)  # the console script's sys.path lacks the current folder; last: no shadowing
            return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if _is_missing(name, err):
            raise PluginError(
                f"no plugin module {name!r}: not found on sys.path nor in the current folder ({cwd})"
            ) from None
        raise PluginError(f"plugin module {name!r} failed to import: {err}") from err
    except Exception as err:
        raise PluginError(f"plugin module {name!r} failed to import: {type(err).__name__}: {err}") from err


def _is_missing(name: str, err: ModuleNotFoundError) -> bool:
    """Whether ``err`` is about ``name`` itself (or a package above it), not about something it imports."""
    return err.name is not None and (name == err.name or name.startswith(err.name + "."))


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import every module the installed packages list in ``group``; returns the entry points' names."""
    loaded = []
    for entry in importlib.metadata.entry_points(group=group):
        try:
            entry.load()
        except Exception as err:
            raise PluginError(
                f"the {group} entry point {entry.name!r} ({entry.value}, from "
                f"{getattr(entry.dist, 'name', 'an installed package')}) failed to import: {type(err).__name__}: {err}"
            ) from err
        loaded.append(entry.name)
    return loaded


def plugin_modules(methods: Iterable[str] | None = None) -> list[str]:
    """The importable modules outside fgvc that register ``methods`` (default: every registered method): what
    a spawned worker process imports to know them (a class defined in ``__main__`` cannot be re-imported)."""
    names = _REGISTRY if methods is None else [m for m in methods if m in _REGISTRY]
    modules = dict.fromkeys(_REGISTRY[m].__module__ for m in names)
    return [m for m in modules if not m.startswith("fgvc.") and m != "__main__"]


def import_plugins(names: Iterable[str]) -> None:
    """``load_plugin`` each of ``names``: a spawned process's start, so that it knows its parent's methods."""
    for name in names:
        load_plugin(name)
