"""Writing one round's pseudo labels for the target train split.

Pseudo labels are PNGs under RUN_DIR/self_train/round<k>/pseudo/, written atomically, with a
`stats.json` written last: its presence means the round's labels are complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.atomic import atomic_write_text, ensure_writable_dir
from adapt.classes import IGNORE_INDEX
from adapt.images import write_label
from adapt.models import upsample_logits
from adapt.pseudo_labels import ThresholdState, class_balanced_pseudo_labels, select_pseudo_labels
from adapt.train.config import PseudoLabelConfig


def pseudo_labels_ready(round_dir: Path) -> bool:
    return (round_dir / "stats.json").is_file()


@torch.inference_mode()
def write_pseudo_labels(
    model: torch.nn.Module,
    dataset,
    round_dir: Path,
    thresholds: ThresholdState,
    cfg: PseudoLabelConfig,
    alpha: float,
    device: torch.device,
) -> tuple[dict, ThresholdState]:
    """Predict every target train image, update the class thresholds, keep confident pixels.

    Returns the round's statistics and the thresholds after the last image.

    `dataset` yields (normalised image, label); labels, when the split has them, are used only
    to report pseudo-label accuracy in stats.json, never for selection.
    """
    pseudo_dir = ensure_writable_dir(round_dir / "pseudo")
    model.eval()
    num_classes = thresholds.thresholds.numel()
    kept = np.zeros(num_classes, dtype=np.int64)
    correct = np.zeros(num_classes, dtype=np.int64)
    total_pixels = 0
    for index in tqdm(range(len(dataset)), desc=f"pseudo labels ({round_dir.name})", unit="img", disable=None):
        image, truth = dataset[index]
        logits = model(image.unsqueeze(0).to(device)).float()
        probs = torch.softmax(upsample_logits(logits, tuple(truth.shape[-2:])), dim=1)
        if cfg.mode == "iast":
            labels, thresholds = class_balanced_pseudo_labels(probs, thresholds, alpha=alpha, beta=cfg.beta, gamma=cfg.gamma)
        else:
            labels = select_pseudo_labels(probs, torch.full((num_classes,), cfg.fixed_threshold, device=probs.device))
        label = labels[0].cpu().numpy().astype(np.uint8)
        write_label(pseudo_dir / f"{dataset.stems[index]}.png", label)
        selected = label != IGNORE_INDEX
        kept += np.bincount(label[selected], minlength=num_classes)[:num_classes]
        truth_np = truth.numpy()
        hit = selected & (truth_np == label)
        correct += np.bincount(label[hit], minlength=num_classes)[:num_classes]
        total_pixels += label.size
    has_truth = bool((dataset.has_labels))
    stats = {
        "images": len(dataset),
        "labelled_fraction": float(kept.sum() / max(total_pixels, 1)),
        "per_class_pixels": kept.tolist(),
        "thresholds": thresholds.thresholds.cpu().tolist(),
        "alpha": alpha,
        # Diagnostic only, and only where the target train split happens to have labels.
        "accuracy_of_selected": float(correct.sum() / max(kept.sum(), 1)) if has_truth else None,
        "per_class_accuracy": (correct / np.maximum(kept, 1)).round(4).tolist() if has_truth else None,
    }
    atomic_write_text(round_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats, thresholds
