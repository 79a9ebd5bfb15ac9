"""The manual stays whole: every command and option of the command line is documented in
docs/commands.md, and every relative link (file and #anchor) in README.md, CHANGELOG.md and
docs/ resolves."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from xasr.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_and_option_is_in_docs_commands(name):
    doc = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert f"### `xasr {name}`" in doc, f"docs/commands.md has no section for xasr {name}"
    for action in subcommands()[name]._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        for option in action.option_strings:
            assert re.search(re.escape(option) + r"(?![\w-])", doc), (
                f"xasr {name} {option} is not documented in docs/commands.md"
            )


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.MULTILINE):
        s = slug(heading)
        found.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: no heading for #{anchor} in {dest.name}"
