"""One device checklist: everything in this project that waits for an NVIDIA GPU, in 8 minutes or less.

    bash benchmarks/device_check.sh OUT_DIR [--skip-gpu] [--budget 480] [--work DIR]

Each step is one or more `uda-adapt` / `pytest` command lines, run in a child process with its
own time limit; a step that fails (exit status, time limit, an expected line missing) is
recorded with the end of its output and the rest still run. Steps that need a GPU are skipped,
with the reason, where `nvidia-smi` finds none (or with --skip-gpu); a step that would start
after the budget is skipped as well. Writes OUT_DIR/device_check.json and device_check.md.

Steps, in order: synthetic data and a clip (CPU); `pytest -m "gpu or tensorrt"`; AMP and
`compile` training steps (the AMP run's checkpoint is exported); fp16 and int8 export bundles;
engine builds at fp32, fp16 and int8 (`uda-adapt build`, each checked against the ONNX);
`uda-adapt check`; `run BUNDLE` on the clip; `run BUNDLE` on a bundle without an engine (the
first-run build), then again (no build); TensorRT vs ONNX Runtime (CUDA provider) vs PyTorch model latency; the
pipeline/model-only throughput ratio (`uda-adapt bench`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0                  # the checklist's promise: 8 minutes on one GPU machine
SIZE = (128, 256)                 # export and benchmark size: small, so builds take seconds
TRAIN_ITERATIONS = 30
LATENCY_ITERS = 200
OUTPUT_TAIL = 1500                # characters of a failed step's output kept in the report


@dataclasses.dataclass
class Step:
    name: str
    what: str                                          # one line for the report
    commands: list[list[str]]
    gpu: bool = True
    timeout_s: float = 120.0
    expect: str | None = None                          # text the output must contain
    forbid: str | None = None                          # text it must not contain
    metrics: Callable[[], dict[str, Any]] | None = None  # read after the commands passed


def uda(*args: str) -> list[str]:
    """`uda-adapt ARGS` through this interpreter, so the checkout under test is what runs."""
    return [sys.executable, "-m", "uda_adapt", *args]


def plan(work: Path, out: Path) -> list[Step]:
    """The checklist for a work directory; commands only, nothing runs here."""
    data, ckpt = work / "data", work / "amp" / "source" / "last.pt"
    size = f"{SIZE[0]}x{SIZE[1]}"
    train = ["train", "--stage", "source", "--set", f"data.source.root={data / 'source'}",
             "--set", f"data.target.root={data / 'target'}", "--set", f"data.crop_size=[{SIZE[0]}, {SIZE[1]}]",
             "--set", "data.batch_size=4", "--set", "data.val_limit=2", "--set", "device=cuda",
             "--set", "model.name=small", "--set", f"source.iterations={TRAIN_ITERATIONS}",
             "--set", "logging.log_every=10", "--set", "logging.checkpoint_every=100000",
             "--set", "logging.num_overlays=0", "--set", 'amp="auto"']
    fp16, int8, first = work / "fp16", work / "int8", work / "first_run"
    return [
        Step("data", "synthetic source/target data (as `uda-adapt data synth`) and a 40-frame clip (CPU)",
             [[sys.executable, str(Path(__file__)), "data", str(work)]], gpu=False, timeout_s=60),
        Step("pytest_gpu", 'pytest -m "gpu or tensorrt": every test that needs a GPU or TensorRT',
             [[sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider", str(ROOT / "tests")]],
             timeout_s=240),
        Step("train_amp", f"{TRAIN_ITERATIONS} source steps on CUDA with AMP (small model, {size})",
             [uda(*train[:1], "--out", str(work / "amp"), *train[1:])], timeout_s=90,
             metrics=lambda: train_metrics(work / "amp")),
        Step("train_compile", f"the same with torch.compile",
             [uda(*train[:1], "--out", str(work / "compile"), *train[1:], "--set", "compile=true")], timeout_s=150,
             metrics=lambda: train_metrics(work / "compile")),
        Step("export_fp16", "an fp16 bundle from the AMP run's checkpoint (parity gate on the target images), and a copy",
             [uda("export", str(ckpt), "--out", str(fp16), "--size", size, "--precision", "fp16", "--data",
                  str(data / "target"), "--force"),
              [sys.executable, str(Path(__file__)), "copy", str(fp16), str(first)]],
             timeout_s=90),
        # A model trained for a few steps may miss the int8 gate: the bundle is kept, and build_int8 still runs.
        Step("export_int8", "an int8 (Q/DQ) bundle, calibrated on 8 target images",
             [uda("export", str(ckpt), "--out", str(int8), "--size", size, "--precision", "int8", "--calib-data",
                  str(data / "target" / "train" / "images"), "--calib-num", "8", "--data", str(data / "target"), "--force")],
             timeout_s=90),
        Step("build_fp32", "uda-adapt build --precision fp32, then its check against the ONNX",
             [uda("build", str(fp16), "--precision", "fp32")], timeout_s=120),
        Step("build_fp16", "uda-adapt build (the fp16 variant, strongly typed), then its check",
             [uda("build", str(fp16), "--precision", "fp16")], timeout_s=120),
        Step("build_int8", "uda-adapt build (the Q/DQ int8 variant, strongly typed), then its check",
             [uda("build", str(int8))], timeout_s=120),
        Step("check", "uda-adapt check: the bundle's engine for this GPU against the ONNX",
             [uda("check", str(fp16))], timeout_s=60),
        Step("run_bundle", "uda-adapt run BUNDLE on the clip: the engine, to an mp4",
             [uda("run", str(fp16), str(work / "clip.mp4"), str(work / "overlay.mp4"), "--headless", "--json",
                  str(out / "run.json"))], timeout_s=60, expect="backend: tensorrt",
             metrics=lambda: run_metrics(out / "run.json")),
        Step("first_run_build", "uda-adapt run on a bundle with no engine for this GPU: builds one and keeps it",
             [uda("run", str(first), str(work / "clip.mp4"), "null://", "--headless", "--max-frames", "10")],
             timeout_s=150, expect="building one now"),
        Step("second_run_reuses", "the same run again: starts from the kept engine, builds nothing",
             [uda("run", str(first), str(work / "clip.mp4"), "null://", "--headless", "--max-frames", "10")],
             timeout_s=60, expect="backend: tensorrt", forbid="building one now"),
        Step("latency", "model-only latency: TensorRT fp32/fp16 vs ONNX Runtime CUDA vs PyTorch (same input)",
             [[sys.executable, str(Path(__file__)), "latency", str(work), str(out / "latency.json")]], timeout_s=120,
             metrics=lambda: json.loads((out / "latency.json").read_text())),
        Step("pipeline_ratio", "uda-adapt bench BUNDLE: pipeline throughput over model-only throughput",
             [uda("bench", str(fp16), "--warmup", "20", "--iters", "200", "--json", str(out / "bench.json"))],
             timeout_s=90, metrics=lambda: bench_metrics(out / "bench.json")),
    ]


# --- running -------------------------------------------------------------------------------------

def run_steps(steps: list[Step], *, budget_s: float, gpu: bool, gpu_reason: str, log: Callable[[str], None],
              env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run every step in turn, each isolated: a failure is recorded and the next step still runs."""
    started = time.monotonic()
    results = []
    for step in steps:
        record: dict[str, Any] = {"name": step.name, "what": step.what, "gpu": step.gpu,
                                  "commands": [" ".join(c) for c in step.commands]}
        left = budget_s - (time.monotonic() - started)
        if step.gpu and not gpu:
            record.update(status="skipped", reason=gpu_reason)
        elif left < min(step.timeout_s, 10.0):
            record.update(status="skipped", reason=f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s left")
        else:
            record.update(_run_one(step, min(step.timeout_s, left), env))
        log(f"{step.name}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))
        results.append(record)
    return results


def _run_one(step: Step, timeout_s: float, env: dict[str, str] | None) -> dict[str, Any]:
    t0 = time.monotonic()
    output = []
    for command in step.commands:
        left = timeout_s - (time.monotonic() - t0)
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(left, 1.0))
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return _failed(t0, f"over its {timeout_s:.0f} s limit", [*output, str(text)])
        except OSError as exc:
            return _failed(t0, f"cannot start {command[0]}: {exc}", output)
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            return _failed(t0, f"exit status {done.returncode}: {' '.join(command[:6])} ...", output)
    text = "".join(output)
    if step.expect is not None and step.expect not in text:
        return _failed(t0, f"the output never says {step.expect!r}", output)
    if step.forbid is not None and step.forbid in text:
        return _failed(t0, f"the output says {step.forbid!r}", output)
    result: dict[str, Any] = {"status": "passed", "seconds": round(time.monotonic() - t0, 1)}
    if step.metrics is not None:
        try:
            result["metrics"] = step.metrics()
        except Exception as exc:  # noqa: BLE001  (a report of what broke, not a crash of the checklist)
            result["metrics_error"] = f"{type(exc).__name__}: {exc}"
    return result


def _failed(t0: float, reason: str, output: list[str]) -> dict[str, Any]:
    return {"status": "failed", "seconds": round(time.monotonic() - t0, 1), "reason": reason,
            "output_tail": "".join(output)[-OUTPUT_TAIL:]}


def gpu_here() -> tuple[bool, str]:
    """(whether an NVIDIA GPU answers, why not)."""
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA GPU here (nvidia-smi not found)"
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0 or "GPU" not in done.stdout:
        return False, f"nvidia-smi finds no GPU ({(done.stderr or done.stdout).strip()[:200]})"
    return True, done.stdout.strip()


# --- what the steps measure ----------------------------------------------------------------------

def train_metrics(run: Path) -> dict[str, Any]:
    rates = [r["images_per_second"] for r in _jsonl(run / "source" / "metrics.jsonl") if "images_per_second" in r]
    return {"images_per_second_median": statistics.median(rates[1:] or rates) if rates else None, "records": len(rates)}


def run_metrics(report: Path) -> dict[str, Any]:
    data = json.loads(report.read_text())
    return {key: data.get(key) for key in ("backend", "frames", "fps", "dropped", "corrupt") if key in data}


def bench_metrics(report: Path) -> dict[str, Any]:
    data = json.loads(report.read_text())
    return {"backend": data["backend"], "model_only_qps": data["model_only"]["throughput_qps"],
            "pipeline_qps": data["pipeline"]["throughput_qps"], "pipeline_over_model": data["pipeline_over_model"]}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def measure_latency(work: Path, iters: int = LATENCY_ITERS) -> dict[str, Any]:
    """Median model-only latency of each runner on one input, alternating runner by runner, round by round."""
    import numpy as np

    from uda_adapt.common.manifest import read_manifest
    from uda_adapt.runtime.backends.onnxruntime_backend import CUDA_EP, OnnxRuntimeBackend
    from uda_adapt.runtime.backends.tensorrt_backend import TensorRTBackend
    from uda_adapt.runtime.backends.torch_backend import TorchBackend

    bundle = work / "fp16"
    engines = {e.precision: bundle / e.file for e in read_manifest(bundle / "model.json").engines}
    runners: dict[str, Any] = {}
    for precision in ("fp32", "fp16"):
        if precision in engines:
            runners[f"tensorrt_{precision}"] = TensorRTBackend(engines[precision])
    runners["onnxruntime_cuda_fp32"] = OnnxRuntimeBackend(bundle / "model.onnx", providers=[CUDA_EP])
    runners["torch_fp32"] = TorchBackend(work / "amp" / "source" / "last.pt", input_size=SIZE)
    x = np.random.default_rng(0).standard_normal((1, 3, *SIZE), dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(10):                                    # warm-up: lazy initialisation, autotuning
        for runner in runners.values():
            runner.infer(x)
    for _ in range(iters):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.infer(x)                                # each returns the mask on the host: synchronised
            times[name].append(time.perf_counter() - t0)
    for runner in runners.values():
        runner.close()
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {"size": list(SIZE), "iters": iters, "median_ms": medians,
                              "providers": {"onnxruntime_cuda_fp32": runners["onnxruntime_cuda_fp32"].providers}}
    if "tensorrt_fp32" in medians:
        result["tensorrt_fp32_speedup_over_onnxruntime_cuda"] = medians["onnxruntime_cuda_fp32"] / medians["tensorrt_fp32"]
        result["tensorrt_fp32_speedup_over_torch"] = medians["torch_fp32"] / medians["tensorrt_fp32"]
    return result


# --- the report ----------------------------------------------------------------------------------

def write_reports(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "device_check.json", out / "device_check.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path


def render_markdown(result: dict[str, Any]) -> str:
    counts = {s: sum(1 for r in result["steps"] if r["status"] == s) for s in ("passed", "failed", "skipped")}
    lines = [
        "# Device check", "",
        f"{result['started']} on `{result['gpu']}`; {result['seconds']:.0f} s of a {result['budget_s']:.0f} s budget; "
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped.", "",
        "| step | status | s | what, or why not |", "|---|---|---|---|",
    ]
    for r in result["steps"]:
        detail = r["what"] if r["status"] == "passed" else f"{r['what']}: {r.get('reason', '')}"
        lines.append(f"| {r['name']} | {r['status']} | {r.get('seconds', '')} | {detail.replace('|', '/')} |")
    measured = [r for r in result["steps"] if r.get("metrics")]
    if measured:
        lines += ["", "## Measured", ""]
        for r in measured:
            lines.append(f"- **{r['name']}**: " + json.dumps(r["metrics"], sort_keys=True))
    failed = [r for r in result["steps"] if r["status"] == "failed"]
    for r in failed:
        lines += ["", f"## {r['name']} failed: {r['reason']}", "", "```", r.get("output_tail", "").strip(), "```"]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("all", help="run the checklist (what device_check.sh does)")
    run.add_argument("out", type=Path, help="folder for device_check.json and device_check.md")
    run.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temporary one, removed]")
    run.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole checklist")
    run.add_argument("--skip-gpu", action="store_true", help="skip every step that needs a GPU")
    data = sub.add_parser("data", help="write the synthetic data and the clip into WORK")
    data.add_argument("work", type=Path)
    latency = sub.add_parser("latency", help="the latency step")
    latency.add_argument("work", type=Path)
    latency.add_argument("json", type=Path)
    copy = sub.add_parser("copy", help="copy a bundle")
    copy.add_argument("source", type=Path)
    copy.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "data":
        write_data(args.work)
    elif args.command == "latency":
        args.json.write_text(json.dumps(measure_latency(args.work), indent=2) + "\n")
    elif args.command == "copy":
        shutil.rmtree(args.dest, ignore_errors=True)
        shutil.copytree(args.source, args.dest)
    elif args.command == "all":
        return run_checklist(args.out, args.work, args.budget, args.skip_gpu)
    else:
        parser.print_help()
        return 2
    return 0


def run_checklist(out: Path, work: Path | None, budget_s: float, skip_gpu: bool) -> int:
    gpu, gpu_text = (False, "skipped: --skip-gpu") if skip_gpu else gpu_here()
    log = lambda message: print(f"device_check: {message}", file=sys.stderr, flush=True)  # noqa: E731
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="device_check.")) if work is None else work
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    try:
        steps = run_steps(plan(work, out.resolve()), budget_s=budget_s, gpu=gpu, gpu_reason=gpu_text, log=log, env=env)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    result = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "gpu": gpu_text.splitlines()[0] if gpu else gpu_text, "budget_s": budget_s,
              "seconds": round(time.monotonic() - t0, 1), "python": sys.version.split()[0], "steps": steps}
    json_path, md_path = write_reports(out, result)
    log(f"wrote {json_path} and {md_path}")
    return 1 if any(r["status"] == "failed" for r in steps) else 0


def write_data(work: Path) -> None:
    """WORK/data/{source,target}/{train,val} from the synthetic generator (8 and 2 images), and WORK/clip.mp4."""
    from uda_adapt.adapt.data.synth import write_split

    for name, domain in (("source", "sim"), ("target", "real")):
        for split, num in (("train", 8), ("val", 2)):
            write_split(work / "data" / name, domain, split, num, SIZE, 0, progress=False)
    write_clip(work / "clip.mp4")


def write_clip(path: Path, frames: int = 40) -> None:
    """A street-like BGR clip at twice the benchmark size, so `run` resizes."""
    import cv2
    import numpy as np

    h, w = 2 * SIZE[0], 2 * SIZE[1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (w, h))
    rng = np.random.default_rng(0)
    for index in range(frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[: h // 3] = (180, 130, 70)
        frame[h // 3:] = (90, 90, 90)
        frame[2 * h // 3:] = (128, 64, 128)
        x = (index * 7) % (w - 40)
        frame[h // 3: h // 3 + 30, x: x + 40] = (0, 0, 200)
        writer.write(np.clip(frame + rng.integers(-10, 11, frame.shape), 0, 255).astype(np.uint8))
    writer.release()


if __name__ == "__main__":
    sys.exit(main())
