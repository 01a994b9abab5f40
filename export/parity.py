"""The parity gate: does the exported ONNX segment like the PyTorch model it came from?

ONNX Runtime (CPU) and PyTorch run on the same target val images at the export resolution.
Gated on what a user sees, not on raw logits: pixel agreement of the two masks, and on
labelled data the mIoU of each against the labels (the delta in points). Defaults:
fp32 >= 99.9 %, fp16 >= 99.5 %, int8 >= 98 % agreement and at most 1.0 mIoU point lost.
Labels are resized to the export size (nearest), so both sides are scored on the same pixels.
A dynamic export is also checked at the ends of its range, on a few of the images resampled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.evaluation import ConfusionMatrix
from uda_adapt.export.onnx_export import INPUT_NAME
from uda_adapt.common.gates import GATES, Gate  # noqa: F401  (Gate: part of this module's interface)
from uda_adapt.common.manifest import InputSpec
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.export.preprocess import resize_label, spread_indices




@dataclasses.dataclass
class ParitySamples:
    """Normalised inputs (1, 3, H, W) float32, labels (H, W) uint8 or None, and where they came from.

    `images` are the RGB uint8 (H, W, 3) pictures at the export size the inputs were made
    from; the bundle keeps a few (parity/) for the on-device engine check.
    """

    inputs: list[np.ndarray]
    labels: list[np.ndarray | None]
    source: dict[str, Any]
    images: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


@dataclasses.dataclass
class ParityCheck:
    """The comparison of one ONNX file against PyTorch (mIoU in points, 0-100)."""

    file: str
    precision: str
    imgsz: tuple[int, int]
    pixel_agreement: float
    min_agreement: float
    miou_torch: float | None = None
    miou_onnx: float | None = None
    miou_delta: float | None = None
    max_miou_drop: float | None = None
    max_abs_logit_diff: float | None = None

    @property
    def passed(self) -> bool:
        if self.pixel_agreement < self.min_agreement:
            return False
        return not (self.max_miou_drop is not None and self.miou_delta is not None
                    and -self.miou_delta > self.max_miou_drop)

    def failure(self) -> str:
        """What failed and by how much; empty when the check passed."""
        if self.pixel_agreement < self.min_agreement:
            short = 100 * (self.min_agreement - self.pixel_agreement)
            return (f"{self._name()} agrees with PyTorch on {100 * self.pixel_agreement:.3f} % of pixels, "
                    f"{short:.3f} points below the {100 * self.min_agreement:.1f} % gate")
        if not self.passed:
            return (f"{self._name()} loses {-self.miou_delta:.2f} mIoU points against PyTorch, "
                    f"more than the {self.max_miou_drop:.1f} allowed")
        return ""

    def summary(self) -> str:
        text = (f"{self._name()}: pixel agreement {100 * self.pixel_agreement:.3f} % "
                f"(gate >= {100 * self.min_agreement:.1f} %)")
        if self.miou_delta is not None:
            text += f", mIoU {self.miou_torch:.2f} (PyTorch) vs {self.miou_onnx:.2f} (ONNX), delta {self.miou_delta:+.2f} pt"
        return text + (" - pass" if self.passed else " - FAIL")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "imgsz": list(self.imgsz), "passed": self.passed}

    def _name(self) -> str:
        return f"{self.file} ({self.precision}, {self.imgsz[0]}x{self.imgsz[1]})"


def torch_reference(wrapper: nn.Module, samples: ParitySamples) -> list[np.ndarray]:
    """The wrapped model's outputs (mask or logits) on every sample, float32 PyTorch on the CPU."""
    outputs = []
    with torch.inference_mode():
        for x in samples.inputs:
            outputs.append(wrapper(torch.from_numpy(x)).numpy())
    return outputs


