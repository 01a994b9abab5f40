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
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Child processes get the environment as the user started this script: importing OpenCV here
# prepends its own lib64 to LD_LIBRARY_PATH, which the standalone commands would not see.
STARTING_ENVIRONMENT = dict(os.environ)

DEFAULT_OUT = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "run_all.json"
WORK = "$WORK"                        # how commands name the scratch directory (removed after the run)
TRAIN_DATA_SIZE = (256, 512)          # generated scenes; crops of 128x256 at scales 0.75-1.25 fit inside
TRAIN_BATCH = 8                       # CPU training batch (the config's default), of 128x256 crops
LOG_EVERY = 10                        # iterations per training log record; the first record is warm-up
GPU_BATCH = 2                         # DeepLab-V2 images per GPU; DDP runs grow the global batch with the GPUs
CORRELATION_LIMIT_GB = 6.0            # as correlation_memory.py: skip naive cases that would need more
CAMERA_FPS = 30.0                     # the latest-mode source delivers frames at a camera's rate


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each section measures: QUICK checks that everything runs, FULL gives the figures to quote."""

    synth_repeats: int
    synth_images: int                          # per repeat, both sizes of synth_throughput.SIZES
    train_images: int                          # synthetic train images per domain
    train_iterations: int                      # per stage; IAST runs 3 rounds of a third each
    correlation_sizes: tuple[tuple[int, int], ...]
    correlation_repeats: int                   # runs per process; its time is their median
    correlation_processes: int                 # fresh processes per case and implementation
    export_models: tuple[str, ...]
    export_size: tuple[int, int]
    export_iters: int
    int8_source_iterations: int                # a briefly trained network: an untrained one has near-tied logits
    int8_size: tuple[int, int]
    int8_calib: int
    int8_parity: int
    int8_iters: int
    pipeline_size: tuple[int, int]
    pipeline_iters: int
    pipeline_rounds: int
    latest_size: tuple[int, int]
    latest_frames: int
    latest_rounds: int
    gpu_crop: tuple[int, int]
    gpu_iterations: int
    gpu_rounds: int                            # amp off / auto alternations


QUICK = Plan(
    synth_repeats=3, synth_images=10, train_images=16, train_iterations=30,
    correlation_sizes=((64, 128),), correlation_repeats=3, correlation_processes=3,
    export_models=("small",), export_size=(256, 512), export_iters=10,
    int8_source_iterations=30, int8_size=(256, 512), int8_calib=8, int8_parity=4, int8_iters=10,
    pipeline_size=(256, 512), pipeline_iters=15, pipeline_rounds=2,
    latest_size=(256, 512), latest_frames=30, latest_rounds=2,
    gpu_crop=(256, 512), gpu_iterations=20, gpu_rounds=1,
)
FULL = Plan(
    synth_repeats=5, synth_images=40, train_images=32, train_iterations=60,
    correlation_sizes=((32, 64), (64, 128)), correlation_repeats=3, correlation_processes=3,
    export_models=("small", "lraspp_mobilenet_v3_large"), export_size=(512, 1024), export_iters=20,
    int8_source_iterations=100, int8_size=(512, 1024), int8_calib=32, int8_parity=8, int8_iters=20,
    pipeline_size=(512, 1024), pipeline_iters=30, pipeline_rounds=3,
    latest_size=(512, 1024), latest_frames=90, latest_rounds=3,
    gpu_crop=(512, 1024), gpu_iterations=40, gpu_rounds=2,
)


class NotMeasured(Exception):
    """This machine cannot run the section (no GPU): reported as "not measured", not as a failure."""


# --- helpers shared by sections -------------------------------------------------------------

def median_figure(values: list[float]) -> dict[str, Any]:
    """The median of `values` with how many there were, as every figure is reported."""
    if not values:
        raise ValueError("no values to take the median of")
    return {"median": statistics.median(values), "n": len(values), "values": list(values)}


def stage_rate(metrics: Path) -> dict[str, Any]:
    """Median `images_per_second` of a stage's metrics.jsonl, without its first (warm-up) record.

    Evaluation records carry no throughput and are skipped.
    """
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rates = [r["images_per_second"] for r in records if "images_per_second" in r]
    if len(rates) < 2:
        raise RuntimeError(f"{metrics} holds {len(rates)} throughput records; need 2 or more (the first is warm-up)")
    return {**median_figure(rates[1:]), "warmup_dropped": rates[0]}


def synthetic_data(root: Path, num_train: int, num_val: int, size: tuple[int, int]) -> tuple[Path, Path, list[str]]:
    """root/source (sim) and root/target (real) from the generator; returns both roots and the commands."""
    from adapt.data.synth import write_split

    commands = []
    for name, domain in (("source", "sim"), ("target", "real")):
        for split, num in (("train", num_train), ("val", num_val)):
            write_split(root / name, domain, split, num, size, 0, progress=False)
            commands.append(f"uda-adapt data synth --out {root / name} --domain {domain} --split {split} "
                            f"--num {num} --size {size[0]}x{size[1]} --seed 0")
    return root / "source", root / "target", commands


def train_overrides(source: Path, target: Path, iterations: int) -> list[str]:
    """The small model on the CPU, TRAIN_BATCH crops of 128x256, a log record every LOG_EVERY iterations."""
    return [f"data.source.root={source}", f"data.target.root={target}", "data.crop_size=[128, 256]",
            f"data.batch_size={TRAIN_BATCH}", "data.val_limit=2", "device=cpu", "model.name=small",
            f"source.iterations={iterations}", f"correlation.iterations={iterations}",
            f"self_train.mean_teacher.iterations={iterations}",
            f"logging.log_every={LOG_EVERY}", "logging.checkpoint_every=100000", "logging.num_overlays=0"]


def train_command(run: Path, overrides: list[str], *extra: str) -> str:
    return shlex.join(["uda-adapt", "train", "--out", str(run), *extra, *(a for o in overrides for a in ("--set", o))])


def run_training(overrides: list[str], run: Path, stage: str | None = None, init: Path | None = None) -> None:
    """`adapt.train.runner.train`, as `uda-adapt train` calls it; its printed tables are not ours to show."""
    from adapt.config import load_config
    from adapt.train.config import TrainConfig
    from adapt.train.runner import train

    with contextlib.redirect_stdout(io.StringIO()):
        train(load_config(TrainConfig, None, overrides), run, stage=stage, init=init)


def quiet(message: str) -> None:
    """A log for runtime calls whose progress lines would only clutter the benchmark's output."""


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


