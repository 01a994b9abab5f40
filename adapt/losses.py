"""Losses of every stage. Each returns a scalar tensor, and 0 (still part of the graph) when its
pixel mask is empty, never NaN.

Shapes: logits (B, C, h, w) at the model's output stride; labels (B, H, W) long train ids with
IGNORE_INDEX for "not labelled", usually at image resolution. Masks always come from labels,
never from probabilities.

- `segmentation_ce`: source CE and target CE on pseudo labels.
- `correlation_fit_loss`: stage 2, trains the correlation module on source; the network's
  prediction is detached, so only the module learns.
- `correlation_transfer_loss`: stage 3, KL(SA(p) || p) over all target pixels; the module is
  frozen and its output is the (detached) target, so only the network learns.
- `entropy_on_ignored`, `kl_to_uniform_on_labelled`: IAST's regularisers on target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.models.correlation import PROB_EPS, CorrelationModule


def segmentation_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                    class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of logits upsampled (bilinear) to the labels' size, mean over labelled pixels.

    `class_weight` (C,) (array or tensor) multiplies each pixel's loss by its label's weight; the mean is still over
    the pixel count (not the weight sum), so weights that average 1 over the source keep the scale."""
    labels = labels.long()
    logits = _to_size(logits, labels)
    if class_weight is not None:   # the weight's dtype must be the logits': both float32 (autocast runs CE in float32)
        class_weight, logits = torch.as_tensor(class_weight, dtype=torch.float32, device=logits.device), logits.float()
    per_pixel = F.cross_entropy(logits, labels, weight=class_weight, ignore_index=ignore_index, reduction="none")
    return _masked_mean(per_pixel, labels != ignore_index)


def correlation_fit_loss(
    module: CorrelationModule, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
    valid: torch.Tensor | None = None, class_balanced: bool = False, features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 2 (source): NLL of the module's self-attended prediction against the source labels.

    p = softmax(logits) is detached: gradients reach the module only. The module runs at the
    logits' resolution; its output probabilities are upsampled bilinearly to the labels' size
    (a convex combination, so still probabilities) because the labels are the truth and
    downsampling them would drop thin classes. The log is taken after a floor at PROB_EPS.

    `valid` (B, H, W) bool: pixels with image content; None takes the labelled pixels (crop
    padding is labelled `ignore_index`). Cells that are not wholly valid are left out of the
    module's attention, as they are on the target (`correlation_transfer_loss`): a module fitted
    while attending over mean-colour padding learns on inputs it never sees when used.
    `class_balanced`: the mean over the classes present of each class's mean NLL, so the
    large classes do not decide alone what the module learns. `features`: the network's
    features when the module's queries need them.
    """
    labels = labels.long()
    if valid is None:
        valid = labels != ignore_index
    cells = valid_mask_at(valid, tuple(logits.shape[-2:]))
    attended = module(torch.softmax(logits.detach(), dim=1), valid=cells, features=features)
    log_attended = torch.log(_to_size(attended, labels).clamp_min(PROB_EPS))
    per_pixel = F.nll_loss(log_attended, labels, ignore_index=ignore_index, reduction="none")
    labelled = (labels != ignore_index) & valid
    if not class_balanced:
        return _masked_mean(per_pixel, labelled)
    return class_balanced_mean(per_pixel, labels, labelled, logits.shape[1])


def class_balanced_mean(values: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over the classes present in `labels` (where `mask`) of each class's mean value; 0 when none is."""
    classes = torch.where(mask, labels, torch.full_like(labels, num_classes)).flatten()
    sums = torch.zeros(num_classes + 1, dtype=values.dtype, device=values.device).index_add_(
        0, classes, torch.where(mask, values, torch.zeros_like(values)).flatten())
    counts = torch.bincount(classes, minlength=num_classes + 1)[:num_classes]
    present = counts > 0
    per_class = sums[:num_classes] / counts.clamp_min(1).to(values.dtype)
    return torch.where(present, per_class, torch.zeros_like(per_class)).sum() / present.sum().clamp_min(1)


def weighted_segmentation_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy with a weight per pixel (B, H, W), mean over the labelled pixels (as DACS).

    Mean-teacher training weighs pasted source pixels 1 and pseudo-labelled target pixels by the
    teacher's confidence fraction; dividing by the pixel count, not the weight sum, is what lets
    an unconfident teacher speak more quietly.
    """
    labels = labels.long()
    per_pixel = F.cross_entropy(_to_size(logits, labels), labels, ignore_index=ignore_index, reduction="none")
    return _masked_mean(per_pixel * weights, labels != ignore_index)


def correlation_transfer_loss(
    module: CorrelationModule, logits: torch.Tensor, teacher_logits: torch.Tensor | None = None,
    valid: torch.Tensor | None = None, mask: torch.Tensor | None = None,
    target_temperature: float = 1.0, features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 3 (target): KL(SA(p) || p) with p = softmax(logits), dense over every pixel.

    `teacher_logits`, when given, are what the module attends over instead of the network's own
    current logits (e.g. a copy of the network frozen at the start of the round): the target
    then stays put while the network follows it, instead of moving with every step.

    The target q = SA(p) is computed under no_grad (module frozen, target detached); gradients
    reach the network through log p = log_softmax(logits) only. Computed at the logits'
    resolution, where the module runs. Value: sum over classes of q (log q - log p), mean over
    the pixels. `F.kl_div` takes the *log*-probabilities of the model as its input.

    `valid` (B, h, w) bool, at the logits' resolution: pixels with image content. Padding is
    left out of the module's attention and of the KL. `mask` (B, h, w) bool restricts the KL
    further (e.g. to target pixels of a mixed image); None: every valid pixel.

    `target_temperature` T < 1 sharpens the target, q^(1/T) renormalised: a softer q than p
    lowers the network's confidence, and with it the share of pixels a confidence-weighted
    pseudo label counts. `features`: the features the module's queries read (those of the
    network that produced `teacher_logits`), when it needs them.
    """
    with torch.no_grad():
        source = logits if teacher_logits is None else teacher_logits
        target = module(torch.softmax(source.detach().float(), dim=1), valid=valid, features=features)
        if target_temperature != 1.0:
            target = sharpen(target, target_temperature)
    log_p = torch.log_softmax(logits, dim=1)
    kl = F.kl_div(log_p, target, reduction="none").sum(dim=1)
    if valid is not None:
        mask = valid if mask is None else mask & valid
    if mask is None:
        return kl.mean()
    return _masked_mean(kl, mask)


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, C, h, w) probabilities raised to 1/temperature and renormalised over C (in log space)."""
    return torch.softmax(torch.log(probs.clamp_min(PROB_EPS)) / temperature, dim=1)


def valid_mask_at(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Downsample a (B, H, W) bool pixel mask to (B, h, w): a cell is valid when all of it is."""
    if tuple(valid.shape[-2:]) == tuple(size):
        return valid
    # Adaptive max-pool of the *invalid* mask: one invalid pixel invalidates its cell.
    invalid = F.adaptive_max_pool2d((~valid).float().unsqueeze(1), size)
    return invalid.squeeze(1) < 0.5


