"""The measuring half of benchmarks/device_check.py: what its steps run in child processes.

Each task writes one JSON file of numbers; device_check.py reads it and holds the numbers to
thresholds. Kept apart so that the checklist itself imports no torch, TensorRT or OpenCV.

    python benchmarks/device_check_tasks.py data WORK
    python benchmarks/device_check_tasks.py export CKPT OUT --precision fp16 --data WORK/data/target [--calib DIR]
    python benchmarks/device_check_tasks.py latency WORK OUT.json
    python benchmarks/device_check_tasks.py agreement BUNDLE CLIP OUT.json
    python benchmarks/device_check_tasks.py amp OUT.json
    python benchmarks/device_check_tasks.py resume WORK OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (128, 256)                 # export and latency size: small, so builds take seconds
LATENCY_ITERS = 200
AGREEMENT_FRAMES = 30             # real-clip frames compared, spread over the clip


def write_data(work: Path) -> None:
    """WORK/data/{source,target}/{train,val} from the synthetic generator (8 and 2 images), and WORK/clip.mp4."""
    from uda_adapt.adapt.data.synth import write_split

    for name, domain in (("source", "sim"), ("target", "real")):
        for split, num in (("train", 8), ("val", 2)):
            write_split(work / "data" / name, domain, split, num, SIZE, 0, progress=False)
    write_clip(work / "clip.mp4")


def write_clip(path: Path, frames: int = 40) -> None:
    """A street-like BGR clip at twice the export size, so `run` resizes (synthetic: not a real camera)."""
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


def export_smoke(ckpt: Path, out: Path, precision: str, data: Path, calib: Path | None) -> dict[str, Any]:
    """An export whose accuracy gates are open: a model trained for seconds cannot pass them.

    Opened, not skipped: the parity check still runs and its agreement is reported, so a
    broken variant shows as a number; the engine is judged against its own ONNX instead
    (`uda-adapt check`, `agreement` on real frames), where the gates stay closed.
    """
    from uda_adapt.common.gates import GATES, Gate
    from uda_adapt.export.api import export_model
    from uda_adapt.export.config import ExportConfig

    for name in list(GATES):
        GATES[name] = Gate(0.0, None)
    config = ExportConfig(size=SIZE, precision=precision, parity_data=str(data), parity_num=4,
                          calib_data=str(calib) if calib else None, calib_num=8)
    result = export_model(ckpt, out, config, force=True, log=lambda message: print(message, file=sys.stderr))
    return {"precision": precision, "gates": "open (smoke run)",
            "parity": [{"file": c.file, "pixel_agreement": c.pixel_agreement} for c in result.parity_checks]}


def measure_latency(work: Path, iters: int = LATENCY_ITERS) -> dict[str, Any]:
    """Median model-only latency of each runner on one input, alternating runner by runner, round by round."""
    import numpy as np

    from uda_adapt.common.manifest import read_manifest
    from uda_adapt.runtime.backends.onnxruntime_backend import CPU_EP, CUDA_EP, OnnxRuntimeBackend
    from uda_adapt.runtime.backends.tensorrt_backend import TensorRTBackend
    from uda_adapt.runtime.backends.torch_backend import TorchBackend

    import onnxruntime

    runners: dict[str, Any] = {}
    # fp32 and fp16 engines in the fp16 bundle, the explicit (Q/DQ) int8 one in the int8 bundle.
    for bundle, precisions in ((work / "fp16", ("fp32", "fp16")), (work / "int8", ("int8",))):
        engines = read_manifest(bundle / "model.json").engines if (bundle / "model.json").is_file() else []
        for engine in engines:
            if engine.precision in precisions and engine.dla_core is None:
                runners[f"tensorrt_{engine.precision}"] = TensorRTBackend(bundle / engine.file)

    ort_ep = CUDA_EP if CUDA_EP in onnxruntime.get_available_providers() else CPU_EP
    runners[f"onnxruntime_{'cuda' if ort_ep == CUDA_EP else 'cpu'}_fp32"] = OnnxRuntimeBackend(
        work / "fp16" / "model.onnx", providers=[ort_ep])
    runners["torch_fp32"] = TorchBackend(work / "train" / "source" / "last.pt", input_size=SIZE)
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
    return {"size": list(SIZE), "iters": iters,
            "median_ms": {name: 1000 * statistics.median(values) for name, values in times.items()}}


def real_frame_agreement(bundle: Path, clip: Path, frames: int = AGREEMENT_FRAMES) -> dict[str, Any]:
    """Pixel agreement of each engine with the fp32 ONNX (CUDA or CPU ONNX Runtime) on frames of a real clip.

    Parity pictures are few and come from the training data; a camera clip is what the engine
    will see. Masks are compared at the network's resolution, through the input contract.
    """
    import cv2
    import numpy as np

    from uda_adapt.common.manifest import read_manifest
    from uda_adapt.common.preprocess import prepare_input
    from uda_adapt.runtime.backends import open_backend
    from uda_adapt.runtime.check import reference_providers

    manifest = read_manifest(bundle / "model.json")
    capture = cv2.VideoCapture(str(clip))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or frames
    wanted = set(np.linspace(0, max(count - 1, 0), frames).astype(int).tolist())
    pictures, index = [], 0
    while len(pictures) < len(wanted):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            pictures.append(prepare_input(frame, manifest.input))
        index += 1
    capture.release()
    if not pictures:
        raise SystemExit(f"no frame could be read from {clip}")
    reference = open_backend(bundle / manifest.onnx_file, "ort", providers=reference_providers())
    masks = [reference.infer(x) for x in pictures]
    result: dict[str, Any] = {"clip": clip.name, "frames": len(pictures), "reference": reference.providers[0], "engines": {}}
    reference.close()
    for engine in manifest.engines:
        runner = open_backend(bundle / engine.file, "trt")
        same = sum(int((runner.infer(x) == want).sum()) for x, want in zip(pictures, masks))
        runner.close()
        result["engines"][engine.file] = {"precision": engine.precision,
                                          "pixel_agreement": same / sum(m.size for m in masks)}
    return result


def amp_speedup(size: tuple[int, int] = (512, 1024), batch: int = 8, steps: int = 20) -> dict[str, Any]:
    """Training step time of the default network in fp32 and under autocast, alternating, on CUDA."""
    import torch

    from uda_adapt.adapt.models import build_segmenter

    device = torch.device("cuda")
    model = build_segmenter("deeplabv3_mobilenet_v3_large", 19, None).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=device)
    y = torch.randint(0, 19, (batch, *size), device=device)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    def step(amp: bool) -> float:
        torch.cuda.synchronize()                              # a sync point on purpose: we time whole steps
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=amp):
            out = model(x)
            logits = out["out"] if isinstance(out, dict) else out
            logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(3):
        step(False), step(True)
    fp32, amp = [], []
    for _ in range(steps):
        fp32.append(step(False))
        amp.append(step(True))
    return {"size": list(size), "batch": batch, "amp_dtype": str(dtype).removeprefix("torch."),
            "fp32_step_ms": 1000 * statistics.median(fp32), "amp_step_ms": 1000 * statistics.median(amp),
            "amp_speedup": statistics.median(fp32) / statistics.median(amp)}


def sigkill_resume(work: Path) -> dict[str, Any]:
    """Source training on CUDA, SIGKILLed right after its first checkpoint, resumed; against unbroken runs.

    Two unbroken runs measure how far CUDA's own nondeterminism (atomics in some backward
    kernels) moves the weights; the resumed run must be identical to them, or differ no more
    than they differ from each other (`nondeterminism_max_abs`).
    """
    import torch

    from uda_adapt.adapt.checkpoint import load_checkpoint
    from tests.adapt.test_resume import KILLER

    data = work / "data"
    settings = [f"data.source.root={data / 'source'}", f"data.target.root={data / 'target'}", "device=cuda",
                "data.crop_size=[64, 128]", "data.batch_size=2", "model.name=small", "source.iterations=6",
                "self_train.method=iast", "self_train.rounds=1", "self_train.iterations_per_round=2",
                "logging.log_every=1", "logging.checkpoint_every=2", "logging.num_overlays=0", "data.val_limit=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

    def train(run: Path, kill_after: int) -> int:
        # KILLER trains through the Python API, as tests/adapt/test_resume.py does; a count it never
        # reaches trains without a kill.
        done = subprocess.run([sys.executable, "-c", KILLER, "source", str(kill_after), str(run), *settings], env=env,
                              capture_output=True, text=True)
        if done.returncode not in (0, -signal.SIGKILL):
            raise SystemExit(f"training in {run} failed: {done.stderr[-800:]}")
        return done.returncode

    runs = {name: work / f"resume_{name}" for name in ("straight", "again", "killed")}
    for folder in runs.values():
        shutil.rmtree(folder, ignore_errors=True)
    train(runs["straight"], 10**6)
    train(runs["again"], 10**6)
    if train(runs["killed"], 1) != -signal.SIGKILL:
        raise SystemExit("the run was not SIGKILLed at its first checkpoint")
    train(runs["killed"], 10**6)                      # the same command again: resumes

    def weights(name: str) -> dict[str, Any]:
        return load_checkpoint(runs[name] / "source" / "last.pt").state_dict

    def max_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, int]:
        diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()]
        return max(diffs, default=0.0), sum(d == 0.0 for d in diffs)

    straight = weights("straight")
    resumed_max, identical = max_diff(straight, weights("killed"))
    noise_max, _ = max_diff(straight, weights("again"))
    tensors = sum(1 for v in straight.values() if v.is_floating_point())
    return {"tensors": tensors, "within_noise": identical if resumed_max > noise_max else tensors,
            "identical_bitwise": identical, "max_abs_difference": resumed_max, "nondeterminism_max_abs": noise_max,
            "cuda": torch.cuda.get_device_name(0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("data").add_argument("work", type=Path)
    export = sub.add_parser("export")
    export.add_argument("ckpt", type=Path)
    export.add_argument("out", type=Path)
    export.add_argument("--precision", default="fp16")
    export.add_argument("--data", type=Path, required=True)
    export.add_argument("--calib", type=Path, default=None)
    for name in ("latency", "resume"):
        task = sub.add_parser(name)
        task.add_argument("work", type=Path)
        task.add_argument("json", type=Path)
    agreement = sub.add_parser("agreement")
    agreement.add_argument("bundle", type=Path)
    agreement.add_argument("clip", type=Path)
    agreement.add_argument("json", type=Path)
    sub.add_parser("amp").add_argument("json", type=Path)
    copy = sub.add_parser("copy")
    copy.add_argument("source", type=Path)
    copy.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.task == "data":
        write_data(args.work)
        return 0
    if args.task == "copy":
        shutil.rmtree(args.dest, ignore_errors=True)
        shutil.copytree(args.source, args.dest)
        return 0
    if args.task == "export":
        print(json.dumps(export_smoke(args.ckpt, args.out, args.precision, args.data, args.calib)))
        return 0
    result = {"latency": lambda: measure_latency(args.work), "resume": lambda: sigkill_resume(args.work),
              "agreement": lambda: real_frame_agreement(args.bundle, args.clip), "amp": amp_speedup}[args.task]()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