# --- sections: each takes the plan and a scratch folder and returns plain data ----------------

def synth_section(plan: Plan, work: Path) -> dict[str, Any]:
    from adapt.data.synth import generate_scene
    from benchmarks.synth_throughput import SIZES, measure_domain

    with opencv_threads(1):  # one core: the figure a data-loader worker gets
        generate_scene(0, "real", (64, 128))  # warm imports and caches
        rows = [measure_domain(domain, size, plan.synth_repeats, plan.synth_images)
                for size in SIZES for domain in ("sim", "real")]
    return {"commands": [f"python benchmarks/synth_throughput.py --repeats {plan.synth_repeats} --images {plan.synth_images}"],
            "rows": rows}


def train_section(plan: Plan, work: Path) -> dict[str, Any]:
    import torch

    source, target, commands = synthetic_data(work / "data", plan.train_images, 2, TRAIN_DATA_SIZE)
    overrides = train_overrides(source, target, plan.train_iterations)
    run, iast_run = work / "run", work / "run_iast"
    run_training(overrides, run)
    iast = [*overrides, "self_train.method=iast", "self_train.rounds=3",
            f"self_train.iterations_per_round={max(plan.train_iterations // 3, LOG_EVERY)}"]
    init = run / "correlation" / "last.pt"
    run_training(iast, iast_run, stage="self_train", init=init)
    commands += [train_command(run, overrides), train_command(iast_run, iast, "--stage", "self_train", "--init", str(init))]
    stages = {
        "source": (stage_rate(run / "source" / "metrics.jsonl"), TRAIN_BATCH),
        "correlation": (stage_rate(run / "correlation" / "metrics.jsonl"), TRAIN_BATCH),
        # A mean-teacher step takes a source and a target batch; the loop counts both.
        "self_train (mean_teacher)": (stage_rate(run / "self_train" / "metrics.jsonl"), 2 * TRAIN_BATCH),
        "self_train (iast)": (stage_rate(iast_run / "self_train" / "metrics.jsonl"), TRAIN_BATCH),
    }
    return {"commands": commands, "torch_threads": torch.get_num_threads(), "iterations": plan.train_iterations,
            "stages": {name: {**rate, "images_per_step": per_step} for name, (rate, per_step) in stages.items()}}


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

    from common.errors import UserError
    from export.api import export_model
    from export.config import ExportConfig
    from export.onnx_export import INPUT_NAME

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
    from runtime.backends import open_backend

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


