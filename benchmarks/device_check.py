"""The device check: what in this project waits for an NVIDIA GPU, checked in 8 minutes, or said to be unchecked.

    bash benchmarks/device_check.sh OUT_DIR [--clip REAL.mp4] [--allow-skip PATTERN ...] [--budget 480] [--work DIR]

A preflight first states what this machine has (CUDA, TensorRT, a GPU ONNX Runtime,
GStreamer in OpenCV, a Jetson, a real-camera clip); each step names what it needs, and a
step whose needs are missing is reported NOT COVERED, with the missing thing, never as
passed. Steps run in child processes, each with its own time limit, in order of value per
second: on a TensorRT machine the engine steps first, then training (AMP vs fp32, compile, a
1-GPU torchrun, SIGKILL-resume on CUDA), the Jetson-only paths, and pytest last (`-rs`: each
skipped test is listed and counts as a failure). Numbers carry thresholds (`THRESHOLDS`).

Exit status 0 only when no step failed and everything not covered (steps, skipped tests) is
named by an --allow-skip pattern (fnmatch, e.g. `--allow-skip 'jetson_*'`); a TensorRT or GPU
test skipped on a machine that has TensorRT or a GPU fails whatever the patterns say.
Writes OUT_DIR/device_check.json and device_check.md. A Jetson or any TensorRT machine
follows benchmarks/device_check_jetson.md as well, for what a script cannot judge.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import json
import os
import re
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
TASKS = Path(__file__).resolve().with_name("device_check_tasks.py")
BUDGET_S = 480.0                  # the promise: 8 minutes of a 10-minute loan of one GPU machine
SIZE = (128, 256)                 # export and benchmark size (device_check_tasks.SIZE)
TRAIN_ITERATIONS = 30
OUTPUT_TAIL = 1500                # characters of a failed step's output kept in the report

# What a step may need, as the preflight words it.
NEEDS: dict[str, str] = {
    "gpu": "an NVIDIA GPU this Python drives (cuda-python or a CUDA torch)",
    "cuda": "a CUDA torch (training)",
    "multi_gpu": "2 or more GPUs",
    "tensorrt": "TensorRT (import tensorrt)",
    "gstreamer": "OpenCV built with GStreamer",
    "jetson": "a Jetson (/proc/device-tree/model)",
    "real_clip": "a real-camera clip (--clip FILE)",
    "idle": "an idle machine (1-minute load average below a quarter of the cores)",
}
# The numbers the steps must reach (higher is better; the ratio of two medians, or a fraction).
THRESHOLDS: dict[str, float] = {
    "tensorrt_fp16_over_fp32": 1.0,          # TensorRT fp16 faster than fp32
    "tensorrt_fp32_over_torch": 1.0,         # TensorRT fp32 faster than PyTorch fp32
    "tensorrt_int8_over_fp16": 1.0,          # int8 faster than fp16: else int8 costs accuracy for nothing
    "amp_speedup": 1.5,                      # an AMP training step >= 1.5x an fp32 step
    # Every tensor of the resumed run equals the unbroken run's, or is no further from it than a second
    # unbroken run is (CUDA's own nondeterminism).
    "resume_identical_fraction": 1.0,
    "run_over_bare_onnxruntime": 0.95,       # uda-adapt run over a video vs a bare ONNX Runtime loop (CPU)
}


@dataclasses.dataclass
class Step:
    name: str
    what: str                                          # one line for the report
    commands: list[list[str]]
    needs: tuple[str, ...] = ("cuda",)
    timeout_s: float = 120.0
    expect: str | None = None                          # text the output must contain
    forbid: str | None = None                          # text it must not contain
    metrics: Callable[[], dict[str, Any]] | None = None  # read after the commands passed
    checks: Callable[[dict[str, Any]], list[str]] | None = None  # metrics -> the thresholds missed
    pytest: bool = False                               # parse `-rs` lines: skipped tests


def uda(*args: str) -> list[str]:
    """`uda-adapt ARGS` through this interpreter, so the checkout under test is what runs."""
    return [sys.executable, "-m", "uda_adapt", *args]


def task(*args: str) -> list[str]:
    return [sys.executable, str(TASKS), *args]


# --- preflight -----------------------------------------------------------------------------------

def preflight(clip: Path | None) -> dict[str, dict[str, Any]]:
    """What this machine has, each with the detail that shows it (or why not)."""
    found: dict[str, dict[str, Any]] = {}
    gpus, gpu_text = _nvidia_gpus()
    # A Jetson may have no nvidia-smi and a CPU-only torch: cuda-python still drives its GPU.
    gpu, gpu_detail = _probe("from uda_adapt.common.cuda import open_cuda; c = open_cuda(0); "
                             "print(c.name(), 'compute', c.compute_capability()); c.close()")
    found["gpu"] = {"present": gpu, "detail": gpu_detail if gpu else f"{gpu_text}; {gpu_detail}"}
    cuda, cuda_text = _probe("import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; "
                             "print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, ' + torch.cuda.get_device_name(0))")
    found["cuda"] = {"present": cuda, "detail": cuda_text}
    found["multi_gpu"] = {"present": gpus > 1 and cuda, "detail": f"{gpus} GPU(s) listed by nvidia-smi"}
    trt, trt_text = _probe("import tensorrt; print('TensorRT', tensorrt.__version__)")
    found["tensorrt"] = {"present": trt, "detail": trt_text}
    gst, gst_text = _probe("import cv2, re; line = re.search(r'GStreamer:\\s*(\\S+)', cv2.getBuildInformation()); "
                           "assert line and line.group(1) == 'YES', 'OpenCV has no GStreamer'; print('GStreamer: YES')")
    found["gstreamer"] = {"present": gst, "detail": gst_text}
    model = Path("/proc/device-tree/model")
    board = model.read_bytes().decode(errors="replace").strip("\x00").strip() if model.is_file() else ""
    found["jetson"] = {"present": "jetson" in board.lower(), "detail": board or "no /proc/device-tree/model (not a Jetson)"}
    found["real_clip"] = {"present": clip is not None and clip.is_file(),
                          "detail": str(clip) if clip is not None else "none given (--clip FILE)"}
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    found["idle"] = {"present": load < cores / 4, "detail": f"load average {load:.2f} on {cores} cores"}
    providers = _probe("import onnxruntime as o; print(o.__version__, ', '.join(o.get_available_providers()))")[1]
    found["onnxruntime"] = {"present": True, "detail": providers}   # information only: the reference needs none
    return found


def _nvidia_gpus() -> tuple[int, str]:
    if shutil.which("nvidia-smi") is None:
        return 0, "no NVIDIA GPU here (nvidia-smi not found)"
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    return len(lines), ("; ".join(lines) or f"nvidia-smi finds no GPU ({(done.stderr or done.stdout).strip()[:200]})")


def _probe(code: str) -> tuple[bool, str]:
    """Run `code` in a child (a broken CUDA or TensorRT install must not take the checklist down)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return False, "the probe did not answer within 120 s"
    if done.returncode == 0:
        return True, done.stdout.strip()
    last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
    return False, last[:200]


