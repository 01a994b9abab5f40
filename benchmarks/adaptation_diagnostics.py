"""Why does (or doesn't) adaptation work? Cheap measurements on one saved checkpoint.

For a checkpoint (usually the source stage's), on the tune split (choose settings here) and the
target val split (report only):
  - mIoU with source BatchNorm statistics and with target statistics (AdaBN on target train);
  - mIoU with the network input rescaled by a few factors (the target camera is narrower);
  - with --module, the network followed by the correlation module (does its output beat the
    network's own, i.e. is it worth following?);
  - pseudo labels on target train: the fraction of pixels that get one and their accuracy,
    overall and per class, for a confidence threshold (target train labels are read for this
    diagnostic only; training never sees them).

    python benchmarks/adaptation_diagnostics.py runs/demo/run/source/last.pt \
        --data runs/demo/data/target --tune runs/tune --out benchmarks/results/diagnostics_seed0.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.adapt.evaluation import evaluate
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
from uda_adapt.adapt.train.correlation_stage import load_correlation_module
from uda_adapt.common.atomic import atomic_write_text


def scaled(model, factor: float):
    """The model run on its input resized by `factor` (logits come back at any size; evaluate upsamples)."""
    def run(images: torch.Tensor) -> torch.Tensor:
        if factor != 1.0:
            h, w = images.shape[-2:]
            images = F.interpolate(images, size=(round(h * factor), round(w * factor)), mode="bilinear", align_corners=False)
        return model(images)
    return run


def with_module(model, module):
    """The network followed by the correlation module, as log-probabilities."""
    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.log(module(torch.softmax(model(images), dim=1)).clamp_min(1e-8))
    return run


@torch.inference_mode()
def pseudo_label_quality(model, dataset, threshold: float, num_classes: int) -> dict:
    kept = np.zeros(num_classes, np.int64)
    correct = np.zeros(num_classes, np.int64)
    truth_pixels = np.zeros(num_classes, np.int64)
    total = 0
    for index in range(len(dataset)):
        image, truth = dataset[index]
        logits = model(image.unsqueeze(0))
        probs = torch.softmax(F.interpolate(logits, size=truth.shape, mode="bilinear", align_corners=False), 1)[0]
        confidence, label = probs.max(0)
        label, truth, keep = label.numpy(), truth.numpy(), (confidence >= threshold).numpy()
        valid = truth != 255
        total += int(valid.sum())
        truth_pixels += np.bincount(truth[valid], minlength=256)[:num_classes]
        sel = keep & valid
        kept += np.bincount(label[sel], minlength=num_classes)[:num_classes]
        correct += np.bincount(label[sel & (label == truth)], minlength=num_classes)[:num_classes]
    return {
        "threshold": threshold,
        "labelled_fraction": float(kept.sum() / max(total, 1)),
        "accuracy": float(correct.sum() / max(kept.sum(), 1)),
        "per_class_labelled_fraction": (kept / np.maximum(truth_pixels, 1)).round(4).tolist(),
        "per_class_accuracy": (correct / np.maximum(kept, 1)).round(4).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="target folder dataset (train: AdaBN + pseudo labels; val: report)")
    parser.add_argument("--tune", required=True, help="labelled tune folder dataset (its val split)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.968])
    parser.add_argument("--teacher", action="store_true", help="a mean-teacher checkpoint: measure its EMA teacher")
    parser.add_argument("--no-adabn", action="store_true", help="only the checkpoint's own BatchNorm statistics")
    parser.add_argument("--module", action="store_true",
                        help="also score the network followed by the checkpoint's correlation module: would following it help?")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    ckpt = load_checkpoint(args.checkpoint)
    transform = EvalTransform(mean=ckpt.mean, std=ckpt.std)
    splits = {"tune": open_dataset("folder", args.tune, "val", require_labels=True, transform=transform),
              "target_val": open_dataset("folder", args.data, "val", require_labels=True, transform=transform)}
    target_train = open_dataset("folder", args.data, "train", require_labels=False, transform=transform)
    labelled_train = open_dataset("folder", args.data, "train", require_labels=True, transform=transform)
    network = build_model(ckpt).eval()
    if args.teacher:
        network.load_state_dict(ckpt.extra["teacher"])
    models = {"own_bn": network}   # the checkpoint's own statistics (a source checkpoint: source ones)
    if not args.no_adabn:
        models["target_bn"] = copy.deepcopy(network)
        reestimate_batchnorm(models["target_bn"], target_train, torch.device("cpu"))
    num_classes = len(ckpt.classes)

    report: dict = {"checkpoint": args.checkpoint, "teacher": args.teacher, "miou": {}, "pseudo_labels": {}}
    for bn_name, model in models.items():
        for factor in args.scales:
            for split, dataset in splits.items():
                result = evaluate(scaled(model, factor), dataset, progress=False)
                report["miou"][f"{bn_name} scale {factor:g} {split}"] = round(100 * result.miou, 2)
                print(f"{bn_name:9s} scale {factor:<5g} {split:10s} mIoU {100 * result.miou:.2f}", flush=True)
        if args.module:
            module = load_correlation_module(ckpt.extra["correlation"], num_classes).eval()
            for split, dataset in splits.items():
                result = evaluate(with_module(model, module), dataset, progress=False)
                report["miou"][f"{bn_name} + module {split}"] = round(100 * result.miou, 2)
                print(f"{bn_name:9s} + module   {split:10s} mIoU {100 * result.miou:.2f}", flush=True)
        for threshold in args.thresholds:
            quality = pseudo_label_quality(model, labelled_train, threshold, num_classes)
            report["pseudo_labels"][f"{bn_name} >= {threshold:g}"] = quality
            print(f"{bn_name:9s} pseudo labels at {threshold:g}: {100 * quality['labelled_fraction']:.1f} % of pixels, "
                  f"{100 * quality['accuracy']:.1f} % correct", flush=True)
    report["classes"] = list(ckpt.classes)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
