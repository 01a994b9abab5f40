"""The correlation gate: is a correlation module better than the network it would teach?

Before any self-training run, fit a candidate module (its usual iterations) and report, per class
and overall:
  (i)   network + module against the network on *clean source val* (the source network, source
        BatchNorm statistics): does the module improve anything where it was fitted?
  (ii)  adapted EMA teacher + module against the teacher alone on the *tune* split (the teacher of
        a finished default run, BatchNorm statistics re-estimated on target train, as exported):
        would following SA(p) improve on p where correlation transfer uses it?
  (iii) pseudo-label precision against coverage on tune: pixels ranked by max SA(p) and labelled
        argmax SA(p), against the teacher's own ranking (max p, argmax p) as the baseline curve;
        summarised by the mean precision over coverages 5 %, 10 %, ..., 100 %. Both maps are read
        alike (log-probabilities upsampled to the labels, then softmax), so an identity module
        scores exactly the teacher's curve.
A variant passes when on (ii) it beats the teacher with no class losing more than 2 points, and
its (iii) curve is above the teacher's on average. A module that does not pass cannot help as a
teacher: it earns no self-training runs.

    python benchmarks/correlation_gate.py --source runs/a28/day/seed0/base/correlation/last.pt \\
        --teacher "runs/a28/day/seed0/mean teacher/self_train/last.pt" --data runs/shared/day-data \\
        --tune runs/shared/day-tune --out benchmarks/results/correlation_gate --threads 1

Writes OUT.json (every number) and OUT.md (the table), atomically, after each variant, so an
interrupted gate keeps what it measured and `--resume` skips variants already in OUT.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform, TrainTransform
from uda_adapt.adapt.evaluation import ConfusionMatrix, EvalResult, evaluate
from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.train.batches import BatchStream
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
from uda_adapt.adapt.train.config import CorrelationConfig, TrainConfig
from uda_adapt.adapt.train.correlation_stage import FitInputs, build_correlation_module, image_pixels, module_fn, network_outputs
from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError

MAX_CLASS_LOSS = 0.02          # (ii): no class may lose more than 2 IoU points
COVERAGES = tuple(round(0.05 * i, 2) for i in range(1, 21))
CONFIDENCE_BINS = 2000         # (iii) ranks pixels by confidence in this many equal bins

# name -> (correlation config overrides, what the module is fitted on: the "source" network or the
# adapted "teacher", as the live refit fits it). "default" is the config's own module.
VARIANTS: dict[str, tuple[dict, str]] = {
    "default": ({}, "source"),
    "old default (value bias)": ({"value_bias": True}, "source"),
    "window 9": ({"window": 9}, "source"),
    "window 9, query p+features": ({"window": 9, "query": "both"}, "source"),
    "fit target BN": ({"fit_bn": "target"}, "source"),
    "fit on the teacher (live refit)": ({}, "teacher"),
    "window 9, p+features, fit on the teacher": ({"window": 9, "query": "both"}, "teacher"),
    "window 9, p+features, target BN, masked, balanced": (
        {"window": 9, "query": "both", "fit_bn": "target", "fit_mask_ratio": 0.5, "fit_class_balanced": True}, "source"),
    "query p+features": ({"query": "both"}, "source"),
    "fit masked (MIC blocks 0.5)": ({"fit_mask_ratio": 0.5}, "source"),
    "fit class-balanced": ({"fit_class_balanced": True}, "source"),
    "early stop on source val": ({"early_stop_every": 25}, "source"),
    "attention temperature 0.5": ({"temperature": 0.5}, "source"),
    "query features": ({"query": "features"}, "source"),
    "value p, window 9, query p+features": ({"value": "prediction", "window": 9, "query": "both"}, "source"),
    "fit clean (no perturbation)": ({"fit_perturbation": 0.0}, "source"),
    "fit clean, window 9, p+features": ({"fit_perturbation": 0.0, "window": 9, "query": "both"}, "source"),
    "fit clean, on the teacher": ({"fit_perturbation": 0.0}, "teacher"),
    "lr 1e-3": ({"optim.lr": 1e-3}, "source"),
    "window 9, p+features, early stop": ({"window": 9, "query": "both", "early_stop_every": 25}, "source"),
    "window 9, p+features, on the teacher, early stop": ({"window": 9, "query": "both", "early_stop_every": 25}, "teacher"),
    "fit clean, window 9, p+features, on the teacher": ({"fit_perturbation": 0.0, "window": 9, "query": "both"}, "teacher"),
    "window 5, p+features, on the teacher": ({"window": 5, "query": "both"}, "teacher"),
    "window 9, p+features, position bias": ({"window": 9, "query": "both", "position_bias": True}, "source"),
    "window 9, p+features, upsample 2": ({"window": 9, "query": "both", "upsample": 2}, "source"),
    "window 9, p+features, position bias, on the teacher, early stop": (
        {"window": 9, "query": "both", "position_bias": True, "early_stop_every": 25}, "teacher"),
    "window 9, p+features, upsample 2, on the teacher, early stop": (
        {"window": 9, "query": "both", "upsample": 2, "early_stop_every": 25}, "teacher"),
}


@dataclass
class GateInputs:
    """The networks and splits every variant is measured on."""

    source_network: torch.nn.Module      # source BatchNorm statistics: (i) and the default fit
    target_bn_source: torch.nn.Module    # the source network with target statistics (fit_bn=target)
    teacher: torch.nn.Module             # the adapted EMA teacher, target statistics: (ii), (iii)
    source_train: object
    source_val: object
    tune: object
    classes: list[str]
    mean: tuple
    std: tuple


# ---- (iii): precision against coverage ----------------------------------------------------------

class PrecisionCoverage:
    """Counts pixels and correct labels per confidence bin, to read precision at any coverage."""

    def __init__(self, bins: int = CONFIDENCE_BINS) -> None:
        self.total = np.zeros(bins, np.int64)
        self.correct = np.zeros(bins, np.int64)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """`probs` (C, H, W) at the labels' size; `labels` (H, W) with IGNORE_INDEX unlabelled."""
        confidence, predicted = probs.max(dim=0)
        valid = labels != IGNORE_INDEX
        bins = (confidence[valid].clamp(0, 1 - 1e-7) * len(self.total)).long().numpy()
        hit = (predicted[valid] == labels[valid]).numpy()
        self.total += np.bincount(bins, minlength=len(self.total))
        self.correct += np.bincount(bins, weights=hit, minlength=len(self.correct)).astype(np.int64)

    def curve(self, coverages=COVERAGES) -> list[float]:
        return precision_at_coverages(self.total, self.correct, coverages)


