"""Pseudo labels for self-training: argmax of the prediction, kept where it is confident enough.

Two modes:
- fixed: one threshold for every class (`select_pseudo_labels(probs, 0.9)`), for ablations;
- class-balanced, instance-adaptive (IAST, Mei et al., ECCV 2020): one threshold per class,
  updated from each batch's own confidences (`update_thresholds`), so that classes the network
  is rarely confident about still receive labels.

The IAST update follows the public IAST code (github.com/Raykoooo/IAST: `ias_thresh` and the
pseudo-label loop of its self-training trainer), which is also the paper's formula:

    for each class c, with x = the max-probabilities of the pixels predicted c in the batch,
        pct_c   = linear-interpolation percentile of [theta_c] + x at 100 * (1 - alpha * theta_c^gamma)
        theta_c = beta * theta_c + (1 - beta) * pct_c
    thresholds >= 1 are set to 0.999; thresholds start at 0.9 for every class.

Reading of that code, choice by choice:
- The "instance" is the batch passed in (IAST used 2 images at 1280x640, label resolution).
  Batches are processed in sequence; each batch is labelled with the thresholds *after* its own
  update.
- alpha * theta^gamma is the fraction of a class's pixels kept by the batch's own percentile:
  with gamma = 8, a class whose threshold is already low (hard class) keeps a much smaller top
  fraction (0.2 * 0.5^8 ~ 0.1 %) than an easy one (0.2 * 0.9^8 ~ 9 %): IAST's guard against
  noisy labels on hard classes. The threshold itself still moves towards that class's own
  confidence range, which is what balances the classes against one global threshold.
- The current threshold is appended to the confidences, so a class absent from the batch keeps
  its threshold (the percentile of [theta_c] is theta_c) and a class with few pixels moves
  only part of the way.
- Percentiles interpolate linearly between order statistics (numpy's default, IAST's call).
  IAST cast confidences to float16 first; here they stay in the probabilities' dtype.
- Thresholds stay in (0, 1): every percentile lies between the smallest value of the list
  (>= 1/C for a softmax maximum) and its largest, and 1 becomes 0.999 as in IAST.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.errors import UserError

# IAST's defaults (its configs: alpha 0.2 / 0.25 / 0.3 by round, gamma 8, beta 0.9, start 0.9).
IAST_ALPHA = 0.2
IAST_BETA = 0.9
IAST_GAMMA = 8.0
IAST_INITIAL_THRESHOLD = 0.9
# Where a threshold that reached 1 is put back, as in IAST: a threshold of 1 would keep nothing.
MAX_THRESHOLD = 0.999


@dataclasses.dataclass
class ThresholdState:
    """Per-class confidence thresholds (C,) float, carried from batch to batch within a round."""

    thresholds: torch.Tensor

    @classmethod
    def initial(cls, num_classes: int, value: float = IAST_INITIAL_THRESHOLD) -> ThresholdState:
        if not 0.0 < value <= 1.0:
            raise UserError(f"initial pseudo-label threshold must be in (0, 1], got {value}")
        return cls(torch.full((num_classes,), float(value)))


def update_thresholds(
    state: ThresholdState,
    probs: torch.Tensor,
    alpha: float = IAST_ALPHA,
    beta: float = IAST_BETA,
    gamma: float = IAST_GAMMA,
) -> ThresholdState:
    """IAST's instance-adaptive update from one batch of probabilities (B, C, h, w); returns a new state.

    alpha: the top fraction of a class's confidences that sets its batch percentile, before
    weighting by theta^gamma; beta: EMA momentum on the thresholds; gamma: exponent of that
    weighting. See the module docstring for the formula and its source.
    """
    if not 0.0 < alpha <= 1.0:
        raise UserError(f"pseudo-label alpha must be in (0, 1], got {alpha}")
    if not 0.0 <= beta <= 1.0:
        raise UserError(f"pseudo-label beta must be in [0, 1], got {beta}")
    if gamma < 0:
        raise UserError(f"pseudo-label gamma must be >= 0, got {gamma}")
    old = state.thresholds
    confidence, predicted = probs.detach().max(dim=1)
    confidence, predicted = confidence.flatten(), predicted.flatten()
    batch_thresholds = torch.empty_like(old)
    for c in range(old.numel()):
        theta = old[c].item()
        values = torch.cat([old[c : c + 1].to(confidence), confidence[predicted == c]])
        batch_thresholds[c] = _percentile(values, 1.0 - alpha * theta**gamma)
    new = beta * old + (1.0 - beta) * batch_thresholds
    new = torch.where(new >= 1.0, torch.full_like(new, MAX_THRESHOLD), new)
    return ThresholdState(new)


def select_pseudo_labels(
    probs: torch.Tensor, thresholds: torch.Tensor | float, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Pseudo labels (B, h, w) long from probabilities (B, C, h, w).

    Each pixel gets its argmax class, or ignore_index where its max probability is below the
    threshold of that class. `thresholds` is (C,) per class, or one float for every class.
    """
    confidence, labels = probs.detach().max(dim=1)
    if isinstance(thresholds, torch.Tensor):
        per_pixel = thresholds.to(probs.device, confidence.dtype)[labels]
    else:
        per_pixel = torch.full_like(confidence, float(thresholds))
    return torch.where(confidence < per_pixel, torch.full_like(labels, ignore_index), labels)


