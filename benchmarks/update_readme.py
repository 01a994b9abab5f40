"""Copy the committed ablation tables into the README, so the README never restates a number by hand.

The README holds the block between `<!-- ablation:begin -->` and `<!-- ablation:end -->`; it is
the head of benchmarks/results/ablation.md (everything before the per-class table), which
`benchmarks/ablation.py` writes. `tests/adapt/test_readme_defaults.py` checks they agree.

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ablation.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


def ablation_block(results: Path = RESULTS) -> str:
    """The report's summary tables: everything before its per-class table."""
    text = results.read_text()
    return text.split("\nPer-class IoU", 1)[0].strip() + "\n"


def readme_block(readme: Path = README) -> str:
    text = readme.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"


def main() -> int:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"{README} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{ablation_block()}{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
