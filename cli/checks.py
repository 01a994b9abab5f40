"""`uda-adapt checks`: what this machine has, in one report to paste into a bug report (as `yolo checks`).

Each probe reports one component and never stops the others: a missing package is "not
installed", a broken one shows its error. Nothing here needs torch; where torch is installed it
is imported to read its CUDA view, which is what a training bug report needs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click

Section = dict[str, str]
NOT_INSTALLED = "not installed"
# Where a Jetson names its board and its L4T release (JetPack = L4T + user space).
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
L4T_RELEASE = Path("/etc/nv_tegra_release")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):      # a parent package missing, or a module with no spec
        return False


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_system() -> Section:
    import uda_adapt

    return {
        "uda-adapt": f"{uda_adapt.__version__} ({Path(uda_adapt.__file__).parent})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": _distribution_version("numpy") or NOT_INSTALLED,
    }


def check_torch() -> Section:
    if not _installed("torch"):
        return {"torch": f"{NOT_INSTALLED} (a runtime install: run, bench, build and check work without it)"}
    import torch

    section = {"torch": f"{torch.__version__} ({Path(torch.__file__).parent})",
               "torchvision": _distribution_version("torchvision") or NOT_INSTALLED,
               "cuda available": str(torch.cuda.is_available()),
               "torch built with CUDA": str(torch.version.cuda)}
    if torch.cuda.is_available():
        section["cudnn"] = str(torch.backends.cudnn.version())
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            section[f"gpu {index}"] = f"{props.name}, sm{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB"
    return section


def check_onnxruntime() -> Section:
    if not _installed("onnxruntime"):
        return {"onnxruntime": f"{NOT_INSTALLED} (desktop: pip install onnxruntime; Jetson: the onnxruntime-gpu "
                               "wheel built for your JetPack)"}
    import onnxruntime

    distribution = "onnxruntime-gpu" if _distribution_version("onnxruntime-gpu") else "onnxruntime"
    return {"onnxruntime": f"{onnxruntime.__version__} ({distribution})",
            "providers": ", ".join(onnxruntime.get_available_providers())}


def check_tensorrt() -> Section:
    if not _installed("tensorrt"):
        return {"tensorrt": f"{NOT_INSTALLED} (JetPack ships it; on x86: pip install 'uda-adapt[trt]')"}
    import tensorrt

    return {"tensorrt": f"{tensorrt.__version__} ({Path(tensorrt.__file__).parent})"}


def check_cuda_python() -> Section:
    for distribution in ("cuda-python", "cuda-bindings"):    # cuda-python 12.6+ is a metapackage over cuda-bindings
        version = _distribution_version(distribution)
        if version:
            return {"cuda-python": f"{version} ({distribution})"}
    return {"cuda-python": f"{NOT_INSTALLED} (TensorRT engines then use torch's CUDA)"}


def check_opencv() -> Section:
    if not _installed("cv2"):
        return {"opencv": f"{NOT_INSTALLED} (desktop: pip install 'uda-adapt[runtime]'; Jetson: JetPack's OpenCV)"}
    import cv2

    build = cv2.getBuildInformation()
    section = {"opencv": f"{cv2.__version__} ({Path(cv2.__file__).parent})"}
    for name in ("GStreamer", "FFMPEG", "GTK+", "QT"):
        found = _build_flag(build, name)
        if found is not None:
            section[name.lower().rstrip("+")] = found
    return section


def _build_flag(build_information: str, name: str) -> str | None:
    """'YES (1.20.3)' for the `name:` line of cv2.getBuildInformation(), or None when OpenCV does not list it."""
    for line in build_information.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.strip() == name:
            return " ".join(value.split())
    return None


def check_board(device_tree: Path = DEVICE_TREE_MODEL, l4t_release: Path = L4T_RELEASE) -> Section:
    section: Section = {}
    try:
        section["board"] = device_tree.read_bytes().decode(errors="replace").strip("\x00").strip()
    except OSError:
        section["board"] = "not a Jetson (no device-tree model)"
    try:
        section["l4t"] = l4t_release.read_text(errors="replace").splitlines()[0].strip("# ").strip()
    except (OSError, IndexError):
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"]
        try:
            done = subprocess.run(query, capture_output=True, text=True, timeout=10)
            section["nvidia-smi"] = "; ".join(done.stdout.strip().splitlines()) or done.stderr.strip() or "no GPU listed"
        except (OSError, subprocess.SubprocessError) as exc:
            section["nvidia-smi"] = f"did not answer: {exc}"
    return section


def check_configs() -> Section:
    from uda_adapt.adapt.config_files import builtin_configs

    return {"built-in configs": ", ".join(builtin_configs()) or "none found"}


# report section -> probe; the order is the report's
PROBES: dict[str, Callable[[], Section]] = {
    "system": check_system,
    "torch": check_torch,
    "onnxruntime": check_onnxruntime,
    "tensorrt": check_tensorrt,
    "cuda-python": check_cuda_python,
    "opencv": check_opencv,
    "board": check_board,
    "configs": check_configs,
}


def collect_checks(probes: dict[str, Callable[[], Section]] = PROBES) -> dict[str, Section]:
    """Every probe's findings; a probe that fails reports its error instead of stopping the report."""
    report: dict[str, Section] = {}
    for name, probe in probes.items():
        try:
            report[name] = probe()
        except Exception as exc:   # noqa: BLE001  a broken install is a finding here, not a crash
            report[name] = {name: f"error: {type(exc).__name__}: {exc}".splitlines()[0]}
    return report


def format_checks(report: dict[str, Section]) -> str:
    """`key  value` lines, keys aligned, in report order."""
    rows = [(key, value) for section in report.values() for key, value in section.items()]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in rows)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def checks(as_json: bool) -> None:
    """What this machine has (torch and CUDA, ONNX Runtime, TensorRT, OpenCV and GStreamer, the board): paste it into a bug report."""
    report = collect_checks()
    click.echo(json.dumps(report, indent=2) if as_json else format_checks(report))