def class_balanced_pseudo_labels(
    probs: torch.Tensor,
    state: ThresholdState,
    alpha: float = IAST_ALPHA,
    beta: float = IAST_BETA,
    gamma: float = IAST_GAMMA,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, ThresholdState]:
    """IAST's order for one batch: update the thresholds with it, then label it with them."""
    state = update_thresholds(state, probs, alpha=alpha, beta=beta, gamma=gamma)
    return select_pseudo_labels(probs, state.thresholds, ignore_index=ignore_index), state


def confidence_weight(confidence: torch.Tensor, threshold: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) per image: the fraction of its (valid) pixels whose confidence (B, H, W) is >= threshold.

    DACS's pseudo-label weight: one scalar per target image, so an image the teacher is unsure
    about as a whole teaches less, while every pixel of it still gets a label.
    """
    sure = confidence >= threshold
    if valid is None:
        return sure.flatten(1).float().mean(dim=1)
    return (sure & valid).flatten(1).sum(dim=1).float() / valid.flatten(1).sum(dim=1).clamp_min(1).float()


def pseudo_label_weight(confidence: torch.Tensor, threshold: float, valid: torch.Tensor | None = None,
                        scope: str = "batch") -> torch.Tensor:
    """(B,) the confidence weight of each target image's pseudo labels, per image or per batch.

    "batch" is DACS/DAFormer's: `torch.sum(ps_large_p) / np.size(pseudo_label)` over the whole
    batch (mmseg/models/uda/dacs.py), the same scalar for every image; "image": one per image.
    """
    if scope == "image":
        return confidence_weight(confidence, threshold, valid)
    if scope != "batch":
        raise ValueError(f"confidence weight scope must be 'batch' or 'image', got {scope!r}")
    sure = confidence >= threshold
    if valid is None:
        share = sure.float().mean()
    else:
        share = (sure & valid).sum().float() / valid.sum().clamp_min(1).float()
    return share.expand(confidence.shape[0]).clone()


def _percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile (q in [0, 1]) of 1-D values, interpolating linearly between order statistics.

    Same as numpy.percentile(values, 100 * q); written out because torch.quantile refuses
    inputs over 16M elements, which a batch of full-resolution probabilities can exceed.
    """
    ordered = values.sort().values
    position = min(max(q, 0.0), 1.0) * (ordered.numel() - 1)
    low = math.floor(position)
    high = min(low + 1, ordered.numel() - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
