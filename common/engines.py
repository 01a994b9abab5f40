"""Which TensorRT engine of a bundle runs here: the device an engine is tied to, names, the match.

A TensorRT plan runs only on the TensorRT release (major.minor.patch) and GPU it was built for,
and it is tuned for the board it was built on: every Jetson Orin module reports compute
capability 8.7 and the CUDA name "Orin", yet an AGX Orin plan is tuned for 2048 cores and may
use DLA cores an Orin Nano does not have. So an engine is keyed by the TensorRT version, the
compute capability, the device's model name (`/proc/device-tree/model` on a Jetson, the CUDA
device name elsewhere) and its DLA core, and a bundle holds one engine per device, side by
side, each with its entry in `model.json`. Torch- and TensorRT-free: the runtime asks before it
imports TensorRT.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import EngineSpec, Manifest

# A Jetson names its board here ("NVIDIA Jetson AGX Orin Developer Kit"); its CUDA name is only "Orin".
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


@dataclasses.dataclass(frozen=True)
class Device:
    """What a TensorRT plan is tied to: the TensorRT release, the GPU, the board and its DLA cores."""

    trt_version: str
    compute_capability: str     # "8.7"
    model: str                  # "NVIDIA Jetson Orin Nano Developer Kit", "NVIDIA GeForce RTX 4090"
    dla_cores: int = 0          # AGX Orin, Orin NX 16GB: 2; Orin NX 8GB: 1; Orin Nano, discrete GPUs: 0

    @property
    def key(self) -> str:
        return device_key(self.model)


def device_model_name(cuda_name: str, device_tree: Path | None = None) -> str:
    """The board's model name on a Jetson (device tree), else the CUDA device name."""
    tree = device_tree if device_tree is not None else DEVICE_TREE_MODEL
    try:
        text = tree.read_bytes().decode(errors="replace").strip("\x00").strip()
    except OSError:            # not a Jetson (no device tree), or not readable
        text = ""
    return text or cuda_name.strip()


def device_key(model: str) -> str:
    """"NVIDIA Jetson AGX Orin Developer Kit" -> "jetson-agx-orin-developer-kit": a file-name part."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return slug.removeprefix("nvidia-") or "gpu"


def trt_version_key(version: str) -> str:
    """major.minor.patch: engines are tied to it, and the engine file name carries it."""
    return ".".join(str(version).split(".")[:3])


def engine_file_name(device: Device, precision: str, dla_core: int | None = None) -> str:
    """model.trt<major.minor.patch>.sm<cc>.<device>[.dla<N>].<precision>.engine: one per device, side by side."""
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"model.{_device_part(device)}{dla}.{precision}.engine"


def timing_cache_name(device: Device) -> str:
    """timing.trt<ver>.sm<cc>.<device>.cache: TensorRT refuses a timing cache from another version or GPU."""
    return f"timing.{_device_part(device)}.cache"


def _device_part(device: Device) -> str:
    major, minor = _cc_text(device.compute_capability).split(".")
    return f"trt{trt_version_key(device.trt_version)}.sm{major}{minor}.{device.key}"


def check_engine_compatible(engine: EngineSpec, device: Device) -> None:
    """Refuse an engine built for another TensorRT, GPU or board, or for a DLA core this device lacks."""
    problems = _mismatches(engine, device)
    if problems:
        raise _refusal(engine, problems)


def matching_engine(manifest: Manifest, device: Device, precision: str | None = None) -> EngineSpec | None:
    """The manifest's engine for this device (and `precision`, if given); None when it has none."""
    candidates = [e for e in manifest.engines if precision is None or e.precision == precision]
    # A GPU engine before a DLA one: the DLA frees the GPU but is slower for a single stream.
    candidates.sort(key=lambda e: e.dla_core is not None)
    return next((e for e in candidates if not _mismatches(e, device)), None)


def compatible_engine(manifest: Manifest, device: Device, precision: str | None = None) -> EngineSpec:
    """The manifest's engine for this device; a UserError naming why none fits, and the build command."""
    found = matching_engine(manifest, device, precision)
    if found is not None:
        return found
    candidates = [e for e in manifest.engines if precision is None or e.precision == precision]
    if not candidates:
        option = f" --precision {precision}" if precision else ""
        raise UserError(f"the export has no {precision + ' ' if precision else ''}TensorRT engine; build one on "
                        f"this device with `uda-adapt build BUNDLE{option}`")
    candidates.sort(key=lambda e: e.dla_core is not None)
    raise _refusal(candidates[0], _mismatches(candidates[0], device))


def _refusal(engine: EngineSpec, problems: list[str]) -> UserError:
    return UserError(f"engine {engine.file} was built for {' and '.join(problems)}; build one for this device with "
                     f"`uda-adapt build BUNDLE --precision {engine.precision}`")


def _mismatches(engine: EngineSpec, device: Device) -> list[str]:
    here_cc = _cc_text(device.compute_capability)
    problems = []
    if trt_version_key(engine.trt_version) != trt_version_key(device.trt_version):
        problems.append(f"TensorRT {engine.trt_version} (this system has {device.trt_version})")
    if _cc_text(engine.compute_capability) != here_cc:
        problems.append(f"compute capability {engine.compute_capability} (this GPU is {here_cc})")
    # Entries written before the board was recorded name only the CUDA device: on a Jetson
    # ("Orin") that never equals the board's name, so such an engine is rebuilt, never guessed at.
    built_on = engine.device_model or engine.gpu_name
    if device_key(built_on) != device.key:
        problems.append(f"{built_on} (this device is {device.model})")
    if engine.dla_core is not None and engine.dla_core >= device.dla_cores:
        problems.append(f"DLA core {engine.dla_core} (this device has {device.dla_cores} DLA "
                        f"core{'s' if device.dla_cores != 1 else ''})")
    return problems


def _cc_text(value: str | tuple[int, int]) -> str:
    """"8.7", "sm87", "87" or (8, 7) -> "8.7"."""
    if isinstance(value, (tuple, list)):
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).lower().removeprefix("sm").removeprefix("_")
    if "." in text:
        major, minor = text.split(".", 1)
        return f"{int(major)}.{int(minor)}"
    return f"{int(text[:-1])}.{int(text[-1])}"
