"""Every speed figure of the project in one command: writes benchmarks/RESULTS.md and results/run_all.json.

    python benchmarks/run_all.py                              # full: the figures to quote (~5 min on 2 cores)
    python benchmarks/run_all.py --quick                      # fewer repeats, smaller sizes (~2-4 min)
    python benchmarks/run_all.py --only train,export --out /tmp/R.md --json /tmp/r.json

Sections (names for --only): synth, train, correlation, export, int8, pipeline, latest, gpu.
Each runs on its own: one that fails is reported as "failed: <reason>" and the rest still run;
the GPU section says "not measured" where torch sees no CUDA device. Comparisons measure both
sides in the same run, alternating call by call or round by round, so drift in the machine's
speed hits both. Every number in RESULTS.md comes from this run; nothing is typed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.speed.figures import NotMeasured, Section, one_line  # noqa: E402
from benchmarks.speed.inference import export_section, int8_section, latest_section, pipeline_section  # noqa: E402
from benchmarks.speed.machine import machine_info, versions  # noqa: E402
from benchmarks.speed.plan import FULL, QUICK, ROOT, Plan  # noqa: E402
from benchmarks.speed.report import (  # noqa: E402
    render_correlation, render_export, render_gpu, render_int8, render_latest, render_markdown, render_pipeline,
    render_synth, render_train,
)
from benchmarks.speed.sections import correlation_section, synth_section  # noqa: E402
from benchmarks.speed.training import gpu_section, train_section  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "run_all.json"
WORK = "$WORK"                        # how commands name the scratch directory (removed after the run)

# The report's sections, in report order; the keys are the names --only takes.
SECTIONS: dict[str, Section] = {
    "synth": Section("Synthetic generator throughput", synth_section, render_synth),
    "train": Section("Training throughput per stage (CPU, small model)", train_section, render_train),
    "correlation": Section("Correlation module: SDPA vs naive attention", correlation_section, render_correlation),
    "export": Section("ONNX Runtime vs PyTorch CPU inference latency", export_section, render_export),
    "int8": Section("int8 vs fp32 ONNX Runtime latency, with parity", int8_section, render_int8),
    "pipeline": Section("Runtime pipeline vs model-only throughput", pipeline_section, render_pipeline),
    "latest": Section("Latest-frame mode: end-to-end latency vs model latency", latest_section, render_latest),
    "gpu": Section("GPU: AMP and DDP scaling (DeepLab-V2)", gpu_section, render_gpu),
}


def parse_only(text: str) -> list[str]:
    """`train,export` -> the named sections in report order; an unknown name lists the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section {', '.join(unknown) or '(none given)'}; valid: {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def run_sections(names: list[str], plan: Plan, mode: str) -> dict[str, dict[str, Any]]:
    """Each named section in a scratch folder of its own; a failure is recorded and the next one runs."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="run_all-") as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            print(f"run_all: {name} ...", file=sys.stderr, flush=True)
            # Another job on the machine slows every figure: the load says how quiet it was.
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            start = time.perf_counter()
            try:
                data = SECTIONS[name].measure(plan, work)
                status = {"status": "ok", **data}
            except NotMeasured as exc:
                status = {"status": "not measured", "reason": str(exc)}
            except Exception as exc:  # one section's failure must not cost the others their figures
                traceback.print_exc()
                status = {"status": "failed", "reason": one_line(exc)}
            seconds = time.perf_counter() - start
            status = renamed(status, tmp, WORK)
            status["rerun"] = f"python benchmarks/run_all.py --only {name}{' --quick' if mode == 'quick' else ''}"
            results[name] = {**status, "seconds": seconds, "load_average_at_start": load}
            print(f"run_all: {name} {status['status']} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return results


def renamed(value: Any, old: str, new: str) -> Any:
    """`value` with `old` replaced by `new` in every string: the scratch folder is gone once the run ends."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [renamed(v, old, new) for v in value]
    return value


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def display_path(path: Path) -> str:
    """`path` relative to the repository when it is inside it (the committed report names no home folders)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=parse_only, default=list(SECTIONS), metavar="A,B",
                        help=f"comma-separated sections [default: all]: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (under 5 minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE.md", help="report [default: benchmarks/RESULTS.md]")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE.json",
                        help="raw figures [default: benchmarks/results/run_all.json]")
    args = parser.parse_args(argv)
    from uda_adapt.common.atomic import atomic_write_text

    argv = sys.argv[1:] if argv is None else argv
    mode = "quick" if args.quick else "full"
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, Any] = {"command": shlex.join(["python", "benchmarks/run_all.py", *argv]), "mode": mode,
                               "started": started.strftime("%Y-%m-%d %H:%M UTC"), "plan": dataclasses.asdict(QUICK if args.quick else FULL),
                               "machine": machine_info(), "versions": versions(), "json": display_path(args.json)}
    begin = time.perf_counter()
    results["sections"] = run_sections(args.only, QUICK if args.quick else FULL, mode)
    results["seconds"] = time.perf_counter() - begin
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(finite(results), indent=2) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, render_markdown(results, SECTIONS))
    print(f"wrote {args.out} and {args.json} in {results['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
