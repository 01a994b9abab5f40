"""Progress for people at a terminal and for log files (SLURM `.out`, `> run.log`).

At a terminal a command may draw a tqdm bar; off a terminal a bar's carriage returns fill the
file with redrawn lines, so there the commands print one plain line per log interval instead,
as mmsegmentation's `Iter [i/N]` lines. `--quiet` silences both (warnings, errors and results
still print).

The quiet switch lives in the environment (`UDA_ADAPT_QUIET=1`) rather than in a module
variable, so processes the command starts (DataLoader workers, torchrun ranks of a job started
with the variable) inherit it. Torch-free and tqdm-free: the runtime uses it too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

QUIET_VARIABLE = "UDA_ADAPT_QUIET"


def set_quiet(quiet: bool) -> None:
    """Switch progress output off (True) or back on for this process and those it starts."""
    if quiet:
        os.environ[QUIET_VARIABLE] = "1"
    else:
        os.environ.pop(QUIET_VARIABLE, None)


def is_quiet() -> bool:
    return os.environ.get(QUIET_VARIABLE, "") not in ("", "0")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # a closed or replaced stream
        return False


def bars_enabled(main: bool = True, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar: on the main process, at a terminal, not quiet."""
    return main and not is_quiet() and _is_terminal(stream if stream is not None else sys.stderr)


def lines_enabled(main: bool = True, stream: TextIO | None = None) -> bool:
    """Whether to print plain progress lines: on the main process, off a terminal, not quiet."""
    return main and not is_quiet() and not _is_terminal(stream if stream is not None else sys.stderr)


def tqdm_disable(main: bool = True) -> bool:
    """tqdm's `disable=`: True unless a bar suits stderr (tqdm's own `None` cannot see --quiet)."""
    return not bars_enabled(main)


def format_duration(seconds: float) -> str:
    """`1:02:03`, or `2 days, 1:02:03` (as mmseg's ETA); `?` when unknown."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {clock}" if days else clock


def iteration_line(description: str, done: int, total: int, values: Mapping[str, float], *,
                   images_per_second: float | None = None, seconds_per_iteration: float | None = None,
                   eta_seconds: float | None = None) -> str:
    """One log line: `self_train Iter [200/4000]  loss 0.4123  3.2 img/s  0.41 s/it  ETA 0:12:34`."""
    parts = [f"{description} Iter [{done}/{total}]"]
    parts += [f"{key} {value:.4f}" for key, value in values.items()]
    if images_per_second is not None:
        parts.append(f"{images_per_second:.1f} img/s")
    if seconds_per_iteration is not None:
        parts.append(f"{seconds_per_iteration:.3f} s/it")
    if eta_seconds is not None:
        parts.append(f"ETA {format_duration(eta_seconds)}")
    return "  ".join(parts)


def emit(line: str, stream: TextIO | None = None) -> None:
    """Print one progress line and flush it, so a log file shows it at once."""
    out = stream if stream is not None else sys.stderr
    out.write(line + "\n")
    out.flush()
