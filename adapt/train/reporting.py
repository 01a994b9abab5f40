"""Evaluation at the end of a stage: target-val mIoU, per-class table, overlays, best checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.adapt.evaluation import EvalResult, confusion_of
from uda_adapt.adapt.images import write_rgb
from uda_adapt.adapt.models import upsample_logits
from uda_adapt.adapt.train.distributed import all_reduce_sum
from uda_adapt.adapt.train.label_free_report import has_split, report_label_free
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.stage_io import RunContext
from uda_adapt.adapt.visualize import comparison_strip


def target_val_dataset(ctx: RunContext):
    spec = ctx.cfg.data.target
    return open_dataset(spec.kind, spec.root, spec.val_split, require_labels=False,
                        transform=EvalTransform(size=ctx.cfg.data.eval_size, mean=ctx.mean, std=ctx.std))


def evaluate_stage(ctx: RunContext, model_fn, stage_dir: Path, tag: str, step: int, log: Logbook) -> EvalResult | None:
    """Evaluate on the labelled target val split (if it has labels) and write eval.json + overlays.

    Returns None when the target has no val labels (or no val split): the label-free measures
    are reported instead (adapt/train/label_free_report.py).
    Distributed, rank r scores images r, r + N, ... and the confusion matrices are summed; every
    rank gets the result, rank 0 alone writes files.
    """
    dataset = target_val_dataset(ctx) if has_split(ctx.cfg.data.target, ctx.cfg.data.target.val_split) else None
    if dataset is None or not dataset.has_labels:
        report_label_free(ctx, model_fn, stage_dir, tag, step, log)
        return None
    if ctx.cfg.data.val_limit:
        dataset = _Subset(dataset, range(min(ctx.cfg.data.val_limit, len(dataset))))
    dist = ctx.dist
    mine = _Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    confusion = confusion_of(model_fn, mine, device=ctx.device, progress=dist.is_main)
    confusion.counts = all_reduce_sum(confusion.counts.to(ctx.device), dist)
    result = EvalResult.from_confusion(confusion, dataset.classes, len(dataset))
    if not dist.is_main:
        return result
    payload = {"tag": tag, "step": step, **result.to_dict()}
    atomic_write_text(stage_dir / f"eval_{tag}.json", json.dumps(payload, indent=2) + "\n")
    log.write(step, miou=result.miou, pixel_accuracy=result.pixel_accuracy)
    print(f"\n{tag}: target val mIoU {100 * result.miou:.2f}\n{result.format_table()}")
    write_overlays(ctx, model_fn, dataset, stage_dir / "overlays", tag)
    return result


def write_overlays(ctx: RunContext, model_fn, dataset, out_dir: Path, tag: str) -> None:
    count = min(ctx.cfg.logging.num_overlays, len(dataset))
    for index in range(count):
        image, truth = dataset.load(index)
        tensor, _ = dataset[index]
        with torch.inference_mode():
            logits = model_fn(tensor.unsqueeze(0).to(ctx.device))
            prediction = upsample_logits(logits.float(), truth.shape if truth is not None else image.shape[:2]).argmax(1)[0]
        strip = comparison_strip(image, prediction.cpu().numpy().astype(np.uint8), truth, ctx.palette)
        write_rgb(out_dir / f"{tag}_{dataset.stems[index]}.jpg", strip)


def network_fn(model: nn.Module):
    """The plain network as an evaluation function: normalised images -> logits."""
    def run(images: torch.Tensor) -> torch.Tensor:
        return model(images)
    return run


def keep_best(result: EvalResult | None, best_so_far: float, save_best) -> float:
    """Write `best.pt` when this evaluation beats the best so far (target-val labels only)."""
    if result is None or math.isnan(result.miou) or result.miou <= best_so_far:
        return best_so_far
    save_best()
    return result.miou


class _Subset(torch.utils.data.Dataset):
    """Some items of a dataset, in order, keeping its load/stems/classes interface."""

    def __init__(self, base, indices) -> None:
        self.base, self.indices = base, list(indices)
        self.stems = [base.stems[i] for i in self.indices]
        self.has_labels, self.classes, self.palette = base.has_labels, base.classes, base.palette

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    def load(self, index: int):
        return self.base.load(self.indices[index])
