"""End-to-end pipeline throughput vs model-only throughput, ONNX Runtime on the CPU.

Target: at 512x1024 the full pipeline (in-memory frames -> capture thread -> preprocess ->
infer -> overlay render -> null sink) reaches >= 0.95 of the throughput of `infer` alone,
measured in the same process on the same session: capture, pre- and post-processing overlap
inference instead of adding to it. Rounds alternate model-only and pipeline so that drift in
the machine's speed hits both; the medians and the median ratio are printed.

    python benchmarks/pipeline_throughput.py                       # small model, random weights
    python benchmarks/pipeline_throughput.py --model runs/demo/export/model.onnx --rounds 5

With --video FILE the pipeline side is `uda-adapt run` itself (`run_stream`: the file decoded,
preprocessed, inferred, rendered and encoded to an mp4 with the default codec) and the other
side a bare ONNX Runtime loop over the same ONNX (a session with default options, one input
prepared once): what a user compares. --make-video writes a 768x576 clip to use there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uda_adapt.runtime.backends import open_backend  # noqa: E402
from uda_adapt.runtime.backends.base import Backend  # noqa: E402
from uda_adapt.runtime.bench import bench_model, bench_pipeline, host_info  # noqa: E402


def export_small_model(directory: Path, height: int, width: int) -> Path:
    """The `small` segmenter with random weights, exported as the runtime expects (mask output)."""
    import torch

    from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from uda_adapt.adapt.models import build_segmenter, upsample_logits
    from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec, manifest_for, write_manifest

    class MaskModel(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return upsample_logits(self.net(image), tuple(image.shape[-2:])).argmax(1).to(torch.int32)

    torch.manual_seed(0)
    path = directory / "model.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model = MaskModel(build_segmenter("small", len(CITYSCAPES_CLASSES)).eval())
        torch.onnx.export(model, torch.randn(1, 3, height, width), str(path), input_names=["image"], output_names=["mask"], dynamo=False, opset_version=17)
    write_manifest(manifest_for(path), Manifest(classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, input=InputSpec(size=(height, width)), output=OutputSpec(), model_name="small"))
    return path


def alternate_rounds(backend: Backend, size: tuple[int, int], warmup: int, iters: int, rounds: int,
                     on_round: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Model-only then pipeline on the same session, `rounds` times, so drift in the machine's speed hits both."""
    shape = (1, 3, *backend.input_size)
    quiet = lambda message: None  # noqa: E731
    results = []
    for r in range(rounds):
        only = bench_model(backend, shape, warmup, iters)
        full = bench_pipeline(backend, size, warmup, iters, log=quiet)
        ratio = full["throughput_qps"] / only["throughput_qps"]
        results.append({"model_only_qps": only["throughput_qps"], "pipeline_qps": full["throughput_qps"], "ratio": ratio,
                        "model_only_median_ms": only["latency_ms"]["median"], "pipeline_stages_ms": full["stages_ms"]})
        if on_round is not None:
            on_round(r, results[-1])
    return results


def bare_onnxruntime_qps(model: Path, shape: tuple[int, ...], warmup: int, iters: int,
                         session: object | None = None) -> float:
    """Throughput of a plain InferenceSession (default options) on one prepared input: the user's baseline."""
    import numpy as np
    import onnxruntime as ort

    session = session or ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {name: x})
    t0 = time.perf_counter()
    for _ in range(iters):
        session.run(None, {name: x})
    return iters / (time.perf_counter() - t0)


def alternate_video_rounds(model: Path, video: Path, warmup: int, iters: int, rounds: int,
                           threads: int | None, codec: str | None, output: str | None,
                           on_round: Callable[[int, dict], None] | None = None) -> list[dict]:
    """A bare ORT loop, then `uda-adapt run` over `video` (to an mp4) as shipped, at one priority, and with prefetch, `rounds` times."""
    import onnxruntime as ort

    from uda_adapt.common.manifest import manifest_for, read_manifest
    from uda_adapt.runtime.stream import RunConfig, run_stream

    size = read_manifest(manifest_for(model)).input.size
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            load = os.getloadavg()[0]
            bare = bare_onnxruntime_qps(model, (1, 3, *size), warmup, iters, session)
            row: dict = {"bare_onnxruntime_qps": bare, "load_average": load}
            # `run` as shipped, then at the caller's priority (--side-nice 0), then with prefetch.
            arms = {"run": {}, "run_same_priority": {"side_nice": 0}, "run_prefetch": {"prefetch": True}}
            for key, change in arms.items():
                config = RunConfig(model=str(model), input=str(video), output=output or str(Path(tmp) / "out.mp4"),
                                   headless=True, max_frames=warmup + iters, threads=threads, codec=codec, progress=False,
                                   **change)
                report = run_stream(config, log=lambda message: None)
                row.update({f"{key}_fps": report.fps, f"{key}_ratio": report.fps / bare, f"{key}_stages_ms": report.stages_ms})
            row["ratio"] = row["run_ratio"]
            results.append(row)
            if on_round is not None:
                on_round(r, results[-1])
    return results