def precision_at_coverages(total: np.ndarray, correct: np.ndarray, coverages=COVERAGES) -> list[float]:
    """Precision of the most confident `coverage` share of pixels, for each coverage.

    `total`, `correct`: pixel counts per confidence bin, lowest confidence first. The share is
    reached by taking whole bins from the most confident down, then the needed part of the
    next bin at that bin's own precision (ties inside a bin have no order).
    """
    total, correct = np.asarray(total, np.float64)[::-1], np.asarray(correct, np.float64)[::-1]
    pixels = total.sum()
    if pixels == 0:
        return [math.nan for _ in coverages]
    cum_total, cum_correct = np.cumsum(total), np.cumsum(correct)
    out = []
    for coverage in coverages:
        want = coverage * pixels
        index = int(np.searchsorted(cum_total, want))
        index = min(index, len(total) - 1)
        before_total = cum_total[index - 1] if index else 0.0
        before_correct = cum_correct[index - 1] if index else 0.0
        part = want - before_total
        bin_precision = correct[index] / total[index] if total[index] else 0.0
        out.append(float((before_correct + part * bin_precision) / want))
    return out


# ---- the verdict -------------------------------------------------------------------------------

def per_class_delta(base: dict[str, float | None], other: dict[str, float | None]) -> dict[str, float]:
    """other - base per class, for classes scored in both (a class in neither split is None/NaN)."""
    out = {}
    for name, value in base.items():
        theirs = other.get(name)
        if value is None or theirs is None or math.isnan(value) or math.isnan(theirs):
            continue
        out[name] = theirs - value
    return out