def latest_mode_run(backend: Any, size: tuple[int, int], frames: int, fps: float) -> dict[str, Any]:
    """The pipeline as `uda-adapt run --latest` builds it (newest-frame slot, result queue of 1), fed at `fps`."""
    from runtime.bench import MemorySource, synthetic_frames
    from runtime.capture import CaptureThread
    from runtime.pipeline import run_pipeline
    from runtime.preprocess import Preprocessor
    from runtime.render import Renderer, RenderOptions
    from runtime.sinks import NullSink

    manifest = backend.manifest
    capture = CaptureThread(MemorySource(synthetic_frames(*size), frames), latest=True, rate=fps, log=quiet)
    renderer = Renderer(manifest.classes, manifest.palette, RenderOptions(), manifest.ignore_index)
    report = run_pipeline(capture, backend, Preprocessor(manifest.input, backend.input_size), renderer, NullSink(),
                          queue_size=1, log=quiet)
    return {"latency_ms": report.latency_ms, "fps": report.fps, "shown": report.frames, "captured": report.captured,
            "dropped": report.dropped, "stages_ms": report.stages_ms}


def latest_section(plan: Plan, work: Path) -> dict[str, Any]:
    from benchmarks.pipeline_throughput import export_small_model
    from runtime.backends import open_backend
    from runtime.bench import bench_model

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


def gpu_section(plan: Plan, work: Path) -> dict[str, Any]:
    """DeepLab-V2 step time with AMP off vs auto (alternating runs), then DDP scaling under torchrun."""
    import torch

    if not torch.cuda.is_available():
        raise NotMeasured("no CUDA device on this machine")
    gpus = torch.cuda.device_count()
    per_gpu_batch = GPU_BATCH
    source, target, commands = synthetic_data(work / "data", max(16, per_gpu_batch * gpus), 2, plan.gpu_crop)
    base = [f"data.source.root={source}", f"data.target.root={target}", f"data.crop_size=[{plan.gpu_crop[0]}, {plan.gpu_crop[1]}]",
            "data.val_limit=2", "data.num_workers=4", "device=cuda", "model.name=deeplabv2_resnet101",
            f"source.iterations={plan.gpu_iterations}", "logging.log_every=5", "logging.checkpoint_every=100000",
            "logging.num_overlays=0"]
    result: dict[str, Any] = {"commands": commands, "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
                              "bf16_supported": torch.cuda.is_bf16_supported(), "per_gpu_batch": per_gpu_batch}
    try:
        result["amp"] = amp_comparison(plan, work, base, per_gpu_batch, commands)
    except Exception as exc:  # the DDP half can still be measured
        result["amp"] = {"failed": one_line(exc)}
    try:
        result["ddp"] = ddp_scaling(work, base, per_gpu_batch, gpus, commands)
    except Exception as exc:
        result["ddp"] = {"failed": one_line(exc)}
    return result


def amp_off_value() -> str:
    """The config's name for no mixed precision ("off" or "fp32"), read from TrainConfig's `amp` choices."""
    from adapt.train.config import TrainConfig

    choices = typing.get_args(typing.get_type_hints(TrainConfig).get("amp"))
    return "off" if "off" in choices or not choices else "fp32" if "fp32" in choices else choices[0]


def amp_comparison(plan: Plan, work: Path, base: list[str], batch: int, commands: list[str]) -> dict[str, Any]:
    """Single-GPU source stage with AMP off, then auto, `plan.gpu_rounds` times; appends what it ran to `commands`."""
    import yaml

    modes = (amp_off_value(), "auto")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    resolved = {}
    for r in range(plan.gpu_rounds):
        for mode in modes:
            run = work / f"amp_{mode}_{r}"
            overrides = [*base, f"data.batch_size={batch}", f'amp="{mode}"']  # quoted: YAML reads a bare `off` as false
            run_training(overrides, run, stage="source")
            commands.append(train_command(run, overrides, "--stage", "source"))
            rates[mode] += stage_rate(run / "source" / "metrics.jsonl")["values"]
            config = yaml.safe_load((run / "config.yaml").read_text())
            resolved[mode] = {k: config.get(k) for k in ("amp", "channels_last", "compile")}
    figures = {m: {**median_figure(v), "step_ms": 1000 * batch / statistics.median(v)} for m, v in rates.items()}
    return {"modes": list(modes), "rates": figures, "config": resolved,
            "speedup": figures["auto"]["median"] / figures[modes[0]]["median"]}