def stage_cpu_costs(model: Path, video: Path, frames: int = 40, infer_iters: int = 8) -> dict[str, float]:
    """CPU milliseconds per frame of each stage of `uda-adapt run`, one stage at a time.

    CPU clocks, not wall time: a machine shared with other jobs stretches wall time several
    times over but changes the CPU work of a stage far less, so these add up to what an idle
    machine must do per frame. Inference is measured with ONNX Runtime's workers sleeping (as
    the runtime runs it) and spinning (its default).
    """
    import numpy as np
    import onnxruntime as ort

    from uda_adapt.common.manifest import manifest_for, read_manifest
    from uda_adapt.runtime.preprocess import Preprocessor
    from uda_adapt.runtime.render import Renderer, RenderOptions

    def cpu_ms(step: Callable[[int], object], n: int) -> float:
        t0 = time.process_time()
        for i in range(n):
            step(i)
        return 1000 * (time.process_time() - t0) / n

    manifest = read_manifest(manifest_for(model))
    capture, decoded = cv2.VideoCapture(str(video)), []
    costs = {"decode": cpu_ms(lambda i: decoded.append(capture.read()[1]), frames)}
    capture.release()
    preprocess = Preprocessor(manifest.input, manifest.input.size)
    costs["preprocess"] = cpu_ms(lambda i: preprocess(decoded[i]), frames)
    x = np.ascontiguousarray(preprocess(decoded[0]))
    sessions = {}
    for spin in ("0", "1"):
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        sessions[spin] = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = sessions["0"].get_inputs()[0].name
    mask = sessions["0"].run(None, {name: x})[0][0]
    renderer, rendered = Renderer(manifest.classes, manifest.palette, RenderOptions()), []
    costs["render"] = cpu_ms(lambda i: rendered.append(renderer.render(decoded[i], mask, 12.3)), frames)
    with tempfile.TemporaryDirectory() as tmp:
        height, width = decoded[0].shape[:2]
        writer = cv2.VideoWriter(str(Path(tmp) / "out.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
        costs["encode_mp4v"] = cpu_ms(lambda i: writer.write(rendered[i]), frames)
        writer.release()
    for spin, session in sessions.items():
        session.run(None, {name: x})
        costs[f"infer_{'spinning' if spin == '1' else 'sleeping'}"] = cpu_ms(lambda i: session.run(None, {name: x}), infer_iters)
    others = costs["decode"] + costs["preprocess"] + costs["render"] + costs["encode_mp4v"]
    costs["cpu_bound_ceiling"] = costs["infer_sleeping"] / (costs["infer_sleeping"] + others)
    return costs


def make_video(path: Path, images: Path, frames: int = 300, size: tuple[int, int] = (576, 768)) -> None:
    """A 768x576 mp4v clip panning slowly across the images of a folder (25 fps)."""
    import numpy as np

    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no images in {images}")
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for index in range(frames):
        image = cv2.imread(str(files[(index // 25) % len(files)]))
        big = cv2.resize(image, (int(w * 1.25), int(h * 1.25)))
        x = (index % 25) * (big.shape[1] - w) // 25
        writer.write(np.ascontiguousarray(big[: h, x: x + w]))
    writer.release()


def _print_video_round(r: int, row: dict) -> None:
    print(f"round {r + 1}: load {row['load_average']:.2f}; bare onnxruntime {row['bare_onnxruntime_qps']:.3f} qps; "
          f"run {row['run_fps']:.3f} fps (ratio {row['run_ratio']:.3f}); "
          f"same priority {row['run_same_priority_fps']:.3f} fps (ratio {row['run_same_priority_ratio']:.3f}); "
          f"run with prefetch {row['run_prefetch_fps']:.3f} fps (ratio {row['run_prefetch_ratio']:.3f})  stages ms: "
          + ", ".join(f"{k} {v:.1f}" for k, v in row["run_stages_ms"].items()), flush=True)


def _print_round(r: int, row: dict) -> None:
    print(f"round {r + 1}: model-only {row['model_only_qps']:.3f} qps, pipeline {row['pipeline_qps']:.3f} qps, ratio {row['ratio']:.3f}  "
          f"(stages ms: " + ", ".join(f"{k} {v:.1f}" for k, v in row["pipeline_stages_ms"].items()) + ")", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported .onnx with model.json beside it [default: small model, random weights]")
    parser.add_argument("--size", default="512x1024", help="HxW [default: 512x1024]")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads [default: ORT's]")
    parser.add_argument("--spin", action="store_true", help="let ONNX Runtime's workers spin (the runtime turns it off)")
    parser.add_argument("--cv-threads", type=int, default=1, help="OpenCV threads for pre/post [default: 1, as `uda-adapt run`]")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--video", type=Path, help="compare `uda-adapt run` over this video with a bare ONNX Runtime loop")
    parser.add_argument("--codec", default=None, help="--video: the run's --codec [default: uda-adapt run's]")
    parser.add_argument("--output", default=None, help="--video: the run's output [default: an mp4 in a temporary folder]")
    parser.add_argument("--make-video", type=Path, metavar="MP4", help="write a 768x576 clip from --images, then exit")
    parser.add_argument("--images", type=Path, help="--make-video: a folder of images")
    parser.add_argument("--cpu-costs", action="store_true", help="--video: CPU ms per frame of each stage, then exit")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(args.cv_threads)
    if args.make_video:
        make_video(args.make_video, args.images)
        return
    if args.video and args.cpu_costs:
        with tempfile.TemporaryDirectory() as tmp:
            model = args.model or export_small_model(Path(tmp), height, width)
            costs = stage_cpu_costs(model, args.video)
        print(json.dumps({**costs, "load_average": os.getloadavg()[0]}, indent=2))
        return
    if args.video:
        with tempfile.TemporaryDirectory() as tmp:
            model = args.model or export_small_model(Path(tmp), height, width)
            rounds = alternate_video_rounds(model, args.video, args.warmup, args.iters, args.rounds, args.threads,
                                            args.codec, args.output, on_round=_print_video_round)
        summary = {"video": str(args.video), "size": [height, width], "iters": args.iters, "rounds": rounds,
                   "codec": args.codec, "output": args.output, "threads": args.threads,
                   "median_bare_onnxruntime_qps": statistics.median(r["bare_onnxruntime_qps"] for r in rounds),
                   "median_run_fps": statistics.median(r["run_fps"] for r in rounds),
                   "median_ratio": statistics.median(r["ratio"] for r in rounds),
                   "median_same_priority_ratio": statistics.median(r["run_same_priority_ratio"] for r in rounds),
                   "median_prefetch_ratio": statistics.median(r["run_prefetch_ratio"] for r in rounds),
                   "run_ahead_of_same_priority": sum(r["run_fps"] > r["run_same_priority_fps"] for r in rounds), "host": host_info()}
        print(f"median: bare onnxruntime {summary['median_bare_onnxruntime_qps']:.3f} qps, uda-adapt run "
              f"{summary['median_run_fps']:.3f} fps, ratio {summary['median_ratio']:.3f} (target >= 0.95; at one priority "
              f"{summary['median_same_priority_ratio']:.3f}, ahead in {summary['run_ahead_of_same_priority']} of {len(rounds)} "
              f"rounds; with prefetch {summary['median_prefetch_ratio']:.3f})")
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or export_small_model(Path(tmp), height, width)
        backend = open_backend(model, "ort", threads=args.threads, spin=args.spin)
        print(f"backend: {backend.describe()}", file=sys.stderr)
        rounds = alternate_rounds(backend, (height, width), args.warmup, args.iters, args.rounds, on_round=_print_round)
        backend.close()

    summary = {
        "size": [height, width], "backend": backend.describe(), "threads": args.threads, "spin": args.spin, "cv_threads": args.cv_threads,
        "iters": args.iters, "rounds": rounds,
        "median_model_only_qps": statistics.median(r["model_only_qps"] for r in rounds),
        "median_pipeline_qps": statistics.median(r["pipeline_qps"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "host": host_info(),
    }
    print(f"median: model-only {summary['median_model_only_qps']:.3f} qps, pipeline {summary['median_pipeline_qps']:.3f} qps, "
          f"pipeline / model-only = {summary['median_ratio']:.3f} (target >= 0.95)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
