"""The README is the front door, docs/ the rooms behind it: links resolve, the commands shown exist."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def split_fences(text: str) -> tuple[list[str], list[list[str]]]:
    """The prose lines (fenced blocks blanked) and the fenced blocks, each as its lines."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but hyphens dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and underscores, as GitHub does
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file, duplicates numbered -1, -2, ... as GitHub does."""
    prose, _ = split_fences(path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    """The link and image targets in a markdown file's prose (not in code blocks or inline code)."""
    prose, _ = split_fences(path.read_text())
    found = []
    for paragraph in "\n".join(prose).split("\n\n"):
        # a code span (it may run over lines) holds no link, but it may be a link's text: keep a stand-in
        found += LINK.findall(CODE_SPAN.sub("code", paragraph))
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    """The relative links of a file that name a missing file or a missing heading."""
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {shown(dest)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {shown(dest)}")
    return broken


def shown_commands(path: Path, program: str) -> list[list[str]]:
    """The lines starting with ``program`` in a file's code blocks (continuations joined, comments cut)."""
    _, blocks = split_fences(path.read_text())
    commands = []
    for block in blocks:
        joined, pending = [], ""
        for line in block:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        for line in joined:
            if line.strip().startswith(program + " ") or line.strip() == program:
                commands.append(shlex.split(line, comments=True))
    return commands


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def subcommands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_problems(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What in one shown ``fgvc ...`` line the parser does not know: a subcommand, or a flag of it."""
    problems = []
    top_options = options_of(parser)
    words = words[1:]
    while words and words[0].startswith("-"):  # options before the subcommand: fgvc --version
        flag = words.pop(0).split("=", 1)[0]
        if flag not in top_options:
            problems.append(f"fgvc has no option {flag}")
    current, path = parser, ["fgvc"]
    while words and subcommands_of(current):
        name = words.pop(0)
        choices = subcommands_of(current)
        if name not in choices:
            return problems + [f"{' '.join(path)} has no command {name!r} (it has {', '.join(choices)})"]
        current = choices[name]
        path.append(name)
    known = options_of(current) | top_options
    for word in words:
        if word.startswith("--") and word.split("=", 1)[0] not in known:
            problems.append(f"{' '.join(path)} has no option {word.split('=', 1)[0]}")
    return problems


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-/$() ]+?)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_an_existing_file_and_heading(page):
    """Each relative link and image in README.md and docs/*.md names a file, and its #anchor a heading."""
    assert broken_links(page) == []


def test_the_readme_is_at_most_300_lines():
    """README.md is the front door: at most 300 lines, the rest lives in docs/."""
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def test_every_fgvc_command_the_readme_shows_exists_with_its_flags():
    """Each `fgvc ...` line in the README's code blocks names a command, each --flag one of its options."""
    import fgvc.cli

    parser = fgvc.cli.build_parser()
    commands = shown_commands(README, "fgvc")
    assert commands, "the README shows no fgvc command"
    problems = [f"{' '.join(words)}: {p}" for words in commands for p in command_problems(words, parser)]
    assert problems == []


def test_every_command_the_readme_shows_parses_its_help():
    """`fgvc <command> --help` parses for every command the README shows (help printed, nothing run)."""
    import fgvc.cli

    parser = fgvc.cli.build_parser()
    for words in shown_commands(README, "fgvc"):
        names = [w for w in words[1:] if not w.startswith("-")][:2]
        argv, current = [], parser
        for name in names:
            if name not in subcommands_of(current):
                break
            argv.append(name)
            current = subcommands_of(current)[name]
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*argv, "--help"])
        assert done.value.code == 0, argv


def test_every_make_target_the_readme_shows_is_in_the_makefile():
    """Each `make ...` line in the README's code blocks names targets the Makefile has."""
    targets = make_targets()
    lines = shown_commands(README, "make")
    assert lines, "the README shows no make command"
    named = [w for words in lines for w in words[1:] if "=" not in w and not w.startswith("-")]
    missing = [w for w in named if w not in targets]
    assert missing == []


def test_the_link_checker_follows_githubs_anchor_rule(tmp_path):
    """Headings become GitHub's anchors (punctuation dropped, duplicates numbered); bad links are caught."""
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n")
    page.write_text(
        "# `fgvc demo`: every method (CPU)\n## Cost\n## Cost\n```\n# not a heading\n```\n"
        "[a](#fgvc-demo-every-method-cpu) [b](#cost-1) [c](other.md#other) ![d](other.md)\n"
        "[e](#not-a-heading) [f](missing.md) [g](other.md#nothing)\n"
        "`[h](ignored.md)` [i](https://example.org)\n"
    )
    assert anchors(page) == {"fgvc-demo-every-method-cpu", "cost", "cost-1"}
    bad = broken_links(page)
    assert [b.split(":")[0] for b in bad] == ["#not-a-heading", "missing.md", "other.md#nothing"]