def ddp_scaling(work: Path, base: list[str], per_gpu_batch: int, gpus: int, commands: list[str]) -> dict[str, Any]:
    """Source stage under torchrun for 1, 2, 4, ... processes with the per-GPU batch held (data.batch_size is global)."""
    launcher = executable("torchrun")
    cli = executable("uda-adapt")
    rows = []
    for k in process_counts(gpus):
        run = work / f"ddp_{k}"
        overrides = [*base, f"data.batch_size={per_gpu_batch * k}", 'amp="auto"']
        command = [launcher, "--standalone", "--nproc_per_node", str(k), cli, "train", "--stage", "source",
                   "--out", str(run), *(a for o in overrides for a in ("--set", o))]
        commands.append(shlex.join(command))
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800, env=STARTING_ENVIRONMENT)
        rows.append({"processes": k, **stage_rate(run / "source" / "metrics.jsonl")})
    one = rows[0]["median"]
    for row in rows:
        row["speedup"] = row["median"] / one
        row["efficiency"] = row["speedup"] / row["processes"]
    return {"rows": rows}


def process_counts(gpus: int) -> list[int]:
    """1, 2, 4, ... up to `gpus`, and `gpus` itself."""
    return sorted({2 ** i for i in range(gpus.bit_length()) if 2 ** i <= gpus} | {gpus})


