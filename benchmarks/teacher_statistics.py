"""Which BatchNorm statistics does the mean teacher label the target with, mid-training?

Reads a mean-teacher `last.pt` written during training (its `teacher` and, when saved, its
`reference`: the starting network) and scores on the target val split:
  teacher, running statistics   what labels the target during training (teacher_bn=running)
  teacher, target statistics    the same weights, BatchNorm re-estimated on target train images
  student, running statistics   the student as training leaves it
  start network                 the network self-training started from (target statistics)
A large gap between the first two says the teacher's statistics, an average over source and
mixed batches, are what degrade the pseudo labels on this shift, not its weights.

    python benchmarks/teacher_statistics.py RUN/self_train/last.pt --data DATA/target [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint  # noqa: E402
from uda_adapt.adapt.data import open_dataset  # noqa: E402
from uda_adapt.adapt.data.transforms import EvalTransform  # noqa: E402
from uda_adapt.adapt.evaluation import evaluate  # noqa: E402
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="target folder dataset (train read without labels, val scored)")
    parser.add_argument("--val-limit", type=int, default=0, help="score the first N val images only (0: all)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    transform = EvalTransform(mean=ckpt.mean, std=ckpt.std)
    train = open_dataset("folder", args.data, "train", require_labels=False, transform=transform)
    val = open_dataset("folder", args.data, "val", require_labels=True, transform=transform)
    if args.val_limit:
        val = torch.utils.data.Subset(val, range(min(args.val_limit, len(val))))

    def network(state: dict):
        model = build_model(ckpt)
        model.load_state_dict(state)
        return model.eval()

    rows = {}
    rows["teacher, running statistics"] = evaluate(network(ckpt.extra["teacher"]), val, progress=False).miou
    adapted = network(ckpt.extra["teacher"])
    reestimate_batchnorm(adapted, train, torch.device("cpu"), 8)
    rows["teacher, target statistics"] = evaluate(adapted, val, progress=False).miou
    rows["student, running statistics"] = evaluate(network(ckpt.state_dict), val, progress=False).miou
    if ckpt.extra.get("reference"):
        rows["start network"] = evaluate(network(ckpt.extra["reference"]), val, progress=False).miou
    print(f"{args.checkpoint} (step {ckpt.step})")
    for name, miou in rows.items():
        print(f"  {name:<30} {100 * miou:5.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "step": ckpt.step, "miou": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
