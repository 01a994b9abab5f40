"""The runtime's fixtures (a tiny exported ONNX, a short clip), and a real `pip install '.[runtime]'` venv."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from conftest import clip_mp4, small_onnx  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]
# The interpreter of the runtime venv: this one, or another Python named by UDA_ADAPT_RUNTIME_PYTHON
# (.ci/run sets python3.10, JetPack 6's Python), while the fixtures that need torch run here.
RUNTIME_PYTHON = os.environ.get("UDA_ADAPT_RUNTIME_PYTHON") or sys.executable


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv holding `pip install '.[runtime]'` (no torch), made once per session with RUNTIME_PYTHON.

    A real install: pip builds the wheel from the source tree and resolves `[runtime]` (its wheel
    cache makes a second session quick). Commands run outside the source tree, so only what the
    install put into the venv is importable.
    """
    venv = tmp_path_factory.mktemp("runtime_install") / "venv"
    subprocess.run([RUNTIME_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{REPO}[runtime]"],
                            capture_output=True, text=True, timeout=800, cwd=venv.parent)
    assert result.returncode == 0, f"pip install '.[runtime]' failed:\n{result.stderr[-3000:]}"
    return venv
