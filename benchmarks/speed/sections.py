"""The synthetic-generator and correlation-memory sections, and the OpenCV thread setting other sections share.

Training sections live in training.py, inference sections in inference.py. Each section takes the
plan and a scratch folder and returns plain data; run_all.py decides which run and renders them.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.speed.plan import CORRELATION_LIMIT_GB, ROOT, STARTING_ENVIRONMENT, Plan


@contextlib.contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread count for the block; it is process-wide, so the next section gets it back."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def synth_section(plan: Plan, work: Path) -> dict[str, Any]:
    from uda_adapt.adapt.data.synth import generate_scene
    from benchmarks.synth_throughput import SIZES, measure_domain

    with opencv_threads(1):  # one core: the figure a data-loader worker gets
        generate_scene(0, "real", (64, 128))  # warm imports and caches
        rows = [measure_domain(domain, size, plan.synth_repeats, plan.synth_images)
                for size in SIZES for domain in ("sim", "real")]
    return {"commands": [f"python benchmarks/synth_throughput.py --repeats {plan.synth_repeats} --images {plan.synth_images}"],
            "rows": rows}


# Runs correlation_memory.compare on each case given as JSON; prints the rows as JSON.
CORRELATION_HELPER = ("import json, sys; from benchmarks.correlation_memory import compare; "
                      "print(json.dumps([compare(*case) for case in json.loads(sys.argv[1])]))")


def correlation_section(plan: Plan, work: Path) -> dict[str, Any]:
    from benchmarks.correlation_memory import PASSES

    # Each case runs in a child that reads its own peak RSS (ru_maxrss). Linux carries the peak of
    # the process that started a child through exec, so children of this process (hundreds of MB
    # after other sections) would read its peak, not theirs: a small helper starts them instead,
    # as the standalone script does. Several processes per case, SDPA and naive alternating, and
    # the medians of their readings: one process's growth differs from the next by tens of MB.
    cases = [[h, w, pass_, plan.correlation_repeats, CORRELATION_LIMIT_GB]
             for h, w in plan.correlation_sizes for pass_ in PASSES]
    helper = subprocess.run([sys.executable, "-c", CORRELATION_HELPER,
                             json.dumps([case for case in cases for _ in range(plan.correlation_processes)])],
                            cwd=ROOT, env=STARTING_ENVIRONMENT, capture_output=True, text=True, check=True)
    runs = json.loads(helper.stdout.strip().splitlines()[-1])
    n = plan.correlation_processes
    rows = [median_case(runs[i : i + n]) for i in range(0, len(runs), n)]
    commands = [f"python benchmarks/correlation_memory.py --case {impl} {h} {w} {pass_} --repeats {plan.correlation_repeats}"
                f"  # x{plan.correlation_processes}"
                for h, w in plan.correlation_sizes for pass_ in PASSES for impl in ("sdpa", "naive")]
    return {"commands": commands, "rows": rows}


def median_case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several `correlation_memory.compare` rows of one case -> one row of medians (ratios of the medians)."""
    def medians(impl: str) -> dict[str, float] | None:
        readings = [run[impl] for run in runs if run[impl] is not None]
        if not readings:
            return None
        return {key: statistics.median(r[key] for r in readings) for key in ("peak_mb", "median_s")}

    sdpa, naive = medians("sdpa"), medians("naive")
    row = {**runs[0], "processes": len(runs), "sdpa": sdpa, "naive": naive, "runs": runs, "memory_ratio": None, "time_ratio": None}
    if naive is not None:
        row.update(memory_ratio=naive["peak_mb"] / max(sdpa["peak_mb"], 0.1), time_ratio=naive["median_s"] / sdpa["median_s"])
    return row
