"""ONNX Runtime (CPU) vs PyTorch (CPU) latency of the exported graph, at 512x1024 by default.

Each model is exported with `export_model` (argmax fused, parity gate on synthetic inputs),
then the same input runs through the PyTorch module that was exported (model + upsample +
argmax) and through the ONNX file in ONNX Runtime, alternating call by call so that drift in
the machine's speed hits both. Prints the medians, the ratio, and the parity figures.

    python benchmarks/export_latency.py                        # small, and lraspp_mobilenet_v3_large if present
    python benchmarks/export_latency.py --models small --iters 30 --size 512x1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uda_adapt.adapt.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint  # noqa: E402
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE  # noqa: E402
from uda_adapt.adapt.models import MODEL_BUILDERS, build_segmenter  # noqa: E402
from uda_adapt.export.api import export_model  # noqa: E402
from uda_adapt.common.preprocess import DEFAULT_INPUT_SIZE  # noqa: E402
from uda_adapt.export.config import ExportConfig  # noqa: E402
from uda_adapt.export.onnx_export import DeployWrapper  # noqa: E402


def bench_model(name: str, workdir: Path, size: tuple[int, int], iters: int, warmup: int, threads: int) -> dict:
    import onnxruntime as ort

    ckpt_path = workdir / f"{name}.pt"
    torch.manual_seed(0)
    net = build_segmenter(name, len(CITYSCAPES_CLASSES))
    save_checkpoint(ckpt_path, Checkpoint(name, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, net.state_dict()))
    result = export_model(ckpt_path, workdir / name, ExportConfig(size=size, parity_num=3))

    wrapper = DeployWrapper(build_model(load_checkpoint(ckpt_path))).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
    session = ort.InferenceSession(str(workdir / name / "model.onnx"), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    x_torch = torch.from_numpy(x)
    torch_times, ort_times = [], []
    with torch.inference_mode():
        for i in range(warmup + iters):
            start = time.perf_counter()
            wrapper(x_torch)
            middle = time.perf_counter()
            session.run(None, {"image": x})
            end = time.perf_counter()
            if i >= warmup:
                torch_times.append(middle - start)
                ort_times.append(end - middle)
    torch_ms, ort_ms = 1000 * statistics.median(torch_times), 1000 * statistics.median(ort_times)
    return {
        "model": name,
        "size": list(size),
        "iters": iters,
        "threads": threads or "default",
        "pytorch_cpu_median_ms": round(torch_ms, 2),
        "ort_cpu_median_ms": round(ort_ms, 2),
        "ort_speedup": round(torch_ms / ort_ms, 3),
        "parity": [c.to_dict() for c in result.parity_checks],
        "simplified": result.manifest.exporter["simplified"],
    }


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_models = [m for m in ("small", "lraspp_mobilenet_v3_large") if m in MODEL_BUILDERS]
    parser.add_argument("--models", nargs="+", default=default_models, choices=sorted(MODEL_BUILDERS))
    parser.add_argument("--size", type=_size, default=DEFAULT_INPUT_SIZE, metavar="HxW", help="network input size")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="Threads for both runtimes (0: each runtime's default, one per core).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    import onnxruntime as ort

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} "
          f"({args.threads or 'default'} threads), {args.iters} iterations after {args.warmup} warm-up, input {args.size[0]}x{args.size[1]}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = bench_model(name, Path(tmp), tuple(args.size), args.iters, args.warmup, args.threads)
            results.append(row)
            agreement = ", ".join(f"{c['precision']} {100 * c['pixel_agreement']:.3f} %" for c in row["parity"])
            print(f"{name:>28}: PyTorch {row['pytorch_cpu_median_ms']:8.1f} ms   ORT {row['ort_cpu_median_ms']:8.1f} ms   "
                  f"ORT speed-up x{row['ort_speedup']:.2f}   parity {agreement}   simplify {row['simplified']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