def entropy_on_ignored(logits: torch.Tensor, pseudo_labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean prediction entropy -sum_c p log p over pixels whose pseudo label is ignore_index.

    IAST's regulariser pushing unlabelled pixels towards confident predictions. Logits are
    upsampled to the labels' size. Normalisation: per pixel (nats). IAST's code divides the same
    sum by C * pixels, so its weight 3.0 corresponds to 3.0 / C here.
    """
    pseudo_labels = pseudo_labels.long()
    logits = _to_size(logits, pseudo_labels)
    log_p = torch.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return _masked_mean(entropy, pseudo_labels == ignore_index)


def kl_to_uniform_on_labelled(
    logits: torch.Tensor, pseudo_labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean KL(u || p) with u uniform over the C classes, over pixels that carry a pseudo label.

    IAST's regulariser against over-confident pseudo-label fitting. KL(u || p) =
    -log C - (1/C) sum_c log p_c, which is 0 at the uniform prediction. IAST's code drops the
    constant -log C (same gradient) and divides by C * pixels, so its weight 0.1 corresponds to
    0.1 / C here. Logits are upsampled to the labels' size.
    """
    pseudo_labels = pseudo_labels.long()
    logits = _to_size(logits, pseudo_labels)
    num_classes = logits.shape[1]
    kl = -math.log(num_classes) - torch.log_softmax(logits, dim=1).mean(dim=1)
    return _masked_mean(kl, pseudo_labels != ignore_index)


def _to_size(maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) maps to the (H, W) of (B, H, W) labels, contiguous."""
    size = tuple(labels.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    # NLL's CPU backward fails on channels-last inputs ("grad_input must be contiguous");
    # interpolate keeps channels-last, so normalise the layout here (free when already contiguous).
    return maps.contiguous()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, H, W) values where mask is true; 0 with a graph when the mask is empty."""
    # torch.where, not values * mask: a non-finite value outside the mask must not leak in.
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1)
