"""ONNX Runtime, on the best execution provider this onnxruntime has: TensorRT, then CUDA, then the CPU.

The onnxruntime-gpu builds for JetPack (Jetson Zoo) and for x86 carry the TensorRT and CUDA
execution providers: the middle road between CPU ONNX Runtime and a native engine (no
`uda-adapt build` step, TensorRT speed for the layers it takes, CUDA or CPU for the rest).
- TensorRT EP: used when listed and TensorRT's library is on this system. It builds its own
  engines on the first session (minutes on a Jetson) and keeps them, with a timing cache, in
  `ort_trt_cache/ort<version>.<device>/` beside the model (<device>: the Jetson board, else the
  GPU index; or under ~/.cache where the model's folder is read-only), so later runs start in
  seconds. Precision follows the ONNX: never lowered for model.onnx; for the precision-baked
  files, from ONNX Runtime 1.22 `trt_fp16_enable` stays off (the file's own types hold, and the
  Resize/ArgMax it keeps in fp32 stay fp32), int8 enabled for the Q/DQ model.int8.onnx.
- CUDA EP: `device_id` = --device.
The providers ONNX Runtime actually used are reported (`describe`), and a listed provider it
could not start (a missing CUDA or TensorRT library) is named in a note.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uda_adapt.common.engines import device_key, device_model_name
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import Manifest, manifest_for, read_manifest
from uda_adapt.runtime.backends.base import input_size_from, logits_to_mask

TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
TRT_CACHE_DIR = "ort_trt_cache"


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
        providers: Sequence[str] | None = None,
    ) -> None:
        """`providers`: execution provider names in order of preference [default: TensorRT, CUDA, CPU, as available]."""
        try:
            import onnxruntime as ort
        except ImportError:   # `[jetson]` leaves it out: JetPack's GPU build is installed by hand (samples/jetson.md)
            raise UserError("ONNX Runtime is not installed: pip install onnxruntime (or 'uda-adapt[runtime]'); on a "
                            "Jetson, the onnxruntime-gpu wheel built for your JetPack (samples/jetson.md)") from None

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
        available = list(ort.get_available_providers())
        names = choose_providers(available, providers, tensorrt_library_found())
        trt_cache = trt_cache_dir(self.path, ort.__version__, device) if TENSORRT_EP in names else None
        wanted = provider_options(names, device, onnx_precision(self.manifest, self.path), trt_cache, ort.__version__)
        if trt_cache is not None and log:
            log(f"note: ONNX Runtime's TensorRT provider builds its engines on the first run (minutes on a Jetson) and "
                f"keeps them in {trt_cache}")
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types for bad or foreign files
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"onnxruntime cannot load {self.path}: {first.rstrip('.')}; if the file is damaged or cut short, "
                            "export it again with `uda-adapt export CKPT --out DIR`") from exc
        self.providers = list(self._session.get_providers())
        missing = [name for name in names if name not in self.providers]
        if missing and log:   # ONNX Runtime falls back on its own, with a warning above; say what it means here
            log(f"note: ONNX Runtime could not start {', '.join(missing)} (its message is above); running on "
                f"{', '.join(self.providers)}")
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


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None, tensorrt_found: bool) -> list[str]:
    """Execution provider names to ask for, best first; the CPU is always the last resort."""
    if wanted is not None:
        unknown = [name for name in wanted if name not in available]
        if unknown:
            raise UserError(f"this onnxruntime has no {', '.join(unknown)}; it has {', '.join(available)} "
                            "(onnxruntime-gpu brings CUDA and TensorRT: on Jetson the JetPack build from the Jetson Zoo)")
        names = list(wanted)
    else:
        # The TensorRT EP is compiled into every onnxruntime-gpu wheel, but it needs libnvinfer at run time.
        names = [n for n in (TENSORRT_EP, CUDA_EP) if n in available and (n != TENSORRT_EP or tensorrt_found)]
    return names + [CPU_EP] if CPU_EP not in names else names


# From this ONNX Runtime on, the TensorRT EP takes a precision-baked ONNX's own types without
# trt_fp16_enable; with the flag TensorRT may run any layer in fp16 (weak typing).
ORT_KEEPS_ONNX_PRECISION = (1, 22)


def provider_options(names: Sequence[str], device: int, precision: str, trt_cache: Path | None,
                     ort_version: str) -> list[Any]:
    """`providers=` for InferenceSession: each name with its options."""
    options: dict[str, dict[str, Any]] = {CUDA_EP: {"device_id": device}}
    if trt_cache is not None:
        # trt_fp16_enable lets TensorRT pick fp16 for every layer (ONNX Runtime docs, TensorRT EP
        # "Configurations"), the Resize/ArgMax the fp16 export keeps in fp32 included: the ties
        # it exists to prevent. Only an ONNX Runtime that would not otherwise run fp16 gets it.
        fp16_flag = precision in ("fp16", "int8") and _version(ort_version) < ORT_KEEPS_ONNX_PRECISION
        options[TENSORRT_EP] = {
            "device_id": device,
            # An engine per model and shape, built on the first session: keep it, and the tactic timings.
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(trt_cache),
            # The Q/DQ scales of model.int8.onnx need TensorRT's INT8 mode.
            "trt_fp16_enable": fp16_flag, "trt_int8_enable": precision == "int8",
        }
    return [(name, options[name]) if name in options else name for name in names]


def _version(text: str) -> tuple[int, int]:
    """"1.22.0" -> (1, 22); unparsable parts count as 0."""
    parts = (str(text).split("+")[0].split(".") + ["0", "0"])[:2]
    return tuple(int(p) if p.isdigit() else 0 for p in parts)  # type: ignore[return-value]


def onnx_precision(manifest: Manifest, path: Path) -> str:
    """fp16 / int8 for a bundle's precision-baked variant, else fp32."""
    return next((p for p, variant in manifest.variants.items() if variant.get("file") == path.name), "fp32")


def tensorrt_library_found() -> bool:
    """libnvinfer on the library path (JetPack, NVIDIA's packages) or from the tensorrt wheel."""
    return ctypes.util.find_library("nvinfer") is not None or importlib.util.find_spec("tensorrt_libs") is not None


def trt_cache_dir(model_path: Path, ort_version: str, device: int) -> Path:
    """Where the TensorRT EP keeps its engines: per onnxruntime version (it fixes the TensorRT) and device."""
    name = f"ort{ort_version}.{device_key(device_model_name(f'gpu{device}'))}"
    for root in (model_path.parent / TRT_CACHE_DIR, Path.home() / ".cache" / "uda-adapt" / TRT_CACHE_DIR / _path_key(model_path)):
        folder = root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise UserError(f"cannot create a folder for ONNX Runtime's TensorRT engines beside {model_path} or in ~/.cache; "
                    "make one of them writable")


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


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
