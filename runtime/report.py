"""Printing run and benchmark reports: an aligned table for people, JSON for tools."""

from __future__ import annotations

import json
import os
from typing import Any

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.runtime.pipeline import PipelineReport


def format_run_report(report: PipelineReport) -> str:
    lat = report.latency_ms
    lines = [
        f"source   {report.source}",
        f"backend  {report.backend}",
        f"sink     {report.sink}",
        f"frames   {report.frames} written, {report.captured} captured, {report.dropped} dropped, "
        f"{report.corrupt} corrupt, {report.reconnects} reconnects" + ("  (interrupted)" if report.interrupted else ""),
        f"speed    {report.fps:.2f} FPS over {report.seconds:.1f} s",
        f"latency  p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  p99 {lat['p99']:.1f} ms  (capture -> sink)",
        "stage    " + "  ".join(f"{name} {ms:.1f}" for name, ms in report.stages_ms.items()) + "  (mean ms per frame)",
    ]
    return "\n".join(lines)


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
