"""The README and docs/ hold together: every relative link resolves, and the README's test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """Link targets that are neither URLs nor in-page anchors, with any #fragment dropped."""
    targets = [m.group(1) for m in LINK.finditer(page.read_text())]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_every_relative_link_resolves():
    assert len(PAGES) > 5 and all(page.exists() for page in PAGES)
    broken = [f"{page.relative_to(REPO)} -> {target}" for page in PAGES for target in relative_links(page)
              if not (page.parent / target).exists()]
    assert not broken, broken


def test_readme_links_only_to_docs_and_top_level_files():
    """The package index shows the README alone: its links stay few and point at pages a clone has."""
    links = relative_links(REPO / "README.md")
    assert links
    odd = [t for t in links if "/" in t and not t.startswith(("docs/", "samples/"))]
    assert not odd, odd


def test_readme_test_command_is_the_one_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci_line = next(line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest -q" in line)
    command = ci_line.split("rm -rf .venv", 1)[-1].strip()
    assert command.startswith("python3 -m venv .venv")
    assert f"```bash\n{command}\n```" in readme, command


def test_the_readme_stays_a_newcomers_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for heading in ("## Install", "## The main job", "## Your camera in five commands", "## Commands", "## Citation"):
        assert heading in readme, heading
    assert "uda-adapt demo --out runs/demo" in readme
