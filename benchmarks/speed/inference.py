"""The inference sections: ONNX Runtime vs PyTorch, int8 vs fp32, the runtime pipeline, and latest-frame mode.

Comparisons alternate both sides call by call or round by round in one process, so a change in
the machine's speed during the run hits both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.speed.figures import median_figure
from benchmarks.speed.plan import CAMERA_FPS, TRAIN_DATA_SIZE, Plan
from benchmarks.speed.sections import opencv_threads
from benchmarks.speed.training import run_training, synthetic_data, train_command, train_overrides


def export_section(plan: Plan, work: Path) -> dict[str, Any]:
    import torch

    from benchmarks.export_latency import bench_model

    rows = [bench_model(name, work, plan.export_size, plan.export_iters, 3, 0) for name in plan.export_models]
    size = f"{plan.export_size[0]}x{plan.export_size[1]}"
    return {"commands": [f"python benchmarks/export_latency.py --models {' '.join(plan.export_models)} --size {size} "
                         f"--iters {plan.export_iters} --warmup 3"],
            "torch_threads": torch.get_num_threads(), "rows": rows}


def int8_section(plan: Plan, work: Path) -> dict[str, Any]:
    """fp32 and int8 ONNX of one briefly trained network: latency alternating call by call, and the parity gate's figures."""
    import numpy as np
    import onnxruntime as ort

    from uda_adapt.common.errors import UserError
    from uda_adapt.export.api import export_model
    from uda_adapt.export.config import ExportConfig
    from uda_adapt.export.onnx_export import INPUT_NAME

    source, target, commands = synthetic_data(work / "data", plan.train_images, plan.int8_parity, TRAIN_DATA_SIZE)
    overrides = train_overrides(source, target, plan.int8_source_iterations)
    run_training(overrides, work / "run", stage="source")
    ckpt, bundle = work / "run" / "source" / "last.pt", work / "export"
    config = ExportConfig(size=plan.int8_size, precision="int8", calib_data=str(target / "train" / "images"),
                          calib_num=plan.int8_calib, parity_data=str(target), parity_num=plan.int8_parity)
    try:
        export_model(ckpt, bundle, config)
    except UserError as exc:
        # A failed gate still installs the bundle: its figures are what this section reports.
        if not (bundle / "report" / "parity.json").is_file():
            raise
        gate_failure = str(exc).split(";")[0]
    else:
        gate_failure = None
    parity = json.loads((bundle / "report" / "parity.json").read_text())
    size = f"{plan.int8_size[0]}x{plan.int8_size[1]}"
    commands += [train_command(work / "run", overrides, "--stage", "source"),
                 f"uda-adapt export {ckpt} --out {bundle} --size {size} --precision int8 --calib-data {target / 'train' / 'images'} "
                 f"--calib-num {plan.int8_calib} --data {target} --parity-num {plan.int8_parity}"]

    sessions = {p: ort.InferenceSession(str(bundle / f), providers=["CPUExecutionProvider"])
                for p, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))}
    x = np.random.default_rng(0).standard_normal((1, 3, *plan.int8_size)).astype(np.float32)
    times: dict[str, list[float]] = {p: [] for p in sessions}
    for i in range(3 + plan.int8_iters):
        for precision, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {INPUT_NAME: x})
            if i >= 3:
                times[precision].append(1000 * (time.perf_counter() - start))
    latency = {p: median_figure(t) for p, t in times.items()}
    return {"commands": commands, "size": list(plan.int8_size), "latency_ms": latency,
            "int8_over_fp32": latency["int8"]["median"] / latency["fp32"]["median"],
            "parity": parity["checks"], "parity_data": parity["data"], "gate_failure": gate_failure}


def pipeline_section(plan: Plan, work: Path) -> dict[str, Any]:
    from benchmarks.pipeline_throughput import alternate_rounds, export_small_model
    from uda_adapt.runtime.backends import open_backend

    h, w = plan.pipeline_size
    backend = open_backend(export_small_model(work, h, w), "ort", threads=None, spin=False)
    try:
        with opencv_threads(1):  # as `uda-adapt run`
            rounds = alternate_rounds(backend, (h, w), 3, plan.pipeline_iters, plan.pipeline_rounds)
        described = backend.describe()
    finally:
        backend.close()
    return {"commands": [f"python benchmarks/pipeline_throughput.py --size {h}x{w} --iters {plan.pipeline_iters} "
                         f"--rounds {plan.pipeline_rounds} --warmup 3"],
            "backend": described, "rounds": rounds,
            "model_only_qps": median_figure([r["model_only_qps"] for r in rounds]),
            "pipeline_qps": median_figure([r["pipeline_qps"] for r in rounds]),
            "ratio": median_figure([r["ratio"] for r in rounds])}


def quiet(message: str) -> None:
    """A log for runtime calls whose progress lines would only clutter the benchmark's output."""


def latest_mode_run(backend: Any, size: tuple[int, int], frames: int, fps: float) -> dict[str, Any]:
    """The pipeline as `uda-adapt run --latest` builds it (newest-frame slot, result queue of 1), fed at `fps`."""
    from uda_adapt.runtime.bench import MemorySource, synthetic_frames
    from uda_adapt.runtime.capture import CaptureThread
    from uda_adapt.runtime.pipeline import run_pipeline
    from uda_adapt.runtime.preprocess import Preprocessor
    from uda_adapt.runtime.render import Renderer, RenderOptions
    from uda_adapt.runtime.sinks import NullSink

    manifest = backend.manifest
    capture = CaptureThread(MemorySource(synthetic_frames(*size), frames), latest=True, rate=fps, log=quiet)
    renderer = Renderer(manifest.classes, manifest.palette, RenderOptions(), manifest.ignore_index)
    report = run_pipeline(capture, backend, Preprocessor(manifest.input, backend.input_size), renderer, NullSink(),
                          queue_size=1, log=quiet)
    return {"latency_ms": report.latency_ms, "fps": report.fps, "shown": report.frames, "captured": report.captured,
            "dropped": report.dropped, "stages_ms": report.stages_ms}


def latest_section(plan: Plan, work: Path) -> dict[str, Any]:
    from benchmarks.pipeline_throughput import export_small_model
    from uda_adapt.runtime.backends import open_backend
    from uda_adapt.runtime.bench import bench_model

    h, w = plan.latest_size
    backend = open_backend(export_small_model(work, h, w), "ort", threads=None, spin=False)
    rounds = []
    try:
        with opencv_threads(1):
            for _ in range(plan.latest_rounds):
                only = bench_model(backend, (1, 3, *backend.input_size), 3, plan.latest_frames)
                latest = latest_mode_run(backend, (h, w), plan.latest_frames, CAMERA_FPS)
                rounds.append({"model_median_ms": only["latency_ms"]["median"], **latest,
                               "ratio": latest["latency_ms"]["p50"] / only["latency_ms"]["median"]})
    finally:
        backend.close()
    return {"commands": [f"run_pipeline(CaptureThread(MemorySource({plan.latest_frames} frames {h}x{w}), latest=True, "
                         f"rate={CAMERA_FPS:g}), queue_size=1) alternating with runtime.bench.bench_model"],
            "size": [h, w], "camera_fps": CAMERA_FPS, "rounds": rounds,
            "model_ms": median_figure([r["model_median_ms"] for r in rounds]),
            "latest_p50_ms": median_figure([r["latency_ms"]["p50"] for r in rounds]),
            "ratio": median_figure([r["ratio"] for r in rounds])}