def compare_onnx(onnx_path: str | os.PathLike, samples: ParitySamples, reference: Sequence[np.ndarray], *,
                 precision: str, num_classes: int) -> ParityCheck:
    """Run `onnx_path` in ONNX Runtime on the samples and score it against `reference`."""
    import onnxruntime as ort

    gate = GATES[precision]
    session = ort.InferenceSession(str(onnx_path), quantized_as_written(ort, precision), providers=["CPUExecutionProvider"])
    agree = total = 0
    max_diff: float | None = None
    torch_cm, onnx_cm = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for x, label, ref in zip(samples.inputs, samples.labels, reference):
        out = session.run(None, {INPUT_NAME: x})[0]
        if out.shape != ref.shape:
            raise UserError(f"{Path(onnx_path).name} outputs shape {out.shape} where PyTorch gives {ref.shape}; "
                            "the export is broken, re-export with another --exporter or --opset")
        if out.ndim == 4:  # logits (B, C, H, W)
            diff = float(np.abs(out.astype(np.float32) - ref).max())
            max_diff = diff if max_diff is None else max(max_diff, diff)
            out, ref = out.argmax(1), ref.argmax(1)
        agree += int((out == ref).sum())
        total += out.size
        if label is not None:
            torch_cm.update(ref[0], label)
            onnx_cm.update(out[0], label)
    height, width = samples.inputs[0].shape[-2:]
    check = ParityCheck(Path(onnx_path).name, precision, (int(height), int(width)), agree / total, gate.min_agreement,
                        max_abs_logit_diff=max_diff)
    if samples.labelled:
        check.miou_torch = 100 * torch_cm.miou()
        check.miou_onnx = 100 * onnx_cm.miou()
        check.miou_delta = round(check.miou_onnx - check.miou_torch, 6) + 0.0  # + 0.0: no "-0.00"
        check.max_miou_drop = gate.max_miou_drop
    return check


def quantized_as_written(ort: Any, precision: str) -> Any:
    """Session options that run a Q/DQ (int8) model as its graph states it: QuantizeLinear and
    DequantizeLinear as ops, the layers between them in float32.

    With graph optimisations on, ONNX Runtime fuses Q/DQ pairs into its CPU int8 kernels, whose
    arithmetic differs between CPU vendors (pixel agreement 92 % on one machine, 45 % on an AMD
    EPYC, same model): the gate would measure the CPU, not the calibration. Unfused, it measures
    the scales the export chose, which is what TensorRT builds the engine from.
    """
    options = ort.SessionOptions()
    if precision == "int8":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def load_parity_samples(root: str | os.PathLike | None, kind: str, split: str, num: int, spec: InputSpec,
                        note: str = "") -> ParitySamples:
    """Up to `num` images spread over `split` of the dataset at `root`; synthetic inputs when `root` is None.

    Inputs go through `prepare_input` with the manifest's `spec`, exactly as the runtime does.
    """
    size = spec.size
    if num < 1:
        raise UserError(f"--parity-num must be at least 1, got {num}")
    if root is None:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(num)]
        inputs = [prepare_input(rgb, spec, frame_order="RGB") for rgb in images]
        source = {"kind": "synthetic", "n_images": num,
                  "note": note or "no target data known; random images, no labels, no mIoU"}
        return ParitySamples(inputs, [None] * num, source, images)
    from uda_adapt.adapt.data import open_dataset

    dataset = open_dataset(kind, root, split, require_labels=False)
    inputs, labels, images = [], [], []
    for index in spread_indices(len(dataset), num):
        rgb, label = dataset.load(index)
        # Resized once here, so the picture kept in the bundle is exactly what was compared.
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) if rgb.shape[:2] != size else rgb
        images.append(rgb)
        inputs.append(prepare_input(rgb, spec, frame_order="RGB"))
        labels.append(None if label is None else resize_label(label, size))
    if not inputs:
        raise UserError(f"the {split} split of {root} holds no images; point --data at the target dataset")
    source = {"kind": kind, "root": str(root), "split": split, "n_images": len(inputs),
              "labelled": all(label is not None for label in labels)}
    if note:
        source["note"] = note
    return ParitySamples(inputs, labels, source, images)


def resample(samples: ParitySamples, size: tuple[int, int], count: int) -> ParitySamples:
    """The first `count` samples at another size (inputs bilinear, labels nearest), to check a dynamic range's ends."""
    inputs = [F.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False).numpy()
              for x in samples.inputs[:count]]
    labels = [None if label is None else resize_label(label, size) for label in samples.labels[:count]]
    return ParitySamples(inputs, labels, {**samples.source, "n_images": len(inputs)})


def write_parity_report(path: str | os.PathLike, samples: ParitySamples, checks: Sequence[ParityCheck],
                        imgsz: tuple[int, int]) -> dict[str, Any]:
    """Write report/parity.json atomically; returns its content."""
    report = {
        "passed": all(c.passed for c in checks),
        "reference": "PyTorch fp32 on the CPU",
        "runtime": "ONNX Runtime CPUExecutionProvider",
        "imgsz": list(imgsz),
        "n_images": len(samples.inputs),
        "data": samples.source,
        "checks": [_finite(c.to_dict()) for c in checks],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN (an mIoU over no classes): write null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
