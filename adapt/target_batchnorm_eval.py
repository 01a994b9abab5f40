"""The free part of adaptation, measured: a checkpoint's network with its BatchNorm statistics
re-estimated on the unlabelled target train images (AdaBN), no training, scored on target val.

The demo prints it between "source only" and "adapted", and the ablation reports it as the
`source + AdaBN` row: whatever self-training adds must be measured against this floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.adapt.evaluation import EvalResult, evaluate
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
from uda_adapt.common.atomic import atomic_write_text


@dataclass(frozen=True)
class TargetData:
    """Where the target domain lives: `train_split` is read without labels, `val_split` with."""

    root: str | Path
    kind: str = "folder"
    train_split: str = "train"
    val_split: str = "val"


def evaluate_with_target_batchnorm(checkpoint: str | Path, target: TargetData, *, batch_size: int = 8,
                                   tune_root: str | Path | None = None, json_path: str | Path | None = None,
                                   progress: bool = False) -> tuple[EvalResult, float | None]:
    """Target val result (and tune-split mIoU when `tune_root`, a folder dataset, is given) of the
    checkpoint's network after AdaBN on the target train images; CPU, batch size as in training.

    The target train split is opened with `require_labels=False` and only its images reach the
    network: labels there, if any, are loaded with the images and dropped. With `json_path`, writes
    {"miou", "per_class_iou", "tune_miou"?} there.
    """
    ckpt = load_checkpoint(checkpoint)
    transform = EvalTransform(mean=ckpt.mean, std=ckpt.std)
    model = build_model(ckpt)
    unlabelled = open_dataset(target.kind, target.root, target.train_split, require_labels=False, transform=transform)
    reestimate_batchnorm(model, unlabelled, torch.device("cpu"), batch_size)
    result = evaluate(model, open_dataset(target.kind, target.root, target.val_split, require_labels=True, transform=transform),
                      progress=progress)
    tune_miou = None
    if tune_root is not None:
        tune = open_dataset("folder", tune_root, "val", require_labels=True, transform=transform)
        tune_miou = evaluate(model, tune, progress=progress).miou
    if json_path is not None:
        payload = {"checkpoint": str(checkpoint), "miou": result.miou, "per_class_iou": result.to_dict()["per_class_iou"]}
        if tune_miou is not None:
            payload["tune_miou"] = tune_miou
        atomic_write_text(Path(json_path), json.dumps(payload, indent=2) + "\n")
    return result, tune_miou