def gate_verdict(teacher_iou: dict[str, float | None], module_iou: dict[str, float | None],
                 teacher_curve: list[float], module_curve: list[float], max_class_loss: float = MAX_CLASS_LOSS) -> dict:
    """Pass/fail of the gate, with the reasons: (ii) mIoU up and no class down more than
    `max_class_loss`, and (iii) the mean precision over coverages up."""
    deltas = per_class_delta(teacher_iou, module_iou)
    miou_delta = float(np.mean(list(deltas.values()))) if deltas else math.nan
    worst_class, worst = min(deltas.items(), key=lambda item: item[1]) if deltas else (None, math.nan)
    curve_delta = float(np.nanmean(module_curve) - np.nanmean(teacher_curve))
    reasons = []
    if not miou_delta > 0:
        reasons.append(f"does not beat the teacher on tune ({100 * miou_delta:+.2f} mIoU)")
    if worst_class is not None and worst < -max_class_loss - 1e-9:   # exactly the limit is allowed
        reasons.append(f"{worst_class} loses {-100 * worst:.1f} points (limit {100 * max_class_loss:.0f})")
    if not curve_delta > 0:
        reasons.append(f"pseudo-label precision over coverage does not improve ({100 * curve_delta:+.2f})")
    return {"passed": not reasons, "reasons": reasons, "tune_miou_delta": miou_delta,
            "worst_class": worst_class, "worst_class_delta": worst, "precision_coverage_delta": curve_delta}


# ---- measuring ---------------------------------------------------------------------------------

