"""Where the figures came from: the machine and the versions of everything that was measured."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.speed.figures import one_line
from benchmarks.speed.plan import ROOT


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPUs, OS and the load when the run began: what a reader needs to compare figures."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "none"
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "gpu": gpu, "os": platform.platform(),
            "load_average_at_start": list(load) if load else None}


def versions() -> dict[str, str]:
    """Versions of Python, the project and the libraries measured, and the git commit; a missing one says so."""
    import common

    found = {"python": platform.python_version(), "uda-adapt": common.__version__}
    for label, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("opencv", "cv2"), ("numpy", "numpy"),
                          ("tensorrt", "tensorrt")):
        try:
            found[label] = __import__(module).__version__
        except ModuleNotFoundError:
            found[label] = "not installed"
        except (ImportError, OSError) as exc:  # e.g. a TensorRT wheel whose CUDA libraries are missing
            found[label] = f"not importable ({one_line(exc)})"
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False)
    found["git"] = git.stdout.strip() or "unknown"
    return found
