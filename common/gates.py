"""How closely an exported model must agree with its reference, per precision: one table.

The export's parity gate (ONNX Runtime vs PyTorch, `export.parity`) and the on-device engine
check (TensorRT vs ONNX Runtime, `runtime.check`) both read it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Gate:
    min_agreement: float             # fraction of pixels whose class must match the reference's
    max_miou_drop: float | None      # mIoU points the export may lose on labelled data; None: not gated


GATES: dict[str, Gate] = {
    "fp32": Gate(0.999, None),
    "fp16": Gate(0.995, None),
    "int8": Gate(0.98, 1.0),
}
