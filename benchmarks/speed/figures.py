"""What a section is and what it hands back: a median with its count, "not measured", or a one-line failure.

Every section is measured and rendered the same way, so run_all.py can run any of them, keep one
failure from costing the others their figures, and render them all into one report.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.speed.plan import Plan


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report: `measure` returns plain data (JSON-ready), `render` turns it into markdown lines."""

    title: str
    measure: Callable[[Plan, Path], dict[str, Any]]
    render: Callable[[dict], list[str]]


class NotMeasured(Exception):
    """This machine cannot run the section (no GPU): reported as "not measured", not as a failure."""


def median_figure(values: list[float]) -> dict[str, Any]:
    """The median of `values` with how many there were, as every figure is reported."""
    if not values:
        raise ValueError("no values to take the median of")
    return {"median": statistics.median(values), "n": len(values), "values": list(values)}


def one_line(exc: BaseException) -> str:
    """The exception as one line: its type and first line, and a failed command's last stderr line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        text += f" ({stderr.strip().splitlines()[-1].strip()})"
    return text
