"""Label-free signs that self-training is degrading (no target label is read).

Self-training can fall below its own starting point on a strong shift while the teacher grows
*more* confident, so confidence alone cannot be the alarm. Three signals that need no target
labels are tracked every step of the mean teacher:

- `source_acc`: the student's pixel accuracy on its labelled source batch. A student that
  forgets the source task as it drifts on the target shows it here first.
- `pred_tv`: total-variation distance between the class shares the teacher predicts on target
  pixels and the class shares of the source labels (both running averages). A collapse onto a
  few classes moves it up.
- vanished classes: predicted on more than 0.5 % of target pixels over the first steps and on
  less than 0.05 % now.

`DriftMonitor` keeps running class shares (saved in the stage checkpoint, so a resumed run
reports what an uninterrupted one would); `drift_verdict` reads the first and last log
windows and names each signal that moved past its threshold. The thresholds are documented
defaults, not tuned on target labels.

What was seen (night benchmark, seed 0, 200 mean-teacher steps): the run that fell below its
starting point (12.3 mIoU against 14.4) saw `pred_tv` rise from 0.21 to 0.60; the run that rose
above it (17.4) saw it fall from 0.16 to 0.09. The share of target pixels where the teacher
disagreed with the starting network was high in both (0.58 and 0.40): a network that adapts also
moves away from where it started, so that signal (an extra forward every step) was dropped.
`source_acc` did not move in either. The class-share distance is also the label-free
measure that ranked checkpoints best on the day benchmark (benchmarks/results/label_free.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.atomic import atomic_write_text

SHARE_MOMENTUM = 0.98          # running class shares: about the last 50 steps
FIRST_STEPS = 20               # the window that defines "at the start"
PRESENT, VANISHED = 0.005, 0.0005
SOURCE_ACC_DROP = 0.05         # 5 points of source pixel accuracy
TV_RISE = 0.10                 # 0.1 of total variation


def class_shares(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes,) float64 share of each class among the labelled pixels of `labels`."""
    labels = labels[(labels != IGNORE_INDEX) & (labels >= 0) & (labels < num_classes)]
    counts = torch.bincount(labels.flatten().cpu(), minlength=num_classes).double()
    return counts / counts.sum().clamp_min(1)


@dataclass
class DriftMonitor:
    num_classes: int
    steps: int = 0
    first: torch.Tensor | None = None       # teacher class shares summed over the first steps
    teacher: torch.Tensor | None = None     # running teacher class shares (target)
    source: torch.Tensor | None = None      # running source label class shares
    names: list[str] = field(default_factory=list)

    def update(self, teacher_labels: torch.Tensor, source_labels: torch.Tensor, source_logits: torch.Tensor) -> dict[str, float]:
        """Per-step signals. Label maps (B, H, W) with IGNORE_INDEX where invalid; logits (B, C, h, w)."""
        t_share, s_share = class_shares(teacher_labels, self.num_classes), class_shares(source_labels, self.num_classes)
        if self.teacher is None:
            self.teacher, self.source, self.first = t_share.clone(), s_share.clone(), torch.zeros_like(t_share)
        else:
            self.teacher.mul_(SHARE_MOMENTUM).add_(t_share, alpha=1 - SHARE_MOMENTUM)
            self.source.mul_(SHARE_MOMENTUM).add_(s_share, alpha=1 - SHARE_MOMENTUM)
        if self.steps < FIRST_STEPS:
            self.first.add_(t_share)
        self.steps += 1
        return {
            "source_acc": source_pixel_accuracy(source_logits, source_labels),
            "pred_tv": 0.5 * float((self.teacher - self.source).abs().sum()),
            "classes_vanished": float(len(self.vanished())),
        }

    def vanished(self) -> list[int]:
        if self.first is None or self.steps == 0:
            return []
        first = self.first / min(self.steps, FIRST_STEPS)
        return [c for c in range(self.num_classes) if first[c] > PRESENT and self.teacher[c] < VANISHED]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "first": self.first, "teacher": self.teacher, "source": self.source}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.first, self.teacher, self.source = state["steps"], state["first"], state["teacher"], state["source"]


def source_pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of labelled source pixels whose argmax (logits upsampled to the labels) is right."""
    with torch.no_grad():
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        valid = labels != IGNORE_INDEX
        if not valid.any():
            return 0.0
        return float((logits.argmax(1) == labels)[valid].float().mean())


def drift_verdict(records: list[dict], vanished: list[str]) -> list[str]:
    """Warnings, one sentence each, from the stage's log records (first window against last)."""
    records = [r for r in records if "source_acc" in r]
    if len(records) < 2:
        return [f"classes the teacher stopped predicting: {', '.join(vanished)}"] if vanished else []
    first, last = records[0], records[-1]
    warnings = []
    drop = first["source_acc"] - last["source_acc"]
    if drop > SOURCE_ACC_DROP:
        warnings.append(f"source pixel accuracy fell from {100 * first['source_acc']:.1f} % to {100 * last['source_acc']:.1f} %")
    rise = last["pred_tv"] - first["pred_tv"]
    if rise > TV_RISE:
        warnings.append(f"the teacher's target class shares moved away from the source's (total variation {first['pred_tv']:.2f} -> {last['pred_tv']:.2f})")
    if vanished:
        warnings.append(f"classes the teacher stopped predicting: {', '.join(vanished)}")
    return warnings


def write_drift_report(stage_dir: Path, stage: str, classes, drift: DriftMonitor) -> None:
    """Write `drift.json` from the stage's logged windows and print a warning for each label-free
    sign of degradation."""
    metrics = stage_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    records = [r for r in records if r.get("stage") == stage]
    vanished = [classes[c] for c in drift.vanished()]
    warnings = drift_verdict(records, vanished)
    windows = [r for r in records if "source_acc" in r]
    keys = ("source_acc", "pred_tv", "pseudo_weight")
    report = {
        "first": {k: windows[0][k] for k in keys if windows and k in windows[0]},
        "last": {k: windows[-1][k] for k in keys if windows and k in windows[-1]},
        "vanished_classes": vanished,
        "warnings": warnings,
    }
    atomic_write_text(stage_dir / "drift.json", json.dumps(report, indent=2) + "\n")
    for warning in warnings:
        print(f"{stage}: warning, self-training may be degrading: {warning} ({stage_dir / 'drift.json'}; no target label was used)")
