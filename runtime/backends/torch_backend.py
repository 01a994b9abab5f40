"""PyTorch on a uda-adapt checkpoint: no export needed, slowest, handy to compare against."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec
from uda_adapt.runtime.backends.base import input_size_from


class TorchBackend:
    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        threads: int | None = None,
        device: int = 0,
        input_size: tuple[int, int] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        import torch

        from uda_adapt.adapt.checkpoint import build_model, load_checkpoint

        self.path = Path(model_path)
        ckpt = load_checkpoint(self.path)
        self._torch = torch
        self._device = torch.device(f"cuda:{device}") if torch.cuda.is_available() else torch.device("cpu")
        if threads and self._device.type == "cpu":
            torch.set_num_threads(threads)
        self._model = build_model(ckpt).to(self._device)
        self.manifest = Manifest(
            classes=ckpt.classes,
            palette=ckpt.palette,
            input=InputSpec(mean=ckpt.mean, std=ckpt.std),   # size: DEFAULT_INPUT_SIZE unless --size
            output=OutputSpec(),
            ignore_index=IGNORE_INDEX,
            model_name=ckpt.model_name,
        )
        self.input_size = input_size_from(self.manifest, input_size)
        self.providers = [f"torch-{self._device.type}"]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        from uda_adapt.adapt.models import upsample_logits

        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device)
            logits = upsample_logits(self._model(x), tuple(batch.shape[-2:]))
            # .cpu() is the one host sync per frame: the renderer needs the mask on the host.
            return logits.argmax(1).to(torch.int32).cpu().numpy()

    def describe(self) -> str:
        h, w = self.input_size
        return f"torch {self.path.name} ({self.manifest.model_name}) on {self._device}, input {h}x{w}"

    def close(self) -> None:
        self._model = None
