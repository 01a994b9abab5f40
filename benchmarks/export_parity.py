"""How closely each export precision agrees with PyTorch on this machine's CPU kernels.

The tests check what the parity gate records and how it decides, never the agreement level,
because fp16 and int8 kernels differ between CPUs (an untrained network's int8 model agreed
on 45.2 % of pixels on one AMD EPYC). This script measures the level: it exports a checkpoint
at fp32, fp16 and int8 (Q/DQ calibrated on the data's train images) and prints ONNX Runtime's
pixel agreement and mIoU delta against PyTorch for each, with the gate it would have to pass.

Without --checkpoint it measures the tests' case: the untrained `small` network with BatchNorm
statistics taken on random images, on generated target-style scenes.

    python benchmarks/export_parity.py
    python benchmarks/export_parity.py --checkpoint runs/demo/run/self_train/last.pt --data runs/demo/data/target
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uda_adapt.adapt.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE  # noqa: E402
from uda_adapt.adapt.models import build_segmenter  # noqa: E402
from uda_adapt.export.api import export_model  # noqa: E402
from uda_adapt.export.config import ExportConfig  # noqa: E402
from uda_adapt.export.parity import GATES, Gate  # noqa: E402


def untrained_checkpoint(path: Path, size: tuple[int, int], seed: int) -> Path:
    """The small model, random weights, BatchNorm statistics from one batch of random images (as in the tests)."""
    torch.manual_seed(seed)
    model = build_segmenter("small", len(CITYSCAPES_CLASSES))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, *size) * 4 - 2)
    save_checkpoint(path, Checkpoint("small", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, model.state_dict()))
    return path


def measure(ckpt: Path, data: Path, work: Path, size: tuple[int, int], calib_num: int, parity_num: int) -> list[dict]:
    """One export per precision with every gate open, so each is measured, not refused."""
    real_gates = dict(GATES)
    GATES.update({name: Gate(0.0, None) for name in GATES})
    rows = []
    try:
        for precision in ("fp32", "fp16", "int8"):
            extra = {"calib_data": data / "train" / "images", "calib_num": calib_num} if precision == "int8" else {}
            config = ExportConfig(size=size, precision=precision, parity_data=data, parity_num=parity_num, **extra)
            result = export_model(ckpt, work / precision, config, force=True)
            check = result.parity_checks[-1]
            gate = real_gates[precision]
            rows.append({"precision": precision, "pixel_agreement": check.pixel_agreement, "miou_delta": check.miou_delta,
                         "gate": gate.min_agreement, "max_miou_drop": gate.max_miou_drop,
                         "would_pass": check.pixel_agreement >= gate.min_agreement
                         and not (gate.max_miou_drop is not None and check.miou_delta is not None
                                  and -check.miou_delta > gate.max_miou_drop)})
    finally:
        GATES.update(real_gates)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="A uda-adapt checkpoint (default: the tests' untrained network).")
    parser.add_argument("--data", type=Path, help="A folder dataset with train/images and val (default: generated).")
    parser.add_argument("--size", default="64x128", metavar="HxW", help="network input size, as on the command line")
    parser.add_argument("--calib-num", type=int, default=8)
    parser.add_argument("--parity-num", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    import onnxruntime as ort

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            from uda_adapt.adapt.data.synth import write_split

            for split in ("train", "val"):
                write_split(work / "data", "real", split, max(args.calib_num, args.parity_num), size, args.seed, progress=False)
            data = work / "data"
        ckpt = args.checkpoint or untrained_checkpoint(work / "small.pt", size, args.seed)
        rows = measure(ckpt, data, work / "exports", size, args.calib_num, args.parity_num)

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"{'untrained small network' if args.checkpoint is None else args.checkpoint}, {size[0]}x{size[1]}")
    for row in rows:
        delta = "n/a" if row["miou_delta"] is None else f"{row['miou_delta']:+.2f}"
        print(f"{row['precision']:>5}: pixel agreement {100 * row['pixel_agreement']:7.3f} %  mIoU delta {delta:>6} pt  "
              f"(gate >= {100 * row['gate']:.1f} %: {'pass' if row['would_pass'] else 'FAIL'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
