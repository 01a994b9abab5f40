"""Per-class weights of the source cross-entropy, from the share of source pixels per class.

The built-in source shows a third of the target's pedestrians and riders, and the source network
scores 0 IoU on rider and bicycle even on source val: the loss is decided by road, building and
vegetation. Weighting each labelled pixel by its class lets the rare classes speak.

- "none": every pixel weighs 1.
- "enet": ENet's w_c = 1 / ln(1.02 + p_c), p_c the class's share of labelled source pixels
  (Paszke et al., "ENet", arXiv 1606.02147, section 5.2: c = 1.02 bounds the weights to [1, 50]).
- "enet_sqrt": the square root of ENet's weights: the same order, half the spread in log scale
  (on the built-in source about 2.5 for the rarest classes against 0.65 for building).

The weights are rescaled so that a source pixel weighs 1 on average (sum_c p_c w_c = 1): the
loss keeps the scale the learning rates were chosen for. Classes absent from the source weigh 0;
no pixel carries them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ClassWeighting = Literal["none", "enet", "enet_sqrt"]
SCHEMES = ("none", "enet", "enet_sqrt")
ENET_C = 1.02


def class_weights(frequency: np.ndarray, scheme: ClassWeighting) -> np.ndarray | None:
    """(C,) float32 weights (for `segmentation_ce(class_weight=)`), or None for "none"."""
    if scheme == "none":
        return None
    if scheme not in SCHEMES:
        raise ValueError(f"unknown class weighting {scheme!r}; valid: {', '.join(SCHEMES)}")
    p = np.asarray(frequency, np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("class weights need a share of labelled pixels per class, non-negative, with a positive sum")
    p = p / p.sum()
    weights = np.where(p > 0, 1.0 / np.log(ENET_C + p), 0.0)
    if scheme == "enet_sqrt":
        weights = np.sqrt(weights)
    weights /= float((p * weights).sum())
    return weights.astype(np.float32)


def describe(weights: np.ndarray | None, classes: list[str] | tuple[str, ...], top: int = 4) -> str:
    """One line naming the heaviest and lightest classes, for the training log."""
    if weights is None:
        return "class weights: none"
    order = sorted((float(w), name) for w, name in zip(weights.tolist(), classes) if w > 0)
    heavy = ", ".join(f"{n} {w:.2f}" for w, n in reversed(order[-top:]))
    light = ", ".join(f"{n} {w:.2f}" for w, n in order[:top])
    return f"class weights: heaviest {heavy}; lightest {light}"


def source_class_weights(dataset, num_classes: int, scheme: ClassWeighting, min_pixels: int = 0) -> np.ndarray | None:
    """The weights of `scheme` for the labels of `dataset`, from its cached class statistics
    (the same pass rare-class sampling makes; `min_pixels` only shares its cache key)."""
    if scheme == "none":
        return None
    from uda_adapt.adapt.data.rare_class import class_statistics   # reads every label once, then a cache
    return class_weights(class_statistics(dataset, num_classes, min_pixels).frequency, scheme)


def announced_class_weights(dataset, classes, scheme: ClassWeighting, min_pixels: int, prefix: str | None):
    """`source_class_weights` as a (C,) float32 tensor (None for "none"), printed after `prefix`
    for the training log when `prefix` is given (the main process of a distributed run)."""
    weights = source_class_weights(dataset, len(classes), scheme, min_pixels)
    if weights is None:
        return None
    if prefix is not None:
        print(f"{prefix}{describe(weights, classes)}")
    import torch   # here, so that the config (which names ClassWeighting) stays importable without torch
    return torch.from_numpy(weights)
