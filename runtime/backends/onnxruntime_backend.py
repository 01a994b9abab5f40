"""ONNX Runtime: the CUDA execution provider when this onnxruntime has it, else the CPU."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.manifest import Manifest, manifest_for, read_manifest
from runtime.backends.base import input_size_from, logits_to_mask


class OnnxRuntimeBackend:
    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        threads: int | None = None,
        device: int = 0,
        input_size: tuple[int, int] | None = None,
        log: Callable[[str], None] | None = None,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        self.manifest = load_onnx_manifest(self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Spinning workers start each op a little sooner but burn the cores that capture and
        # render need while they wait; in a pipeline on a few cores that costs more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        available = ort.get_available_providers()
        providers: list = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device}))
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad or foreign files
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"onnxruntime cannot load {self.path}: {first.rstrip('.')}; if the file is damaged or cut short, "
                            "export it again with `uda-adapt export CKPT --out DIR`") from exc
        self.providers = list(self._session.get_providers())
        self.threads = threads
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        self._input_name = self.manifest.input.name if self.manifest.input.name in names else names[0]
        self._output_name = self._session.get_outputs()[0].name
        shape = next(i.shape for i in inputs if i.name == self._input_name)
        static = tuple(shape[2:]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None
        self.input_size = input_size_from(self.manifest, input_size or static)
        if static and input_size and tuple(input_size) != static:
            raise UserError(f"{self.path} has a fixed input size {static[0]}x{static[1]}; drop --size or re-export with --dynamic")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # ORT releases the GIL for the whole run, so capture and render threads keep working.
        (output,) = self._session.run([self._output_name], {self._input_name: batch})
        return logits_to_mask(output)

    def describe(self) -> str:
        h, w = self.input_size
        threads = f", {self.threads} threads" if self.threads else ""
        return f"onnxruntime {self.path.name} on {', '.join(self.providers)}{threads}, input {h}x{w}"

    def close(self) -> None:
        self._session = None


def load_onnx_manifest(model_path: Path) -> Manifest:
    """`model.json` beside the model, else the copy in the ONNX `metadata_props`."""
    sidecar = manifest_for(model_path)
    if sidecar.is_file():
        return read_manifest(sidecar)
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types
        raise UserError(f"{model_path} is not a readable ONNX model ({type(exc).__name__}: it is damaged or cut short); "
                        "export it again with `uda-adapt export CKPT --out DIR`") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if "classes" not in props:
        raise UserError(f"{model_path} has no manifest: {sidecar} is missing and the ONNX carries no uda-adapt metadata; export it with `uda-adapt export`")
    values = {}
    for key, value in props.items():
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return Manifest.from_dict(values, source=f"{model_path} metadata")