# --- the plan ------------------------------------------------------------------------------------

def plan(work: Path, out: Path, clip: Path | None = None) -> list[Step]:
    """The checklist for a work directory, in the order it runs; commands only, nothing runs here."""
    data, ckpt = work / "data", work / "train" / "source" / "last.pt"
    size = f"{SIZE[0]}x{SIZE[1]}"
    train = ["train", "--stage", "source", "--set", f"data.source.root={data / 'source'}",
             "--set", f"data.target.root={data / 'target'}", "--set", f"data.crop_size=[{SIZE[0]}, {SIZE[1]}]",
             "--set", "data.batch_size=4", "--set", "data.val_limit=2", "--set", "device=auto",
             "--set", "model.name=small", "--set", f"source.iterations={TRAIN_ITERATIONS}",
             "--set", "logging.log_every=10", "--set", "logging.checkpoint_every=100000",
             "--set", "logging.num_overlays=0", "--set", 'amp="auto"']
    fp16, int8, legacy, first = work / "fp16", work / "int8", work / "int8_legacy", work / "first_run"
    real = clip if clip is not None else work / "clip.mp4"
    calib = data / "target" / "train" / "images"
    return [
        # Inputs for everything after: data (CPU), a checkpoint from CUDA, export bundles with the gates open.
        Step("data", "synthetic source/target data and a 40-frame synthetic clip (CPU)",
             [task("data", str(work))], needs=(), timeout_s=60),
        # device=auto: CUDA with AMP where torch has CUDA; a Jetson's CPU-only torch trains the few steps on its CPU.
        Step("train", f"{TRAIN_ITERATIONS} source steps (small model, {size}; CUDA with AMP where torch has it): the "
             "checkpoint", [uda(*train[:1], "--out", str(work / "train"), *train[1:])], needs=("gpu",), timeout_s=120,
             metrics=lambda: train_metrics(work / "train")),
        Step("export", "fp16 and int8 (Q/DQ) bundles from it, accuracy gates open for the smoke run (agreement reported)",
             [task("export", str(ckpt), str(fp16), "--precision", "fp16", "--data", str(data / "target")),
              task("export", str(ckpt), str(int8), "--precision", "int8", "--data", str(data / "target"),
                   "--calib", str(calib)),
              task("copy", str(int8), str(legacy)), task("copy", str(fp16), str(first))], needs=("gpu",), timeout_s=120),
        # TensorRT: the most value per second where it exists.
        Step("build_fp16", "uda-adapt build: the fp16 variant, then its check against the ONNX",
             [uda("build", str(fp16), "--precision", "fp16")], needs=("gpu", "tensorrt"), timeout_s=120),
        Step("build_fp32", "uda-adapt build --precision fp32 (the latency baseline), then its check",
             [uda("build", str(fp16), "--precision", "fp32")], needs=("gpu", "tensorrt"), timeout_s=120),
        Step("build_int8", "uda-adapt build: int8 explicit (Q/DQ; FP16+INT8 on 10.x), then its check",
             [uda("build", str(int8))], needs=("gpu", "tensorrt"), timeout_s=120),
        Step("build_int8_legacy", "uda-adapt build --legacy-precision-flags: the entropy calibrator on 8 images",
             [uda("build", str(legacy), "--precision", "int8", "--legacy-precision-flags", "--calib-data", str(calib),
                  "--calib-num", "8")], needs=("gpu", "tensorrt"), timeout_s=150),
        Step("check", "uda-adapt check: the fp16 engine against the ONNX on CUDA/CPU ONNX Runtime (never TensorRT's)",
             [uda("check", str(fp16))], needs=("gpu", "tensorrt"), timeout_s=60, forbid="TensorrtExecutionProvider"),
        Step("latency", "model-only latency: TensorRT fp32/fp16/int8 vs ONNX Runtime vs PyTorch fp32 (same input)",
             [task("latency", str(work), str(out / "latency.json"))], needs=("gpu", "tensorrt"), timeout_s=120,
             metrics=lambda: json.loads((out / "latency.json").read_text()), checks=latency_checks),
        Step("real_frames", "engine vs ONNX pixel agreement on frames of a real-camera clip, the precision's gate",
             [task("agreement", str(fp16), str(real), str(out / "agreement.json"))],
             needs=("gpu", "tensorrt", "real_clip"), timeout_s=60,
             metrics=lambda: json.loads((out / "agreement.json").read_text()), checks=agreement_checks),
        Step("run_bundle", "uda-adapt run BUNDLE on the clip: the engine, to an mp4",
             [uda("run", str(fp16), str(real), str(work / "overlay.mp4"), "--headless", "--json", str(out / "run.json"))],
             needs=("gpu", "tensorrt"), timeout_s=60, expect="backend: tensorrt",
             metrics=lambda: run_metrics(out / "run.json")),
        Step("first_run_build", "uda-adapt run on a bundle with no engine for this GPU: builds one and keeps it",
             [uda("run", str(first), str(work / "clip.mp4"), "null://", "--headless", "--max-frames", "10")],
             needs=("gpu", "tensorrt"), timeout_s=150, expect="building one now"),
        Step("second_run_reuses", "the same run again: starts from the kept engine, builds nothing",
             [uda("run", str(first), str(work / "clip.mp4"), "null://", "--headless", "--max-frames", "10")],
             needs=("gpu", "tensorrt"), timeout_s=60, expect="backend: tensorrt", forbid="building one now"),
        # Training on CUDA.
        Step("amp_vs_fp32", "training step time, deeplabv3_mobilenet_v3_large 8x3x512x1024: AMP vs fp32",
             [task("amp", str(out / "amp.json"))], timeout_s=120,
             metrics=lambda: json.loads((out / "amp.json").read_text()), checks=amp_checks),
        Step("train_compile", "the source steps again under torch.compile",
             [uda(*train[:1], "--out", str(work / "compile"), *train[1:], "--set", "compile=true", "--set", "device=cuda")],
             timeout_s=150,
             metrics=lambda: train_metrics(work / "compile")),
        Step("torchrun_1gpu", "torchrun --nproc_per_node 1: the launcher path (one process trains as a single one)",
             [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "uda_adapt",
               *train[:1], "--out", str(work / "torchrun"), *train[1:], "--set", "device=cuda"]], timeout_s=90,
             metrics=lambda: train_metrics(work / "torchrun")),
        Step("ddp_nccl", "NCCL process group, DDP wrapper and distributed sampler: pytest -m gpu on 2 GPUs",
             [[sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "gpu", "-k", "ddp or two_gpus",
               str(ROOT / "tests" / "adapt" / "test_gpu_training.py")]], needs=("cuda", "multi_gpu"), timeout_s=240,
             pytest=True),
        Step("resume_sigkill_cuda", "source training on CUDA SIGKILLed after a checkpoint, resumed: equal to an unbroken run",
             [task("resume", str(work), str(out / "resume.json"))], timeout_s=150,
             metrics=lambda: json.loads((out / "resume.json").read_text()), checks=resume_checks),
        # The runtime's CPU pipeline against a bare ONNX Runtime loop: worth it only where nothing else runs.
        Step("run_vs_bare_onnxruntime", "uda-adapt run over a 768x576 clip (512x1024 model, mp4 out) vs a bare ONNX "
             "Runtime loop, CPU, alternating rounds",
             [[sys.executable, str(ROOT / "benchmarks" / "pipeline_throughput.py"), "--make-video",
               str(work / "street_768x576.mp4"), "--images", str(data / "target" / "train" / "images")],
              [sys.executable, str(ROOT / "benchmarks" / "pipeline_throughput.py"), "--video",
               str(work / "street_768x576.mp4"), "--iters", "30", "--rounds", "3", "--json", str(out / "throughput.json")]],
             needs=("idle",), timeout_s=180, metrics=lambda: throughput_metrics(out / "throughput.json"),
             checks=lambda m: _below("run_over_bare_onnxruntime", m.get("median_ratio"))),
        # Paths only a Jetson has: listed, so an x86 report never reads as if they were checked.
        Step("jetson_dla", "a DLA engine (uda-adapt build --dla-core 0), checked against the ONNX",
             [uda("build", str(fp16), "--precision", "fp16", "--dla-core", "0")], needs=("jetson", "tensorrt"),
             timeout_s=240),
        Step("jetson_csi_nvargus", "a CSI camera through nvarguscamerasrc, 30 frames",
             [uda("run", str(fp16), "csi://0", "null://", "--headless", "--max-frames", "30")],
             needs=("jetson", "gstreamer"), timeout_s=60),
        Step("jetson_nvv4l2", "H.264 encode to a file (nvv4l2h264enc where the board has NVENC) and its decode",
             [uda("run", str(fp16), str(work / "clip.mp4"), str(work / "hw.mp4"), "--headless", "--codec", "h264"),
              uda("run", str(fp16), str(work / "hw.mp4"), "null://", "--headless", "--input-codec", "h264")],
             needs=("jetson", "gstreamer"), timeout_s=90),
        Step("gstreamer_writer", "the GStreamer video writer (H.264, yuv420p)",
             [uda("run", str(fp16), str(work / "clip.mp4"), str(work / "gst.mp4"), "--headless", "--codec", "h264")],
             needs=("gstreamer",), timeout_s=60),
        Step("jetson_rtsp_server", "the RTSP server sink serving 40 frames (a client reading it: device_check_jetson.md)",
             [uda("run", str(fp16), str(work / "clip.mp4"), "rtsp://@:8554/seg", "--headless", "--max-frames", "40")],
             needs=("jetson", "gstreamer"), timeout_s=60),
        # Last: every test marked for a GPU or TensorRT, with each skip listed.
        Step("pytest_gpu", 'pytest -rs -m "gpu or tensorrt": every test that needs a GPU or TensorRT',
             [[sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
               str(ROOT / "tests")]], needs=("gpu",), timeout_s=240, pytest=True),
    ]


