"""Semantic segmentation metrics, computed the way the Cityscapes benchmark does.

One confusion matrix is accumulated over the whole split at full label resolution; IoU per class
is TP / (TP + FP + FN) from it, and mIoU is the mean over classes (never a mean of per-image
scores). Pixels labelled `IGNORE_INDEX` count nowhere, neither as errors nor as false positives.

A class absent from both the ground truth and the predictions of the whole split has no defined
IoU: it is NaN and left out of the mean (cityscapesScripts does the same). A class that is absent
from the ground truth but predicted somewhere gets IoU 0 and counts.
The SYNTHIA protocols (16 and 13 classes) are means over subsets of the same 19-class matrix,
selected by class name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, PROTOCOLS
from uda_adapt.adapt.data.dataset import SegmentationDataset
from uda_adapt.common.errors import UserError
from uda_adapt.common.progress import tqdm_disable

ModelFn = Callable[[torch.Tensor], torch.Tensor]


class ConfusionMatrix:
    """Counts (ground truth, prediction) pixel pairs; rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._counts = torch.zeros(num_classes * num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: integer class maps of the same shape; target pixels == IGNORE_INDEX are skipped."""
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(pred.device)
        valid = target != IGNORE_INDEX
        n = self.num_classes
        t, p = target[valid].long(), pred[valid].long()
        # One reduction and one host sync per batch, to refuse ids that would land in another cell.
        if bool(((t < 0) | (t >= n) | (p < 0) | (p >= n)).any()):
            raise ValueError(f"class ids outside 0..{n - 1} in prediction or target")
        counts = torch.bincount(n * t + p, minlength=n * n)
        self._counts = self._counts.to(counts.device) + counts

    @property
    def counts(self) -> torch.Tensor:
        """The flat (num_classes**2,) int64 counts, to sum matrices across processes."""
        return self._counts

    @counts.setter
    def counts(self, value: torch.Tensor) -> None:
        self._counts = value

    @property
    def matrix(self) -> np.ndarray:
        """(num_classes, num_classes) int64; [i, j] = pixels of class i predicted as j."""
        return self._counts.cpu().numpy().reshape(self.num_classes, self.num_classes)

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 (num_classes,); NaN where a class is in neither gt nor prediction."""
        matrix = self.matrix.astype(np.float64)
        tp = np.diag(matrix)
        denominator = matrix.sum(0) + matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, tp / denominator, np.nan)

    def miou(self, class_names: Sequence[str] | None = None, protocol: str | None = None) -> float:
        """Mean IoU over all classes, or over a protocol's classes ("19", "16", "13") picked by name.

        Without `class_names` a 19-class matrix is taken to be in Cityscapes train-id order.
        """
        iou = self.iou()
        if protocol is None:
            return _nanmean(iou)
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown evaluation protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
        names = list(class_names) if class_names is not None else _default_names(self.num_classes)
        missing = [c for c in PROTOCOLS[protocol] if c not in names]
        if missing:
            raise UserError(f"protocol {protocol} needs the Cityscapes classes, but this dataset lacks "
                            f"{', '.join(missing)}; evaluate without a protocol")
        return _nanmean(iou[[names.index(c) for c in PROTOCOLS[protocol]]])

    def class_accuracy(self) -> np.ndarray:
        """Per-class accuracy (recall), float64 (num_classes,): TP / labelled pixels of the class; NaN if none."""
        matrix = self.matrix.astype(np.float64)
        labelled = matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(labelled > 0, np.diag(matrix) / labelled, np.nan)

    def pixel_accuracy(self) -> float:
        """Fraction of non-ignored pixels predicted correctly (NaN before any update)."""
        matrix = self.matrix
        total = matrix.sum()
        return float(np.trace(matrix) / total) if total else math.nan


