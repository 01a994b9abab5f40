"""Which TensorRT engine of a bundle runs here: names, and the version/GPU match.

A TensorRT plan runs only on the TensorRT (major.minor.patch) and GPU compute capability it
was built for, so a bundle may hold one engine per device, side by side, each with its entry
in `model.json`. Torch- and TensorRT-free: the runtime asks before it imports TensorRT.
"""

from __future__ import annotations

from common.errors import UserError
from common.manifest import EngineSpec, Manifest


def trt_version_key(version: str) -> str:
    """major.minor.patch: engines are tied to it, and the engine file name carries it."""
    return ".".join(str(version).split(".")[:3])


def engine_file_name(trt_version: str, compute_capability: str | tuple[int, int], precision: str,
                     dla_core: int | None = None) -> str:
    """model.trt<major.minor.patch>.sm<cc>[.dla<N>].<precision>.engine: engines for several devices side by side."""
    major, minor = _cc_text(compute_capability).split(".")
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"model.trt{trt_version_key(trt_version)}.sm{major}{minor}{dla}.{precision}.engine"


def check_engine_compatible(engine: EngineSpec, trt_version: str, compute_capability: str | tuple[int, int]) -> None:
    """Refuse an engine built for another TensorRT (major.minor.patch) or GPU compute capability."""
    problems = _mismatches(engine, trt_version, compute_capability)
    if problems:
        raise UserError(f"engine {engine.file} was built for {' and '.join(problems)}; rebuild it on this device "
                        f"with `uda-adapt build BUNDLE --precision {engine.precision}`")


def compatible_engine(manifest: Manifest, trt_version: str, compute_capability: str | tuple[int, int],
                      precision: str | None = None) -> EngineSpec:
    """The manifest's engine for this TensorRT and GPU (and `precision`, if given)."""
    candidates = [e for e in manifest.engines if precision is None or e.precision == precision]
    # A GPU engine before a DLA one: the DLA frees the GPU but is slower for a single stream.
    candidates.sort(key=lambda e: e.dla_core is not None)
    if not candidates:
        option = f" --precision {precision}" if precision else ""
        raise UserError(f"the export has no {precision + ' ' if precision else ''}TensorRT engine; build one on "
                        f"this device with `uda-adapt build BUNDLE{option}`")
    for engine in candidates:
        if not _mismatches(engine, trt_version, compute_capability):
            return engine
    check_engine_compatible(candidates[0], trt_version, compute_capability)  # raises, naming the mismatch
    return candidates[0]


def _mismatches(engine: EngineSpec, trt_version: str, compute_capability: str | tuple[int, int]) -> list[str]:
    here_cc = _cc_text(compute_capability)
    problems = []
    if trt_version_key(engine.trt_version) != trt_version_key(trt_version):
        problems.append(f"TensorRT {engine.trt_version} (this system has {trt_version})")
    if _cc_text(engine.compute_capability) != here_cc:
        problems.append(f"compute capability {engine.compute_capability} (this GPU is {here_cc})")
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
