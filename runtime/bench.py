"""`uda-adapt bench`: trtexec-style latency and throughput, model-only and through the pipeline.

Model-only times `backend.infer` on one pre-made input. The pipeline runs in-memory frames
through capture -> preprocess -> infer -> render (overlay) -> a null sink, so the two numbers
differ only by what the other stages cost when they overlap inference.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from typing import Any

import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.backends import open_backend
from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.bundle import resolve_model
from uda_adapt.runtime.capture import CaptureThread, Log, log_to_stderr
from uda_adapt.runtime.pipeline import run_pipeline
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.report import format_table
from uda_adapt.runtime.sinks import NullSink
from uda_adapt.runtime.thread_priority import SIDE_NICE


def latency_stats_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    ms = np.asarray(seconds, np.float64) * 1000.0
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {"min": float(ms.min()), "mean": float(ms.mean()), "median": float(p50), "p90": float(p90),
            "p95": float(p95), "p99": float(p99), "max": float(ms.max())}


def bench_model(backend: Backend, shape: tuple[int, ...], warmup: int, iters: int) -> dict[str, Any]:
    """Time `iters` calls of `backend.infer` on one random batch after `warmup` untimed ones."""
    batch = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        backend.infer(batch)
    times = []
    start = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        backend.infer(batch)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"throughput_qps": iters * shape[0] / total, "latency_ms": latency_stats_ms(times), "iters": iters}


class MemorySource:
    """A few synthetic frames, replayed `count` times in all: a source that costs nothing to read."""

    live = False
    fps = 30.0

    def __init__(self, frames: list[np.ndarray], count: int) -> None:
        self.name = f"memory://{len(frames)}x{frames[0].shape[1]}x{frames[0].shape[0]}"
        self._frames, self._count, self._next = frames, count, 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._next >= self._count:
            return False, None
        self._next += 1
        return True, self._frames[self._next % len(self._frames)]

    def skip(self) -> bool:
        self._next += 1
        return self._next <= self._count

    def close(self) -> None:
        pass


def synthetic_frames(height: int, width: int, n: int = 8) -> list[np.ndarray]:
    """Street-like BGR frames: sky, buildings, road, and noise so codecs and blends do real work."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        frame = np.empty((height, width, 3), np.uint8)
        frame[: height // 3] = (200, 150, 90)
        frame[height // 3 : 2 * height // 3] = (80, 80, 90)
        frame[2 * height // 3 :] = (120, 70, 120)
        frame += rng.integers(0, 30, frame.shape, dtype=np.uint8)
        x = (i * width // n) % max(width - width // 8, 1)
        frame[height // 2 : height // 2 + height // 8, x : x + width // 8] = (30, 30, 200)
        frames.append(frame)
    return frames


def bench_pipeline(backend: Backend, size: tuple[int, int], warmup: int, iters: int, log: Log = log_to_stderr) -> dict[str, Any]:
    """Throughput at the sink over `iters` frames after `warmup`, with the overlay rendered.

    Every frame, preprocessed ahead of inference: the pipeline `uda-adapt run` builds for a file.
    """
    height, width = size
    done: list[float] = []
    capture = CaptureThread(MemorySource(synthetic_frames(height, width), warmup + iters), latest=False, log=log)
    manifest = backend.manifest
    renderer = Renderer(manifest.classes, manifest.palette, RenderOptions(), manifest.ignore_index)
    report = run_pipeline(
        capture, backend, Preprocessor(manifest.input, backend.input_size), renderer, NullSink(),
        on_frame=lambda i, image: done.append(time.perf_counter()), log=log, prefetch=False,
        side_nice=SIDE_NICE,     # as `run` ships for files
    )
    timed = done[max(warmup - 1, 0):]
    qps = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 and timed[-1] > timed[0] else 0.0
    return {"throughput_qps": qps, "latency_ms": report.latency_ms, "stages_ms": report.stages_ms,
            "frames": report.frames, "dropped": report.dropped, "iters": iters}


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    for module in ("onnxruntime", "torch", "cv2", "tensorrt"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            continue
    if shutil.which("nvpmodel"):
        # Jetson: the power mode changes the numbers several-fold; record it with them.
        result = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10, check=False)
        info["nvpmodel"] = " ".join(result.stdout.split())
    return info


def bench(
    model: str,
    backend: str = "auto",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    warmup: int = 10,
    iters: int = 100,
    pipeline: bool = True,
    threads: int | None = None,
    device: int = 0,
    log: Log = log_to_stderr,
) -> dict[str, Any]:
    if warmup < 0 or iters < 2:
        raise UserError(f"--warmup must be 0 or more and --iters 2 or more, got {warmup} and {iters}")
    model = str(resolve_model(model, backend, device, log))
    runner = open_backend(model, backend, threads=threads, device=device, input_size=size, log=log)
    try:
        shape = (batch, 3, *runner.input_size)
        log(f"backend: {runner.describe()}")
        result: dict[str, Any] = {
            "model": str(model), "backend": runner.describe(), "providers": runner.providers,
            "shape": list(shape), "warmup": warmup, "iters": iters, "host": host_info(),
        }
        result["model_only"] = bench_model(runner, shape, warmup, iters)
        if pipeline:
            result["pipeline"] = bench_pipeline(runner, (shape[2], shape[3]), warmup, iters, log)
            result["pipeline_over_model"] = result["pipeline"]["throughput_qps"] / result["model_only"]["throughput_qps"]
        return result
    finally:
        runner.close()


def format_bench(result: dict[str, Any]) -> str:
    """trtexec's summary lines, then a table of both runs."""
    lines = [f"=== {result['backend']}, shape {'x'.join(map(str, result['shape']))} ==="]
    rows = []
    for key, title in (("model_only", "model-only"), ("pipeline", "pipeline")):
        if key not in result:
            continue
        lat = result[key]["latency_ms"]
        if key == "model_only":
            lines.append(f"[I] Throughput: {result[key]['throughput_qps']:.3f} qps")
            lines.append(
                f"[I] Latency: min = {lat['min']:.3f} ms, max = {lat['max']:.3f} ms, mean = {lat['mean']:.3f} ms, "
                f"median = {lat['median']:.3f} ms, percentile(90%) = {lat['p90']:.3f} ms, "
                f"percentile(95%) = {lat['p95']:.3f} ms, percentile(99%) = {lat['p99']:.3f} ms"
            )
        median = lat.get("median", lat.get("p50", 0.0))
        p99 = lat["p99"]
        rows.append([title, f"{result[key]['throughput_qps']:.2f}", f"{median:.1f}", f"{lat.get('p90', 0.0):.1f}", f"{p99:.1f}"])
    lines.append("")
    lines.append(format_table(rows, ["run", "qps", "median ms", "p90 ms", "p99 ms"]))
    if "pipeline_over_model" in result:
        stages = result["pipeline"]["stages_ms"]
        lines.append("pipeline stages (mean ms): " + "  ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        lines.append(f"pipeline / model-only throughput: {result['pipeline_over_model']:.3f}")
    return "\n".join(lines)