def executable(name: str) -> str:
    """`name` from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed in this environment; pip install -e '.[train]'")
    return found


# --- rendering ----------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def render_synth(data: dict) -> list[str]:
    rows = [[r["domain"], f"{r['size'][0]}x{r['size'][1]}", fmt(r["median"]), fmt(r["best"]), f"{len(r['rates'])} x {r['images']}",
             fmt(r["build_ms"]), fmt(r["render_ms"]), fmt(r["finish_ms"])] for r in data["rows"]]
    return ["Generation only (no disk writes), one OpenCV thread: the rate one data-loader worker gets.", "",
            *table(["domain", "size", "median img/s", "best img/s", "repeats x images", "build ms/img", "render ms/img",
                    "finish ms/img"], rows)]


def render_train(data: dict) -> list[str]:
    rows = [[name, fmt(s["median"]), s["n"], fmt(s["warmup_dropped"]), s["images_per_step"],
             fmt(1000 * s["images_per_step"] / s["median"], 0)] for name, s in data["stages"].items()]
    return [f"The small model on the CPU ({data['torch_threads']} torch threads), batch {TRAIN_BATCH} of 128x256 crops, "
            f"{data['iterations']} iterations per stage, `images_per_second` from each stage's metrics.jsonl "
            f"(one record per {LOG_EVERY} iterations; the first is warm-up and left out). The mean teacher's step "
            f"takes a source and a target batch ({2 * TRAIN_BATCH} images); IAST's pseudo-label rounds and evaluations fall "
            "outside the records.", "",
            *table(["stage", "median img/s", "records", "warm-up record img/s", "images/step", "ms/step"], rows)]


def render_correlation(data: dict) -> list[str]:
    rows = []
    for r in data["rows"]:
        sdpa, naive = r["sdpa"], r["naive"]
        label = f"{r['size'][0] * r['size'][1]:,} ({r['size'][0]}x{r['size'][1]})"
        if naive is None:
            rows.append([label, r["pass"], fmt(sdpa["peak_mb"]), f"skipped (would need {r['naive_needs_gb']:.1f} GB)", "-",
                         fmt(sdpa["median_s"], 3), "-", "-"])
        else:
            # Under 1 MB the SDPA path's growth is within RSS noise, and a ratio to it means nothing.
            memory = f"{r['memory_ratio']:.0f}x" if sdpa["peak_mb"] >= 1 else "n/a (SDPA under 1 MB)"
            rows.append([label, r["pass"], fmt(sdpa["peak_mb"]), fmt(naive["peak_mb"]), memory,
                         fmt(sdpa["median_s"], 3), fmt(naive["median_s"], 3), f"{r['time_ratio']:.2f}x"])
    first = data["rows"][0] if data["rows"] else {"repeats": 0, "processes": 0}
    return [f"Batch 1, 19 classes, d = 64. Each case runs in {first['processes']} fresh processes per implementation "
            f"(SDPA and naive alternating); peak MB is the median of their peak RSS growth, time the median of their "
            f"medians of {first['repeats']} runs.", "",
            *table(["tokens (h x w)", "pass", "SDPA peak MB", "naive peak MB", "naive / SDPA memory", "SDPA s", "naive s",
                    "naive / SDPA time"], rows)]


def render_export(data: dict) -> list[str]:
    rows = [[r["model"], f"{r['size'][0]}x{r['size'][1]}", fmt(r["pytorch_cpu_median_ms"]), fmt(r["ort_cpu_median_ms"]),
             f"{r['ort_speedup']:.2f}x", r["iters"],
             ", ".join(f"{c['precision']} {100 * c['pixel_agreement']:.3f} %" for c in r["parity"])] for r in data["rows"]]
    return [f"Argmax fused; PyTorch ({data['torch_threads']} threads) and ONNX Runtime (its default threads) alternate "
            "call by call on one input; medians after 3 warm-up calls.", "",
            *table(["model", "input", "PyTorch ms", "ORT ms", "ORT speed-up", "calls", "parity (pixel agreement)"], rows)]


def render_int8(data: dict) -> list[str]:
    lat = data["latency_ms"]
    rows = []
    for check in data["parity"]:
        delta = "n/a" if check.get("miou_delta") is None else f"{check['miou_delta']:+.2f}"
        figure = lat.get(check["precision"])
        rows.append([check["file"], fmt(figure["median"], 2) if figure else "-", figure["n"] if figure else "-",
                     f"{100 * check['pixel_agreement']:.3f} %", f">= {100 * check['min_agreement']:.1f} %", delta,
                     "pass" if check["passed"] else "FAIL"])
    size = f"{data['size'][0]}x{data['size'][1]}"
    lines = [f"The small model after a short source stage, exported at {size}; int8 is static Q/DQ calibrated on target "
             f"train images. ONNX Runtime CPU, the two files alternating call by call on one input. Parity is the export's "
             f"own gate against PyTorch on {data['parity_data'].get('n_images', '?')} target val images.", "",
             *table(["file", "median ms", "calls", "pixel agreement", "gate", "mIoU delta (pt)", "gate result"], rows), "",
             f"int8 / fp32 latency: {data['int8_over_fp32']:.2f}"]
    if data.get("gate_failure"):
        lines.append(f"The export refused the int8 model ({data['gate_failure']}): the latency is not at equal parity.")
    return lines


def render_pipeline(data: dict) -> list[str]:
    rows = [[i + 1, fmt(r["model_only_qps"], 2), fmt(r["pipeline_qps"], 2), f"{r['ratio']:.3f}"] for i, r in enumerate(data["rounds"])]
    return [f"{data['backend']}; in-memory frames -> capture -> preprocess -> infer -> overlay -> null sink, "
            "rounds alternating model-only and pipeline on one session.", "",
            *table(["round", "model-only qps", "pipeline qps", "pipeline / model-only"], rows), "",
            f"Median over {data['ratio']['n']} rounds: model-only {fmt(data['model_only_qps']['median'], 2)} qps, "
            f"pipeline {fmt(data['pipeline_qps']['median'], 2)} qps, ratio {data['ratio']['median']:.3f}."]


def render_latest(data: dict) -> list[str]:
    rows = [[i + 1, fmt(r["model_median_ms"]), fmt(r["latency_ms"]["p50"]), fmt(r["latency_ms"]["p90"]), f"{r['ratio']:.2f}",
             fmt(r["fps"]), f"{r['shown']} / {r['captured']} / {r['dropped']}"] for i, r in enumerate(data["rounds"])]
    return [f"The small model (ONNX Runtime) at {data['size'][0]}x{data['size'][1]}; a source paced at {data['camera_fps']:g} fps "
            "into the `--latest` pipeline (newest-frame slot, result queue of 1, overlay, null sink). End-to-end latency runs "
            "from capture to the sink; the model's own latency is `bench_model` on the same session, in alternating rounds.", "",
            *table(["round", "model median ms", "end-to-end p50 ms", "end-to-end p90 ms", "p50 / model", "fps at sink",
                    "shown / captured / dropped"], rows), "",
            f"Median over {data['ratio']['n']} rounds: model {fmt(data['model_ms']['median'])} ms, end-to-end "
            f"{fmt(data['latest_p50_ms']['median'])} ms, ratio {data['ratio']['median']:.2f}."]


def render_gpu(data: dict) -> list[str]:
    lines = [f"GPUs: {', '.join(data['gpus'])}; bf16 supported: {data['bf16_supported']}.", ""]
    amp = data["amp"]
    if "failed" in amp:
        lines.append(f"AMP comparison failed: {amp['failed']}")
    else:
        rows = [[m, fmt(amp["rates"][m]["median"]), amp["rates"][m]["n"], fmt(amp["rates"][m]["step_ms"]),
                 json.dumps(amp["config"].get(m, {}))] for m in amp["modes"]]
        lines += [f"DeepLab-V2 source stage, batch {data['per_gpu_batch']}, runs alternating between the two settings.", "",
                  *table(["amp", "median img/s", "records", "ms/step", "resolved config"], rows), "",
                  f"auto / {amp['modes'][0]} throughput: {amp['speedup']:.2f}x"]
    lines.append("")
    ddp = data["ddp"]
    if "failed" in ddp:
        lines.append(f"DDP scaling failed: {ddp['failed']}")
    else:
        rows = [[r["processes"], fmt(r["median"]), r["n"], f"{r['speedup']:.2f}x", f"{100 * r['efficiency']:.0f} %"] for r in ddp["rows"]]
        lines += [f"DDP under torchrun, {data['per_gpu_batch']} images per GPU (data.batch_size is the global batch), amp auto; "
                  "`images_per_second` as rank 0 records it.", "",
                  *table(["processes", "median img/s", "records", "speed-up", "efficiency"], rows)]
    return lines


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    measure: Callable[[Plan, Path], dict[str, Any]]
    render: Callable[[dict], list[str]]


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


# --- running and writing ------------------------------------------------------------------------

def one_line(exc: BaseException) -> str:
    """The exception as one line: its type and first line, and a failed command's last stderr line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        text += f" ({stderr.strip().splitlines()[-1].strip()})"
    return text


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


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "none"
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "gpu": gpu, "os": platform.platform(),
            "load_average_at_start": list(load) if load else None}


