"""A stage's evaluation when the target has no labels: the label-free measures instead of mIoU.

Scored on the target val images when the split exists (e.g. `data capture --val-fraction`),
else on the first target train images. Writes `RUN/<stage>/label_free_<tag>.json`, logs the
validated measure (`common.label_free.VALIDATED`) to metrics.jsonl and prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.label_free_eval import load_target_images, network_predictor, source_label_share
from uda_adapt.adapt.train.config import DatasetConfig
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.stage_io import RunContext
from uda_adapt.common import label_free
from uda_adapt.common.atomic import atomic_write_text

# Source labels read for the class-share measure: enough for a stable distribution.
SOURCE_SHARE_IMAGES = 100


def has_split(spec: DatasetConfig, split: str) -> bool:
    """False only for a folder dataset without ROOT/<split>/images (a captured target without val/)."""
    return spec.kind != "folder" or (Path(spec.root) / split / "images").is_dir()


def unlabelled_target_images(ctx: RunContext):
    """(images RGB uint8 (N, H, W, 3), the split they come from): val if the target has 2 or more, else train."""
    spec, size = ctx.cfg.data.target, ctx.cfg.data.eval_size
    split = spec.val_split if has_split(spec, spec.val_split) else spec.train_split
    dataset = open_dataset(spec.kind, spec.root, split, require_labels=False)
    if len(dataset) < 2 and split != spec.train_split:      # a tiny captured val: the measures need pairs
        split, dataset = spec.train_split, open_dataset(spec.kind, spec.root, spec.train_split, require_labels=False)
    return load_target_images(dataset, tuple(size) if size else None), split


def report_label_free(ctx: RunContext, model_fn, stage_dir: Path, tag: str, step: int, log: Logbook) -> dict | None:
    """The measures of `model_fn` (normalised images -> logits, eval mode) on unlabelled target images; rank 0 only."""
    if not ctx.dist.is_main:
        return None
    images, split = unlabelled_target_images(ctx)
    source = ctx.cfg.data.source
    share = source_label_share(source.kind, source.root, source.train_split, len(ctx.classes), SOURCE_SHARE_IMAGES)
    values = label_free.measure_images(network_predictor(model_fn, ctx.mean, ctx.std, ctx.device), images,
                                       num_classes=len(ctx.classes), source_share=share)
    payload = {"tag": tag, "step": step, "split": split, "images": len(images), "validated": label_free.VALIDATED,
               "measures": values}
    atomic_write_text(stage_dir / f"label_free_{tag}.json", json.dumps(payload, indent=2) + "\n")
    scores = {name: values[name] for name in label_free.RANKS_MODELS if values[name] is not None}
    log.write(step, **{f"label_free_{name}": value for name, value in scores.items()})
    shown = "  ".join(f"{name} {value:.4f}" for name, value in scores.items())
    print(f"\n{tag}: target has no labels; label-free {shown} on {len(images)} target {split} images")
    return values


def final_line(run_dir: str | Path) -> str | None:
    """The closing line of a run without target labels: the validated measure, source stage -> last stage."""
    run = Path(run_dir)
    scores = {}
    for stage in ("source", "self_train"):
        files = sorted((run / stage).glob("label_free_*.json"), key=lambda p: p.stat().st_mtime)
        files = [p for p in files if p.stem != "label_free_teacher"]     # the EMA teacher is a diagnostic
        value = json.loads(files[-1].read_text())["measures"][label_free.VALIDATED] if files else None
        if value is not None:
            scores[stage] = value
    if not scores:
        return None
    name = label_free.VALIDATED
    direction = "higher" if label_free.MEASURES[name].higher_is_better else "lower"
    if len(scores) == 2:
        return (f"target has no labels: label-free {name} source only {scores['source']:.4f} -> adapted "
                f"{scores['self_train']:.4f} ({direction} is better; see benchmarks/results/label_free.md)")
    stage, value = next(iter(scores.items()))
    return f"target has no labels: label-free {name} after {stage} {value:.4f} ({direction} is better)"
