"""The ``fgvc`` command (also ``python -m fgvc``): the only place that parses arguments.

``build_parser`` assembles the commands, one module each (``add_parser(sub)`` and the function it runs):
``demo``, ``pretrain``, ``data``, ``train``, ``eval_`` (``fgvc eval``), ``predict``, ``benchmark``,
``list_`` (``fgvc list``), ``export``, ``convert``; ``main`` runs one and turns an error into one line.

Methods from outside the package: ``main`` first imports the modules of the installed ``fgvc.methods`` entry
points, then each ``--plugin MODULE`` given before the command (``fgvc.methods.plugins``), so that every
command, and the parser's lists of methods and formats, know the methods they register.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import benchmark, convert, data, demo, eval_, export, list_, predict, pretrain, train

__all__ = ["build_parser", "describe_error", "main"]


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = _Parser(
        prog="fgvc", description="Fine-grained visual categorization with vision transformers."
    )
    parser.add_argument("--version", action="version", version=f"fgvc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help="import MODULE (on sys.path or in the current folder) first: the methods it registers "
        "(@register_model) work in every command; repeatable (docs/adding_a_method.md)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (demo, pretrain, data, train, eval_, predict, benchmark, list_, export, convert):
        command.add_parser(sub)
    _add_debug_flag(parser)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after any (sub)command too; SUPPRESS keeps a subcommand from resetting ``fgvc --debug``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--debug" not in child._option_string_actions:
                    child.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback"
                    )
                _add_debug_flag(child)


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped subcommand or choice."""

    def error(self, message: str) -> Any:
        import re

        from ..hints import did_you_mean

        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'?([\w.-]+)'?", match.group(2))
            message += did_you_mean(match.group(1), choices)
        super().error(message)


def describe_error(err: BaseException) -> str:
    """One line saying what went wrong and, where fgvc knows it, how to fix it."""
    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "RepositoryNotFoundError", "HfHubHTTPError"} or any(
        "huggingface.co" in str(e) for e in chain
    ):
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") else ""
        return (
            f"could not download pretrained weights from the Hugging Face Hub{offline}: set model.pretrained=false "
            "and model.checkpoint_path=FILE (a local .pth, .npz or .safetensors) with --set, or go online "
            "(timm caches the weights after one download)"
        )
    registry = sys.modules.get("fgvc.methods.base")  # not imported yet: raised no UnknownMethodError
    if registry is not None and any(isinstance(e, registry.UnknownMethodError) for e in chain):
        return (
            f"{' '.join((str(err) or type(err).__name__).split())}; a method of your own is known once the module "
            f"that registers it is imported: fgvc --plugin MODULE <command> ... (or an installed fgvc.methods "
            f"entry point)"
        )
    if isinstance(err, KeyError):
        text = f"missing key {err}"
    elif isinstance(err, FileNotFoundError) and err.filename and err.errno is not None:  # raised by the OS
        from ..hints import similar_files

        text = f"file not found: {err.filename}{similar_files(err.filename)}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; an error prints ``fgvc: error: ...`` on one line and returns 1 (``--debug``,
    or ``FGVC_DEBUG=1``: the traceback instead)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _load_plugins(_plugin_names(argv))
    except Exception as err:
        if "--debug" in argv or os.environ.get("FGVC_DEBUG", "0") not in ("0", ""):
            raise
        print(f"fgvc: error: {describe_error(err)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug or os.environ.get("FGVC_DEBUG", "0") not in ("0", ""):
            raise
        print(f"fgvc: error: {describe_error(err)} (--debug shows the traceback)", file=sys.stderr)
        return 1


def _plugin_names(argv: Sequence[str]) -> list[str]:
    """The ``--plugin MODULE`` values among the options before the command (read before the parser is built)."""
    names, words = [], list(argv)
    while words and words[0].startswith("-"):
        word = words.pop(0)
        if word == "--plugin" and words:
            names.append(words.pop(0))
        elif word.startswith("--plugin="):
            names.append(word.partition("=")[2])
    return names


def _load_plugins(names: Sequence[str]) -> None:
    """The installed ``fgvc.methods`` entry points, then the ``--plugin`` modules, in order."""
    from ..methods.plugins import load_entry_points, load_plugin

    load_entry_points()
    for name in names:
        load_plugin(name)
