"""The deploy path needs neither torch nor the training stack (a Jetson without torch).

Each test runs a fresh interpreter in which `import torch` (and torchvision) raises
ImportError, as on a base or `[jetson]` install, through a `sitecustomize` on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent('''
    import sys

    class NoTraining:
        """Behave as if torch and torchvision were not installed."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "tensorboard", "matplotlib"):
                raise ImportError(f"No module named {name!r} (blocked: torch-free install test)")
            return None

    sys.meta_path.insert(0, NoTraining())
''')


@pytest.fixture(scope="module")
def torch_free_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no_torch")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _python(env, code):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks(torch_free_env):
    result = _python(torch_free_env, "import torch")
    assert result.returncode != 0 and "blocked: torch-free install test" in result.stderr


def test_importing_the_runtime_does_not_import_torch(torch_free_env):
    code = textwrap.dedent('''
        import sys
        import runtime, runtime.stream, runtime.bench, runtime.backends.onnxruntime_backend
        import runtime.backends.tensorrt_backend, runtime.check, runtime.bundle, common.cuda, common.engines
        import export.build, export.config
        import cli.main
        cli.main._register_commands()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnx", "adapt"))
        print(heavy)
        assert not heavy, heavy
    ''')
    result = _python(torch_free_env, code)
    assert result.returncode == 0, result.stderr + result.stdout


def test_uda_adapt_run_works_without_torch(torch_free_env, small_onnx, clip_mp4, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    command = [sys.executable, "-c", "import sys; from cli.main import run; sys.argv[0] = 'uda-adapt'; run()",
               "run", small_onnx, clip_mp4, str(out), "--headless", "--json", str(report)]
    result = subprocess.run(command, env=torch_free_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["frames"] > 0
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and capture.read()[0]
    capture.release()


def test_training_commands_say_what_to_install(torch_free_env, tmp_path):
    command = [sys.executable, "-c", "import sys; from cli.main import run; sys.argv[0] = 'uda-adapt'; run()",
               "export", str(tmp_path / "x.pt"), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, env=torch_free_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "uda-adapt: error: `uda-adapt export` needs the training install (torch and torchvision missing here): "
        "pip install 'uda-adapt[train]'; this install runs exported models only (run, bench, build, check)"]