# --- what the steps measure ---------------------------------------------------------------------

def train_metrics(run: Path) -> dict[str, Any]:
    """Median training throughput of a run's source stage (its metrics.jsonl), the first record left out."""
    rows = [json.loads(line) for line in (run / "source" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["images_per_second"] for r in rows if "images_per_second" in r]
    return {"images_per_second_median": statistics.median(rates[1:] or rates) if rates else None, "records": len(rates)}


def run_metrics(report: Path) -> dict[str, Any]:
    data = json.loads(report.read_text())
    return {key: data.get(key) for key in ("backend", "frames", "fps", "dropped", "corrupt") if key in data}


def throughput_metrics(report: Path) -> dict[str, Any]:
    data = json.loads(report.read_text())
    return {key: data[key] for key in ("median_bare_onnxruntime_qps", "median_run_fps", "median_ratio",
                                       "median_same_priority_ratio", "median_prefetch_ratio") if key in data}


# --- thresholds ----------------------------------------------------------------------------------

def _below(name: str, value: float | None) -> list[str]:
    limit = THRESHOLDS[name]
    if value is None:
        return [f"{name}: not measured (threshold {limit})"]
    return [f"{name} = {value:.3f}, below {limit}"] if value < limit else []


def latency_checks(metrics: dict[str, Any]) -> list[str]:
    """TensorRT fp16 faster than fp32, fp32 faster than PyTorch fp32, int8 faster than fp16."""
    ms = metrics.get("median_ms", {})

    def ratio(slow: str, fast: str) -> float | None:
        return ms[slow] / ms[fast] if slow in ms and fast in ms and ms[fast] > 0 else None

    ratios = {"tensorrt_fp16_over_fp32": ratio("tensorrt_fp32", "tensorrt_fp16"),
              "tensorrt_fp32_over_torch": ratio("torch_fp32", "tensorrt_fp32"),
              "tensorrt_int8_over_fp16": ratio("tensorrt_fp16", "tensorrt_int8")}
    metrics["ratios"] = ratios
    return [problem for name, value in ratios.items() for problem in _below(name, value)]


def amp_checks(metrics: dict[str, Any]) -> list[str]:
    return _below("amp_speedup", metrics.get("amp_speedup"))


def resume_checks(metrics: dict[str, Any]) -> list[str]:
    tensors = metrics.get("tensors") or 0
    problems = _below("resume_identical_fraction", metrics.get("within_noise", 0) / tensors if tensors else None)
    if problems and tensors:
        problems.append(f"largest difference {metrics.get('max_abs_difference')}")
    return problems


def agreement_checks(metrics: dict[str, Any]) -> list[str]:
    """Each engine against its own ONNX on real frames, at its precision's gate (closed: they need no training)."""
    from uda_adapt.common.gates import GATES

    engines = metrics.get("engines", {})
    if not engines:
        return ["no engine was compared"]
    return [f"{name} agrees on {100 * e['pixel_agreement']:.2f} % of real-frame pixels, below the {e['precision']} gate "
            f"of {100 * GATES[e['precision']].min_agreement:.1f} %"
            for name, e in engines.items() if e["pixel_agreement"] < GATES[e["precision"]].min_agreement]


# --- running -------------------------------------------------------------------------------------

def run_steps(steps: list[Step], *, budget_s: float, present: dict[str, bool], log: Callable[[str], None],
              env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run every step in turn, each isolated: a failure is recorded and the next step still runs."""
    started = time.monotonic()
    results = []
    for step in steps:
        record: dict[str, Any] = {"name": step.name, "what": step.what, "needs": list(step.needs),
                                  "commands": [" ".join(c) for c in step.commands]}
        missing = [need for need in step.needs if not present.get(need, False)]
        left = budget_s - (time.monotonic() - started)
        if missing:
            record.update(status="not covered", reason="needs " + ", ".join(NEEDS.get(n, n) for n in missing))
        elif left < min(step.timeout_s, 10.0):
            record.update(status="not covered", reason=f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s left")
        else:
            record.update(_run_one(step, min(step.timeout_s, left), env))
        log(f"{step.name}: {record['status'].upper()}" + (f" ({record['reason']})" if record.get("reason") else ""))
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
            text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return _failed(t0, f"over its {timeout_s:.0f} s limit", [*output, text])
        except OSError as exc:
            return _failed(t0, f"cannot start {command[0]}: {exc}", output)
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            return {**_failed(t0, f"exit status {done.returncode}: {' '.join(command[:6])} ...", output),
                    **({"skipped_tests": skipped_tests(output[-1])} if step.pytest else {})}
    text = "".join(output)
    if step.expect is not None and step.expect not in text:
        return _failed(t0, f"the output never says {step.expect!r}", output)
    if step.forbid is not None and step.forbid in text:
        return _failed(t0, f"the output says {step.forbid!r}", output)
    result: dict[str, Any] = {"status": "passed", "seconds": round(time.monotonic() - t0, 1)}
    if step.pytest:
        result["skipped_tests"] = skipped_tests(text)
    if step.metrics is not None:
        try:
            result["metrics"] = step.metrics()
        except Exception as exc:  # noqa: BLE001  (a report of what broke, not a crash of the checklist)
            return _failed(t0, f"its numbers could not be read: {type(exc).__name__}: {exc}", output)
        if step.checks is not None:
            missed = step.checks(result["metrics"])
            if missed:
                return {**result, "status": "failed", "reason": "threshold missed: " + "; ".join(missed)}
    return result


def _failed(t0: float, reason: str, output: list[str]) -> dict[str, Any]:
    return {"status": "failed", "seconds": round(time.monotonic() - t0, 1), "reason": reason,
            "output_tail": "".join(output)[-OUTPUT_TAIL:]}


SKIP_LINE = re.compile(r"^SKIPPED \[\d+\] (?P<where>\S+?): (?P<reason>.*)$")


def skipped_tests(text: str) -> list[dict[str, str]]:
    """The `-rs` summary lines: [{"where": "tests/x.py:12", "reason": "needs TensorRT"}]."""
    return [m.groupdict() for line in text.splitlines() if (m := SKIP_LINE.match(line.strip()))]


def judge(steps: list[dict[str, Any]], allow: list[str], present: dict[str, bool]) -> dict[str, Any]:
    """Exit status and the reasons: failures, and what was not covered without an --allow-skip naming it."""
    allowed = lambda name: any(fnmatch.fnmatch(name, pattern) for pattern in allow)  # noqa: E731
    failures, unallowed = [], []
    for record in steps:
        if record["status"] == "failed":
            failures.append(f"{record['name']}: {record.get('reason', '')}")
        elif record["status"] == "not covered":
            record["allowed"] = allowed(record["name"])
            if not record["allowed"]:
                unallowed.append(record["name"])
        for skip in record.get("skipped_tests", []):
            text = skip["reason"].lower()
            # A test that says it needs TensorRT (or a GPU), skipped where that is present, hides a broken
            # setup. Skips for another reason (a TensorRT version without a feature) are judged by --allow-skip.
            wants = any(word in text for word in ("needs", "requires", "not installed", "no module"))
            if "tensorrt" in text:
                present_but_skipped = wants and bool(present.get("tensorrt"))
            else:
                present_but_skipped = bool(wants and present.get("cuda") and ("gpu" in text or "cuda" in text)
                                           and "2 gpus" not in text)
            skip["allowed"] = allowed(skip["where"]) and not present_but_skipped
            if not skip["allowed"]:
                unallowed.append(f"skipped test {skip['where']} ({skip['reason']})"
                                 + (": its requirement is present here" if present_but_skipped else ""))
    return {"exit_status": 1 if failures or unallowed else 0, "failures": failures, "not_allowed": unallowed}


# --- the report ----------------------------------------------------------------------------------

def write_reports(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "device_check.json", out / "device_check.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path


def render_markdown(result: dict[str, Any]) -> str:
    steps = result["steps"]
    counts = {s: sum(1 for r in steps if r["status"] == s) for s in ("passed", "failed", "not covered")}
    verdict = "PASSED" if result["judgement"]["exit_status"] == 0 else "FAILED"
    lines = [
        "# Device check", "",
        f"**{verdict}**: {counts['passed']} passed, {counts['failed']} failed, {counts['not covered']} not covered; "
        f"{result['started']}, {result['seconds']:.0f} s of a {result['budget_s']:.0f} s budget, Python {result['python']}.",
        "", "## Preflight", "", "| | present | detail |", "|---|---|---|",
    ]
    for name, item in result["preflight"].items():
        lines.append(f"| {name} | {'yes' if item['present'] else 'NO'} | {str(item['detail']).replace('|', '/')} |")
    lines += ["", "## Steps (in the order they ran)", "", "| step | status | s | what, or why not |", "|---|---|---|---|"]
    for r in steps:
        status = r["status"].upper() if r["status"] != "passed" else "passed"
        if r["status"] == "not covered" and r.get("allowed"):
            status += " (allowed)"
        detail = r["what"] if r["status"] == "passed" else f"{r['what']}: {r.get('reason', '')}"
        lines.append(f"| {r['name']} | {status} | {r.get('seconds', '')} | {detail.replace('|', '/')} |")
    uncovered = [r for r in steps if r["status"] == "not covered"]
    if uncovered:
        lines += ["", "## NOT COVERED (nothing here was checked)", ""]
        lines += [f"- {r['name']}: {r['reason']}" + (" (allowed by --allow-skip)" if r.get("allowed") else "")
                  for r in uncovered]
    skips = [(r["name"], s) for r in steps for s in r.get("skipped_tests", [])]
    if skips:
        lines += ["", "## Skipped tests (each a failure unless allowed)", ""]
        lines += [f"- {name}: {s['where']}: {s['reason']}" + (" (allowed)" if s.get("allowed") else " **NOT ALLOWED**")
                  for name, s in skips]
    measured = [r for r in steps if r.get("metrics")]
    if measured:
        lines += ["", "## Measured", ""]
        lines += [f"- **{r['name']}**: " + json.dumps(r["metrics"], sort_keys=True) for r in measured]
        lines += ["", "Thresholds: " + ", ".join(f"{k} >= {v}" for k, v in THRESHOLDS.items())]
    for r in steps:
        if r["status"] == "failed":
            lines += ["", f"## {r['name']} failed: {r['reason']}", ""]
            if r.get("output_tail"):
                lines += ["```", r["output_tail"].strip(), "```"]
    judgement = result["judgement"]
    if judgement["not_allowed"]:
        lines += ["", "## Why the exit status is not 0", ""]
        lines += [f"- not covered and not allowed: {name}" for name in judgement["not_allowed"]]
        lines += ["", "Name what may stay unchecked with `--allow-skip PATTERN` (fnmatch; repeatable)."]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for device_check.json and device_check.md")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temporary one, removed]")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for the whole check [default: {BUDGET_S:.0f}]")
    parser.add_argument("--clip", type=Path, default=None, help="a short real-camera clip for the real-frame steps")
    parser.add_argument("--allow-skip", action="append", default=[], metavar="PATTERN",
                        help="a step name or skipped test (path:line) that may stay unchecked; fnmatch, repeatable")
    parser.add_argument("--without", action="append", default=[], choices=sorted(NEEDS), metavar="NEED",
                        help=f"treat NEED as absent here (one of {', '.join(sorted(NEEDS))}); repeatable")
    args = parser.parse_args(argv)
    return run_checklist(args.out, args.work, args.budget, args.clip, args.allow_skip, args.without)


def run_checklist(out: Path, work: Path | None, budget_s: float, clip: Path | None, allow: list[str],
                  without: list[str]) -> int:
    log = lambda message: print(f"device_check: {message}", file=sys.stderr, flush=True)  # noqa: E731
    found = preflight(clip)
    for name in without:
        found[name] = {"present": False, "detail": "treated as absent (--without)"}
    present = {name: bool(item["present"]) for name, item in found.items()}
    log("preflight: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in present.items()))
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="device_check.")) if work is None else work
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    try:
        steps = run_steps(plan(work, out.resolve(), clip), budget_s=budget_s, present=present, log=log, env=env)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    result = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "budget_s": budget_s, "seconds": round(time.monotonic() - t0, 1), "python": sys.version.split()[0],
              "preflight": found, "allow_skip": allow, "steps": steps, "judgement": judge(steps, allow, present)}
    json_path, md_path = write_reports(out, result)
    verdict = result["judgement"]
    log(f"wrote {json_path} and {md_path}: " + ("PASSED" if verdict["exit_status"] == 0 else
        f"FAILED ({len(verdict['failures'])} failed, {len(verdict['not_allowed'])} not covered and not allowed)"))
    return verdict["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
