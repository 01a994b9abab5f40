"""Metrics as JSON lines (for scripts) and TensorBoard scalars (for people)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class Logbook:
    """Appends one JSON object per record to `metrics.jsonl` and mirrors numbers to TensorBoard."""

    def __init__(self, stage_dir: Path, tensorboard_dir: Path | None = None, tag: str = "", enabled: bool = True) -> None:
        self.path = stage_dir / "metrics.jsonl"
        self.tag = tag
        self.enabled = enabled          # False on every rank but 0 of a distributed run
        self._tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time; the JSON log is the record
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"stage": self.tag, "step": step, **values}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{self.tag}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
