"""Writing one round's pseudo labels for the target train split.

Pseudo labels are PNGs under RUN_DIR/self_train/round<k>/pseudo/, written atomically, with a
`stats.json` written last: its presence means the round's labels are complete.

Data-parallel, rank r predicts images r, r + N, ... IAST's thresholds move image by image in
dataset order, so within each group of N images the ranks take turns: rank k updates the
thresholds with its image and broadcasts them before rank k + 1 updates. Every rank ends with
the same thresholds, and every image is labelled with exactly the thresholds one process would
have used; only the predictions run in parallel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uda_adapt.common.progress import tqdm_disable
from uda_adapt.common.atomic import atomic_write_text, ensure_writable_dir
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.images import write_label
from uda_adapt.adapt.models import upsample_logits
from uda_adapt.adapt.pseudo_labels import ThresholdState, select_pseudo_labels, update_thresholds
from uda_adapt.adapt.train.config import PseudoLabelConfig
from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed, all_reduce_sum, barrier, broadcast_tensor


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
    dist: Distributed = SINGLE_PROCESS,
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
    n, ranks = len(dataset), dist.world_size
    groups = tqdm(range(0, n, ranks), desc=f"pseudo labels ({round_dir.name})", unit="img" if ranks == 1 else f"x{ranks} img",
                  disable=tqdm_disable(dist.is_main))
    for first in groups:
        index = first + dist.rank
        probs = None
        if index < n:
            image, truth = dataset[index]
            logits = model(image.unsqueeze(0).to(device)).float()
            probs = torch.softmax(upsample_logits(logits, tuple(truth.shape[-2:])), dim=1)
        per_class = torch.full((num_classes,), cfg.fixed_threshold)
        if cfg.mode == "iast":
            # IAST's order: update the thresholds with the image, then label it with them.
            for turn in range(min(ranks, n - first)):
                if turn == dist.rank:
                    thresholds = update_thresholds(thresholds, probs, alpha=alpha, beta=cfg.beta, gamma=cfg.gamma)
                    per_class = thresholds.thresholds.clone()
                if dist.enabled:
                    # A copy: `.to(device)` of a CPU tensor on a CPU job is the tensor itself, and the
                    # broadcast writes into it; the thresholds this rank labels with must not change.
                    shared = broadcast_tensor(thresholds.thresholds.to(device, copy=True), dist, src=turn)
                    thresholds = ThresholdState(shared.cpu())
        if probs is None:
            continue
        label = select_pseudo_labels(probs, per_class)[0].cpu().numpy().astype(np.uint8)
        write_label(pseudo_dir / f"{dataset.stems[index]}.png", label)
        selected = label != IGNORE_INDEX
        kept += np.bincount(label[selected], minlength=num_classes)[:num_classes]
        truth_np = truth.numpy()
        hit = selected & (truth_np == label)
        correct += np.bincount(label[hit], minlength=num_classes)[:num_classes]
        total_pixels += label.size
    counts = torch.from_numpy(np.concatenate([kept, correct, [total_pixels]])).to(device)
    counts = all_reduce_sum(counts, dist).cpu().numpy()
    kept, correct, total_pixels = counts[:num_classes], counts[num_classes: 2 * num_classes], int(counts[-1])
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
    barrier(dist)   # every rank's labels are on disk before stats.json says the round is complete
    if dist.is_main:
        atomic_write_text(round_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    barrier(dist)
    return stats, thresholds
