"""Label-free measures of a segmenter on target images: how good does it look without labels?

NumPy only (no torch, no OpenCV), so the training side (`uda-adapt eval --no-labels`), `uda-adapt
compare` and the device runtime (`uda-adapt run --watch`) compute exactly the same numbers.

A *predictor* maps RGB uint8 images (N, H, W, 3) to either class probabilities, float (N, C, h, w),
or class ids, int (N, h, w) (exported models fuse the argmax). Measures that need probabilities
are None for a mask-only predictor.

    mean_max_prob         mean over pixels of max_c p                      needs probabilities
    mean_entropy          mean of -sum_c p log p / log C, in [0, 1]        needs probabilities
    classmix_accuracy     MixVal-style: ClassMix pairs of target images with the model's own pseudo
                          labels; pixel accuracy of the model on the mix against the mixed labels
    augment_agreement     pixel agreement of the prediction with the prediction of a photometric +
                          horizontal-flip version of the image (flipped back)
    class_share_distance  total variation between the predicted per-class pixel share and the
                          source label distribution (needs that distribution)
    temporal_flicker      video: share of pixels whose class changes between consecutive frames,
                          counted only where the image itself barely changes

Which of these actually rank models by target mIoU is measured by `benchmarks/label_free.py`
(results in benchmarks/results/label_free.md, 32 checkpoints of the synthetic benchmark):
class_share_distance ranks best (Spearman 0.92 over all checkpoints, 0.73 over adapted ones),
augment_agreement ranks too (0.56, 0.54); max-probability and entropy only tell source-only from
adapted networks (0.73, but -0.07 among adapted ones: self-training makes networks confident,
not right), ClassMix accuracy and flicker fall under 0.5 on one of the two. Those are reported,
marked as not ranking models, and never offered as a quality score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]

# Photometric part of the agreement test: a fixed contrast and brightness change (deterministic,
# so that two runs of a measure on the same images agree exactly).
AUGMENT_CONTRAST = 0.8
AUGMENT_BRIGHTNESS = 12.0
# A pixel is "still" for the flicker measure when its grey level moves less than this between
# frames (0..255): there the class should not change either.
STILL_THRESHOLD = 6.0
# ClassMix: half of the classes present in image A are pasted onto image B (DACS, MixVal).
CLASSMIX_SEED = 0


@dataclasses.dataclass(frozen=True)
class MeasureInfo:
    higher_is_better: bool
    needs: str              # "probabilities", "masks" (any predictor), "source" (a source label share), "video"
    description: str


MEASURES: dict[str, MeasureInfo] = {
    "mean_max_prob": MeasureInfo(True, "probabilities", "mean max-probability"),
    "mean_entropy": MeasureInfo(False, "probabilities", "mean normalised entropy"),
    "classmix_accuracy": MeasureInfo(True, "masks", "MixVal-style ClassMix accuracy on target pairs"),
    "augment_agreement": MeasureInfo(True, "masks", "agreement under photometric + flip augmentation"),
    "class_share_distance": MeasureInfo(False, "source", "distance of the class share to the source's"),
    "temporal_flicker": MeasureInfo(False, "video", "class changes where the image is still"),
}
# The measures that rank models (benchmarks/results/label_free.md: Spearman >= 0.5 over all
# checkpoints and over adapted ones alone).
RANKS_MODELS = ("class_share_distance", "augment_agreement")
# The one that ranked best: what `eval --no-labels`, `compare` and the end of a run without
# target labels report. It needs the source label distribution (training and `--like SOURCE_ROOT`).
VALIDATED = "class_share_distance"
# The best ranking measure that needs neither the source labels (not on the device) nor
# probabilities (exported models fuse the argmax): what `run --watch` reports and `--collect`
# ranks frames by, one frame at a time.
RUNTIME = "augment_agreement"


def as_masks(prediction: np.ndarray) -> np.ndarray:
    """(N, C, h, w) probabilities -> (N, h, w) int class ids; (N, h, w) masks pass through."""
    return prediction.argmax(axis=1) if prediction.ndim == 4 else np.asarray(prediction)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of `array` to `size` (h, w)."""
    h, w = array.shape[-2:]
    if (h, w) == tuple(size):
        return array
    rows = (np.arange(size[0]) * h // size[0]).clip(0, h - 1)
    cols = (np.arange(size[1]) * w // size[1]).clip(0, w - 1)
    return array[..., rows[:, None], cols[None, :]]


def mean_max_prob(probs: np.ndarray) -> float:
    """Mean over pixels of the top class probability; `probs` (N, C, h, w)."""
    return float(probs.max(axis=1).mean())


def mean_entropy(probs: np.ndarray) -> float:
    """Mean pixel entropy divided by log C (0: one-hot everywhere, 1: uniform); `probs` (N, C, h, w)."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return float((-(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])).mean())


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels where two class maps of the same shape agree."""
    if a.shape != b.shape:
        raise ValueError(f"class maps {a.shape} and {b.shape} differ in shape")
    return float((a == b).mean())


def augment(images: np.ndarray) -> np.ndarray:
    """The photometric + flip view of RGB uint8 images (N, H, W, 3)."""
    changed = images.astype(np.float32) * AUGMENT_CONTRAST + (1 - AUGMENT_CONTRAST) * 128.0 + AUGMENT_BRIGHTNESS
    return np.clip(changed, 0, 255).astype(np.uint8)[:, :, ::-1]


def augment_agreement_per_image(masks: np.ndarray, augmented_masks: np.ndarray) -> np.ndarray:
    """(N,) agreement of each mask with the prediction of its augmented view, flipped back."""
    back = augmented_masks[..., ::-1]
    return (masks == back).reshape(len(masks), -1).mean(axis=1)


def classmix(image_a: np.ndarray, image_b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste half of A's classes (by A's mask) onto B: (mixed image (H, W, 3), mixed mask (h, w))."""
    present = np.unique(mask_a)
    chosen = rng.choice(present, size=max(1, len(present) // 2), replace=False)
    paste = np.isin(mask_a, chosen)
    mixed_mask = np.where(paste, mask_a, mask_b)
    paste_image = resize_nearest(paste, image_a.shape[:2])
    mixed_image = np.where(paste_image[..., None], image_a, image_b)
    return mixed_image, mixed_mask


def classmix_pairs(images: np.ndarray, masks: np.ndarray, seed: int = CLASSMIX_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Each image i mixed with image i+1 (cyclic): (N, H, W, 3) images and (N, h, w) mixed pseudo labels."""
    rng = np.random.default_rng(seed)
    mixed = [classmix(images[i], images[(i + 1) % len(images)], masks[i], masks[(i + 1) % len(images)], rng)
             for i in range(len(images))]
    return np.stack([m[0] for m in mixed]), np.stack([m[1] for m in mixed])


def class_share(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) share of pixels predicted as each class (ids >= num_classes are left out)."""
    counts = np.bincount(masks.ravel().astype(np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def share_distance(share: np.ndarray, reference: np.ndarray) -> float:
    """Total variation distance between two class distributions, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(share) - np.asarray(reference)).sum())