def fit_module(c: CorrelationConfig, fit_on: str, inputs: GateInputs, iterations: int, batch_size: int, seed: int = 0):
    """Fit the module `c` describes as the correlation stage does (or on the teacher, as the live refit)."""
    network = {"source": inputs.target_bn_source if c.fit_bn == "target" else inputs.source_network,
               "teacher": inputs.teacher}[fit_on]
    torch.manual_seed(seed)
    module = build_correlation_module(c, len(inputs.classes), network).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=c.optim.lr)
    stream = BatchStream(inputs.source_train, batch_size, seed=seed)
    fit_inputs = FitInputs(c, inputs.mean, inputs.std)
    generator = torch.Generator().manual_seed(seed + 6)
    best_state, best_score, best_step = None, -math.inf, 0
    for step in range(iterations):
        images, labels = stream.next()
        valid = image_pixels(images)
        logits, features = network_outputs(network, fit_inputs(images, generator), module.needs_features)
        loss = correlation_fit_loss(module, logits, labels, valid=valid, class_balanced=c.fit_class_balanced, features=features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if c.early_stop_every and (step + 1) % c.early_stop_every == 0:
            module.eval()
            subset = _first(inputs.source_val, c.early_stop_images)
            score = evaluate(module_fn(inputs.source_network, module), subset, progress=False).miou
            module.train()
            if score > best_score:
                best_state, best_score, best_step = copy.deepcopy(module.state_dict()), score, step + 1
    if best_state is not None:
        module.load_state_dict(best_state)
    return module.eval(), {"final_loss": float(loss.item()), "early_stop_step": best_step or None}


@torch.no_grad()
def split_scores(model_fn, dataset) -> tuple:
    """(EvalResult, precision-coverage curve) of `model_fn` (image -> log-probabilities or logits) on a
    labelled split, in one pass. Both read the same map: log-probabilities upsampled bilinearly to
    the label size, then softmax, as `evaluate` scores it, so that a module that returns p gets
    exactly the teacher's numbers."""
    confusion, curve = ConfusionMatrix(len(dataset.classes)), PrecisionCoverage()
    for index in range(len(dataset)):
        image, label = dataset[index]
        scores = F.interpolate(model_fn(image.unsqueeze(0)).float(), size=tuple(label.shape[-2:]), mode="bilinear",
                               align_corners=False)[0]
        confusion.update(scores.argmax(dim=0), label)
        curve.update(torch.softmax(scores, dim=0), label)
    return EvalResult.from_confusion(confusion, dataset.classes, len(dataset)), curve.curve()


def baselines(inputs: GateInputs) -> dict:
    """The networks alone: source network on source val, teacher on tune (and its curve)."""
    source = evaluate(inputs.source_network, inputs.source_val, progress=False)
    teacher, curve = split_scores(inputs.teacher, inputs.tune)
    return {"source_val": _scores(source), "tune": _scores(teacher), "tune_precision_coverage": curve}


def variant_config(overrides: dict) -> CorrelationConfig:
    """The default correlation config with `overrides` (keys of CorrelationConfig; "optim.lr" for its rate)."""
    plain = {k: v for k, v in overrides.items() if k != "optim.lr"}
    c = replace(CorrelationConfig(), **plain)
    if "optim.lr" in overrides:
        c = replace(c, optim=replace(c.optim, lr=overrides["optim.lr"]))
    return c


def measure_variant(name: str, inputs: GateInputs, base: dict, iterations: int, batch_size: int, seed: int = 0) -> dict:
    overrides, fit_on = VARIANTS[name]
    c = variant_config(overrides)
    start = time.perf_counter()
    module, fit = fit_module(c, fit_on, inputs, iterations, batch_size, seed)
    with torch.no_grad():
        source = evaluate(module_fn(inputs.source_network, module), inputs.source_val, progress=False)
    tune, module_curve = split_scores(module_fn(inputs.teacher, module), inputs.tune)
    verdict = gate_verdict(base["tune"]["per_class"], tune.per_class_iou, base["tune_precision_coverage"], module_curve)
    return {
        "overrides": overrides, "fit_on": fit_on, "iterations": iterations, "seconds": round(time.perf_counter() - start, 1),
        **fit,
        "source_val": _scores(source), "tune": _scores(tune),
        "source_val_delta": per_class_delta(base["source_val"]["per_class"], source.per_class_iou),
        "tune_delta": per_class_delta(base["tune"]["per_class"], tune.per_class_iou),
        "tune_precision_coverage": module_curve,
        "verdict": verdict,
    }


def _scores(result) -> dict:
    return {"miou": result.miou, "per_class": {k: (None if math.isnan(v) else v) for k, v in result.per_class_iou.items()}}


def _first(dataset, count: int):
    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    subset.classes, subset.has_labels = dataset.classes, True
    return subset


# ---- the report --------------------------------------------------------------------------------

def markdown_report(report: dict) -> str:
    """The gate table: one row per variant, then per-class deltas on tune."""
    base = report["baseline"]
    lines = [
        "# Correlation gate",
        "",
        f"Source network: `{report['source']}`; adapted EMA teacher: `{report['teacher']}` (target BatchNorm statistics).",
        f"Fit: {report['iterations']} iterations, batch {report['batch_size']}, seed {report['seed']}. "
        f"Networks alone: source val {100 * base['source_val']['miou']:.2f} mIoU, teacher on tune "
        f"{100 * base['tune']['miou']:.2f} mIoU, teacher's mean precision over coverage "
        f"{100 * float(np.nanmean(base['tune_precision_coverage'])):.2f}.",
        "",
        f"Pass rule: on tune, teacher + module beats the teacher (mIoU) with no class losing more than "
        f"{100 * MAX_CLASS_LOSS:.0f} points, and the mean precision over coverages 5-100 % of argmax SA(p) ranked by "
        "max SA(p) is above the teacher's own (argmax p ranked by max p).",
        "",
        "| variant | fit on | (i) source val, net+module - net | (ii) tune, teacher+module - teacher | worst class on tune "
        "| (iii) precision over coverage | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["variants"].items():
        v = row["verdict"]
        worst = f"{v['worst_class']} {100 * v['worst_class_delta']:+.1f}" if v["worst_class"] else "-"
        lines.append(
            f"| {name} | {row['fit_on']} | {100 * (row['source_val']['miou'] - base['source_val']['miou']):+.2f} "
            f"| {100 * v['tune_miou_delta']:+.2f} | {worst} | {100 * v['precision_coverage_delta']:+.2f} "
            f"| {'PASS' if v['passed'] else 'fail: ' + '; '.join(v['reasons'])} |")
    classes = report["classes"]
    lines += ["", "Per-class IoU change on tune (points), teacher + module against the teacher:", "",
              "| variant | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, row in report["variants"].items():
        cells = [f"{100 * row['tune_delta'][c]:+.1f}" if c in row["tune_delta"] else "-" for c in classes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per-class IoU change on clean source val (points), source network + module against it:", "",
              "| variant | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, row in report["variants"].items():
        cells = [f"{100 * row['source_val_delta'][c]:+.1f}" if c in row["source_val_delta"] else "-" for c in classes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""] + [f"Command: `{command}`" for command in report.get("commands", [report["command"]])] + [""]
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown_report(report))


# ---- entry point -------------------------------------------------------------------------------

def load_inputs(source_path: str, teacher_path: str, data: str, tune: str, crop_size=(128, 256)) -> GateInputs:
    source_ckpt, teacher_ckpt = load_checkpoint(source_path), load_checkpoint(teacher_path)
    if tuple(source_ckpt.classes) != tuple(teacher_ckpt.classes):
        raise UserError(f"{source_path} and {teacher_path} have different class sets; give the source and teacher of one run")
    evaluation = EvalTransform(mean=source_ckpt.mean, std=source_ckpt.std)
    source_network = build_model(source_ckpt).requires_grad_(False)
    teacher = build_model(teacher_ckpt).requires_grad_(False)
    if "teacher" in teacher_ckpt.extra and teacher_ckpt.extra["teacher"] is not None:
        teacher.load_state_dict(teacher_ckpt.extra["teacher"])
    else:
        print(f"{teacher_path} holds no separate EMA teacher: using its network", flush=True)
    target_train = open_dataset("folder", f"{data}/target", "train", require_labels=False, transform=evaluation)
    device = torch.device("cpu")
    reestimate_batchnorm(teacher, target_train, device)                 # as exported (self_train.target_bn)
    target_bn_source = copy.deepcopy(source_network)
    reestimate_batchnorm(target_bn_source, target_train, device)
    train_transform = TrainTransform(crop_size=tuple(crop_size), scale_range=(0.75, 1.25), jitter=0.2,
                                     mean=source_ckpt.mean, std=source_ckpt.std)   # the config's source crops
    return GateInputs(
        source_network=source_network.eval(), target_bn_source=target_bn_source.eval(), teacher=teacher.eval(),
        source_train=open_dataset("folder", f"{data}/source", "train", require_labels=True, transform=train_transform),
        source_val=open_dataset("folder", f"{data}/source", "val", require_labels=True, transform=evaluation),
        tune=open_dataset("folder", tune, "val", require_labels=True, transform=evaluation),
        classes=list(source_ckpt.classes), mean=tuple(source_ckpt.mean), std=tuple(source_ckpt.std),
    )


def run_gate(inputs: GateInputs, variants: list[str], out: Path, *, iterations: int, batch_size: int, seed: int = 0,
             source: str = "", teacher: str = "", command: str = "", resume: bool = False) -> dict:
    """Measure every variant, writing the report after each; returns it."""
    previous = json.loads(out.with_suffix(".json").read_text()) if resume and out.with_suffix(".json").exists() else None
    report = previous or {"source": source, "teacher": teacher, "iterations": iterations, "batch_size": batch_size,
                          "seed": seed, "classes": inputs.classes, "command": command,
                          "baseline": baselines(inputs), "variants": {}}
    if previous and command and command not in previous.get("commands", [previous["command"]]):
        report["commands"] = [*previous.get("commands", [previous["command"]]), command]   # variants added by a later call
    for name in variants:
        if name in report["variants"]:
            continue
        row = measure_variant(name, inputs, report["baseline"], iterations, batch_size, seed)
        report["variants"][name] = row
        v = row["verdict"]
        print(f"{name:55s} (ii) {100 * v['tune_miou_delta']:+6.2f}  worst {v['worst_class']} {100 * v['worst_class_delta']:+5.1f}  "
              f"(iii) {100 * v['precision_coverage_delta']:+6.2f}  {'PASS' if v['passed'] else 'fail'}  {row['seconds']:.0f} s", flush=True)
        write_report(report, out)
    write_report(report, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="the run's source or correlation-stage checkpoint (the source network)")
    parser.add_argument("--teacher", required=True, help="the finished mean-teacher run's self_train/last.pt (its EMA teacher)")
    parser.add_argument("--data", required=True, help="benchmark root with source/ and target/")
    parser.add_argument("--tune", required=True, help="labelled tune folder dataset (its val split)")
    parser.add_argument("--out", required=True, help="report path without suffix: OUT.json and OUT.md")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="NAME",
                        help="variants to measure (default: all): " + "; ".join(VARIANTS))
    parser.add_argument("--iterations", type=int, default=CorrelationConfig().iterations)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().data.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep the variants already in OUT.json")
    args = parser.parse_args(argv)
    unknown = [name for name in args.variants if name not in VARIANTS]
    try:
        if unknown:
            raise UserError(f"unknown gate variant {unknown[0]!r}; valid variants: {'; '.join(VARIANTS)}")
        if args.threads:
            torch.set_num_threads(args.threads)
        inputs = load_inputs(args.source, args.teacher, args.data, args.tune)
        command = "python benchmarks/correlation_gate.py " + " ".join(_quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        run_gate(inputs, args.variants, Path(args.out), iterations=args.iterations, batch_size=args.batch_size, seed=args.seed,
                 source=args.source, teacher=args.teacher, command=command, resume=args.resume)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(ch in arg for ch in " ,()+") else arg


if __name__ == "__main__":
    sys.exit(main())
