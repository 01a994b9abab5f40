"""A real `pip install '.[runtime]'` into a fresh venv: no torch, and `uda-adapt run model.onnx` works.

The venv (`runtime_venv`, conftest.py) is made from scratch once per session; every command runs
outside the source tree, so only what the install put into the venv is used. A stray
`import torch` in the deploy path, or a dependency missing from `[runtime]`, fails here.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import cv2
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def torch_free_env(runtime_venv) -> Path:
    """The `[runtime]` venv, for tests that run code in it with `_python`."""
    return runtime_venv


def _python(venv: Path, code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `code` with the venv's interpreter, outside the source tree."""
    return subprocess.run([str(venv / "bin" / "python"), "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=cwd or venv.parent)


def test_the_runtime_install_has_no_torch_and_imports_no_training_code(runtime_venv, tmp_path):
    code = '''
        import importlib.util, sys
        assert importlib.util.find_spec("torch") is None, "torch was installed by [runtime]"
        from uda_adapt import runtime
        import uda_adapt.runtime.stream, uda_adapt.runtime.bench, uda_adapt.runtime.backends.onnxruntime_backend
        import uda_adapt.runtime.backends.tensorrt_backend, uda_adapt.runtime.check, uda_adapt.runtime.bundle, uda_adapt.runtime.sinks, uda_adapt.runtime.sources
        import uda_adapt.common.cuda, uda_adapt.common.engines, uda_adapt.export.build, uda_adapt.export.config
        import uda_adapt.cli.main
        uda_adapt.cli.main._register_commands()
        assert runtime.__file__.startswith(sys.prefix), f"runtime comes from {runtime.__file__}, not the venv"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnx") or m.startswith("uda_adapt.adapt"))
        assert not heavy, heavy
    '''
    result = _python(runtime_venv, code, tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_uda_adapt_run_works_from_the_install(runtime_venv, small_onnx, clip_mp4, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    result = subprocess.run([str(runtime_venv / "bin" / "uda-adapt"), "run", small_onnx, clip_mp4, str(out), "--headless",
                             "--json", str(report)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["frames"] == 30
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and capture.read()[0]
    capture.release()


def test_training_commands_say_what_to_install(runtime_venv, tmp_path):
    result = subprocess.run([str(runtime_venv / "bin" / "uda-adapt"), "export", str(tmp_path / "x.pt"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "uda-adapt: error: `uda-adapt export` needs the training install (torch and torchvision missing here): "
        "pip install 'uda-adapt[train]'; this install runs exported models only (run, bench, build, check)"]


def test_the_python_segmenter_runs_on_numpy_frames_without_torch(runtime_venv, small_onnx, tmp_path):
    code = f'''
        import importlib.util, sys
        import numpy as np
        from uda_adapt import Segmenter
        assert importlib.util.find_spec("torch") is None
        frame = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
        with Segmenter({small_onnx!r}) as seg:
            mask = seg(frame)
        assert mask.shape == (60, 90) and mask.dtype == np.uint8 and mask.max() < len(seg.classes), mask.shape
        assert seg.colorize(mask).shape == (60, 90, 3)
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]
    '''
    result = _python(runtime_venv, code, tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_checks_reports_from_a_runtime_install(runtime_venv, tmp_path):
    result = subprocess.run([str(runtime_venv / "bin" / "uda-adapt"), "checks"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["torch"].strip().startswith("not installed")
    assert "CPUExecutionProvider" in lines["providers"]
    assert "gta5_to_cityscapes_mean_teacher" in lines["built-in configs"]     # package data of the installed wheel


def test_the_runtime_venv_runs_the_python_it_was_asked_for(runtime_venv):
    """UDA_ADAPT_RUNTIME_PYTHON=python3.10 (JetPack 6's Python) must not quietly test this interpreter instead."""
    from tests.install.conftest import RUNTIME_PYTHON

    version = "import sys; print(sys.version_info[:2])"
    asked = subprocess.run([RUNTIME_PYTHON, "-c", version], capture_output=True, text=True, timeout=60).stdout
    got = _python(runtime_venv, version).stdout
    assert got and got == asked
