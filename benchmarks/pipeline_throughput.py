"""End-to-end pipeline throughput vs model-only throughput, ONNX Runtime on the CPU.

Target: at 512x1024 the full pipeline (in-memory frames -> capture thread -> preprocess ->
infer -> overlay render -> null sink) reaches >= 0.95 of the throughput of `infer` alone,
measured in the same process on the same session: capture, pre- and post-processing overlap
inference instead of adding to it. Rounds alternate model-only and pipeline so that drift in
the machine's speed hits both; the medians and the median ratio are printed.

    python benchmarks/pipeline_throughput.py                       # small model, random weights
    python benchmarks/pipeline_throughput.py --model runs/demo/export/model.onnx --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
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
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(args.cv_threads)

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