def versions() -> dict[str, str]:
    import common

    found = {"python": platform.python_version(), "uda-adapt": common.__version__}
    for label, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("opencv", "cv2"), ("numpy", "numpy"),
                          ("tensorrt", "tensorrt")):
        try:
            found[label] = __import__(module).__version__
        except ModuleNotFoundError:
            found[label] = "not installed"
        except (ImportError, OSError) as exc:  # e.g. a TensorRT wheel whose CUDA libraries are missing
            found[label] = f"not importable ({one_line(exc)})"
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False)
    found["git"] = git.stdout.strip() or "unknown"
    return found


def render_markdown(results: dict[str, Any]) -> str:
    machine, ver = results["machine"], results["versions"]
    lines = ["# Speed figures", "",
             f"Generated by benchmarks/run_all.py with `{results['command']}` ({results['mode']} mode) on "
             f"{results['started']}, {results['seconds']:.0f} s in all. Do not edit: rerun the command. Raw figures: "
             f"{results['json']}.", "",
             "## Machine", "",
             *table(["CPU", "cores", "RAM", "GPU", "OS", "load average at start"],
                    [[machine["cpu"], machine["cores"], f"{fmt(machine['ram_gib'])} GiB", machine["gpu"], machine["os"],
                      " ".join(f"{v:.2f}" for v in machine["load_average_at_start"] or [])]]), "",
             "## Versions", "",
             *table(list(ver), [list(ver.values())]), ""]
    for number, (name, section) in enumerate(SECTIONS.items(), 1):
        lines += [f"## {number}. {section.title}", ""]
        result = results["sections"].get(name)
        if result is None:
            lines += ["not run: not selected with --only in this invocation.", ""]
            continue
        if result["status"] != "ok":
            lines += [f"{result['status']}: {result['reason']}", ""]
        else:
            lines += [*section.render(result), ""]
        commands = result.get("commands", [])
        load = result.get("load_average_at_start")
        at_start = f" (1-minute load average {load:.2f} at its start)" if load is not None else ""
        lines += [f"Section time {result['seconds']:.0f} s{at_start}. This section alone: `{result['rerun']}`."]
        if commands:
            lines += ["Measured with (`$WORK`: the run's scratch directory):", "", "```", *commands, "```"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


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
    from common.atomic import atomic_write_text

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
    atomic_write_text(args.out, render_markdown(results))
    print(f"wrote {args.out} and {args.json} in {results['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