def grey(images: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., H, W, 3) -> float32 (..., H, W) grey levels."""
    return images.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)


def flicker_counts(previous_image: np.ndarray, image: np.ndarray, previous_mask: np.ndarray, mask: np.ndarray,
                   threshold: float = STILL_THRESHOLD) -> tuple[int, int]:
    """(still pixels whose class changed, still pixels) between two frames, at the mask's resolution."""
    size = mask.shape[-2:]
    moved = np.abs(resize_nearest(grey(image), size) - resize_nearest(grey(previous_image), size))
    still = moved < threshold
    return int((still & (mask != previous_mask)).sum()), int(still.sum())


def temporal_flicker(images: np.ndarray, masks: np.ndarray, threshold: float = STILL_THRESHOLD) -> float | None:
    """Share of still pixels whose class changes between consecutive frames; None without still pixels."""
    changed = still = 0
    for t in range(1, len(images)):
        c, s = flicker_counts(images[t - 1], images[t], masks[t - 1], masks[t], threshold)
        changed, still = changed + c, still + s
    return changed / still if still else None


def predict_in_batches(predict: Predictor, images: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([predict(images[i:i + batch]) for i in range(0, len(images), batch)])


def measure_images(predict: Predictor, images: np.ndarray, *, num_classes: int, source_share: np.ndarray | None = None,
                   video: bool = False, batch: int = 8) -> dict[str, float | None]:
    """Every measure of `predict` on RGB uint8 `images` (N, H, W, 3) of one size.

    `video`: the images are consecutive frames (temporal flicker is measured; otherwise None).
    """
    if len(images) < 2:
        raise ValueError("label-free measures need at least 2 images")
    prediction = predict_in_batches(predict, images, batch)
    masks = resize_nearest(as_masks(prediction), images.shape[1:3])
    probabilities = prediction.ndim == 4
    augmented = resize_nearest(as_masks(predict_in_batches(predict, augment(images), batch)), images.shape[1:3])
    mixed_images, mixed_labels = classmix_pairs(images, masks)
    mixed_masks = resize_nearest(as_masks(predict_in_batches(predict, mixed_images, batch)), images.shape[1:3])
    return {
        "mean_max_prob": mean_max_prob(prediction) if probabilities else None,
        "mean_entropy": mean_entropy(prediction) if probabilities else None,
        "classmix_accuracy": pixel_agreement(mixed_masks, mixed_labels),
        "augment_agreement": float(augment_agreement_per_image(masks, augmented).mean()),
        "class_share_distance": share_distance(class_share(masks, num_classes), source_share) if source_share is not None else None,
        "temporal_flicker": temporal_flicker(images, masks) if video else None,
        "class_share": class_share(masks, num_classes).tolist(),
    }


def oriented(name: str, value: float) -> float:
    """The measure as a quality score: higher is better for every measure."""
    return value if MEASURES[name].higher_is_better else -value


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties share their mean rank); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def format_measures(values: dict[str, float | None]) -> str:
    """One line per measure, the validated one marked."""
    lines = []
    for name, info in MEASURES.items():
        value = values.get(name)
        shown = "n/a" if value is None else f"{value:.4f}"
        mark = "  <- validated quality score" if name == VALIDATED else "" if name in RANKS_MODELS else "  (does not rank models)"
        lines.append(f"{name:<22} {shown:>8}  ({'higher' if info.higher_is_better else 'lower'} is better){mark}")
    return "\n".join(lines)
