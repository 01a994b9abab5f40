"""Copy the committed ablation tables into docs/results.md, so the documentation never restates a number by hand.

docs/results.md holds one block per benchmark, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
the head of benchmarks/results/NAME.md (everything before the per-class table), which
`benchmarks/ablation.py --report-name NAME` writes. NAME is `ablation` (the embedded benchmark, by
day), `ablation_night` (the night benchmark) and `ablation_explore` (the exploratory rows, by day). `tests/adapt/test_readme_defaults.py` checks they agree.

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"   # where the ablation blocks live
BLOCKS = ("ablation", "ablation_night", "ablation_explore")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def ablation_block(name: str = "ablation", results: Path = RESULTS) -> str:
    """The report's summary tables: everything before its per-class table."""
    text = (results / f"{name}.md").read_text()
    return text.split("\nPer-class IoU", 1)[0].strip() + "\n"


def readme_block(name: str = "ablation", page: Path = PAGE) -> str:
    begin, end = markers(name)
    text = page.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{page} has no {begin} ... {end} block")
    return text.split(begin, 1)[1].split(end, 1)[0].strip() + "\n"


def replace_block(text: str, name: str, block: str) -> str:
    begin, end = markers(name)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def main() -> int:
    text = PAGE.read_text()
    for name in BLOCKS:
        begin, end = markers(name)
        if begin not in text or end not in text:
            print(f"{PAGE} has no {begin} ... {end} block", file=sys.stderr)
            return 1
        text = replace_block(text, name, ablation_block(name))
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