@dataclass
class EvalResult:
    """Scores of one evaluation, as fractions in [0, 1]; NaN IoU = class in neither gt nor prediction.

    `miou` averages every class of the dataset; `miou16`/`miou13` are the SYNTHIA protocols from
    the same matrix, None when the dataset does not use the Cityscapes classes. `per_class_accuracy`
    is the share of each class's labelled pixels predicted as it (mmseg's Acc; NaN: not in the
    labels); `confusion_matrix[i][j]` counts pixels labelled i predicted j.
    """

    per_class_iou: dict[str, float]
    miou: float
    miou16: float | None
    miou13: float | None
    pixel_accuracy: float
    num_images: int
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion_matrix: list[list[int]] = field(default_factory=list)

    @classmethod
    def from_confusion(cls, confusion: ConfusionMatrix, class_names: Sequence[str], num_images: int) -> EvalResult:
        names = list(class_names)
        cityscapes = all(c in names for c in CITYSCAPES_CLASSES)
        return cls(
            per_class_iou={name: float(v) for name, v in zip(names, confusion.iou())},
            miou=confusion.miou(),
            miou16=confusion.miou(names, "16") if cityscapes else None,
            miou13=confusion.miou(names, "13") if cityscapes else None,
            pixel_accuracy=confusion.pixel_accuracy(),
            num_images=num_images,
            per_class_accuracy={name: float(v) for name, v in zip(names, confusion.class_accuracy())},
            confusion_matrix=confusion.matrix.tolist(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON; NaN becomes None (JSON has no NaN)."""
        return _nan_to_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        """Aligned per-class IoU and accuracy table in percent, then the means."""
        accuracy = self.per_class_accuracy
        rows = [(name, _percent(v), _percent(accuracy[name]) if name in accuracy else "") for name, v in self.per_class_iou.items()]
        rows.append(("", "", ""))
        rows.append((f"mIoU ({len(self.per_class_iou)} classes)", _percent(self.miou), ""))
        if self.miou16 is not None and self.miou13 is not None:
            rows.append(("mIoU (SYNTHIA 16)", _percent(self.miou16), ""))
            rows.append(("mIoU (SYNTHIA 13)", _percent(self.miou13), ""))
        rows.append(("pixel accuracy", _percent(self.pixel_accuracy), ""))
        width = max(len(name) for name, _, _ in rows)
        lines = [f"{'class':<{width}}   IoU %   Acc %", "-" * (width + 16)]
        lines += [f"{name:<{width}}  {iou:>6}  {acc:>6}".rstrip() if name else "" for name, iou, acc in rows]
        lines.append(f"{self.num_images} images; IoU n/a = class in neither labels nor predictions, Acc n/a = not in the labels")
        return "\n".join(lines)


PredictionHook = Callable[[int, torch.Tensor], None]   # (index in the dataset, (H, W) predicted ids at label size)


def evaluate(model_fn: ModelFn, dataset: SegmentationDataset, *, device: str | torch.device = "cpu", progress: bool = True,
             num_workers: int = 0, on_prediction: PredictionHook | None = None) -> EvalResult:
    """Score `model_fn` on a labelled dataset at full label resolution.

    `model_fn` maps a normalised (1, 3, h, w) image to (1, C, h', w') logits; they are upsampled
    bilinearly to the label's size before the argmax. Batch size is 1 because full-resolution
    labels may differ in size from image to image.
    """
    confusion = confusion_of(model_fn, dataset, device=device, progress=progress, num_workers=num_workers,
                             on_prediction=on_prediction)
    return EvalResult.from_confusion(confusion, dataset.classes, len(dataset))


def confusion_of(model_fn: ModelFn, dataset: SegmentationDataset, *, device: str | torch.device = "cpu", progress: bool = True,
                 num_workers: int = 0, on_prediction: PredictionHook | None = None) -> ConfusionMatrix:
    """The confusion matrix behind `evaluate` (partial matrices of disjoint splits add up).

    `on_prediction(index, ids)` sees each image's predicted class ids, e.g. to save them.
    """
    if not dataset.has_labels:
        raise UserError(f"evaluation needs labels, but this {type(dataset).__name__} split has none; "
                        "point evaluation at a labelled split")
    num_classes = len(dataset.classes)
    confusion = ConfusionMatrix(num_classes)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers)
    with torch.inference_mode():
        for index, (image, label) in enumerate(tqdm(loader, desc="evaluate", unit="img", disable=tqdm_disable(progress))):
            image, label = image.to(device), label.to(device)
            logits = model_fn(image)
            if logits.ndim != 4 or logits.shape[:2] != (1, num_classes):
                raise UserError(f"the model outputs {tuple(logits.shape)} logits but the dataset has "
                                f"{num_classes} classes; evaluate with a model trained on this class set")
            logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
            prediction = logits.argmax(1)
            confusion.update(prediction, label)
            if on_prediction is not None:
                on_prediction(index, prediction[0])
    return confusion


def _default_names(num_classes: int) -> list[str]:
    if num_classes != len(CITYSCAPES_CLASSES):
        raise ValueError("class_names are required for a protocol mean over a non-Cityscapes matrix")
    return list(CITYSCAPES_CLASSES)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
