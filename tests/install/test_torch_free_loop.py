"""The camera loop runs on the device without torch: capture, compare, run --watch --collect and the
first-run engine build, each as a command in the `[runtime]` venv (no torch installed there), so a
function-level `import torch` anywhere on these paths fails here rather than on a Jetson."""

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.install.test_torch_free import _python, torch_free_env  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FAKE_TENSORRT = Path(__file__).resolve().parents[1] / "export" / "fake_tensorrt.py"


def _uda(venv: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "uda-adapt"), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_capture_watch_collect_and_compare_import_without_torch(torch_free_env):  # noqa: F811
    code = textwrap.dedent('''
        import sys
        import uda_adapt.runtime.capture_set, uda_adapt.runtime.collect, uda_adapt.runtime.watch, uda_adapt.runtime.compare, uda_adapt.runtime.stream, uda_adapt.common.label_free
        import uda_adapt.cli.data, uda_adapt.cli.compare
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    ''')
    result = _python(torch_free_env, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_camera_loop_commands_run_without_torch(torch_free_env, small_onnx, clip_mp4, tmp_path):  # noqa: F811
    venv = torch_free_env
    assert _python(venv, "import importlib.util; assert importlib.util.find_spec('torch') is None").returncode == 0

    captured = _uda(venv, "data", "capture", clip_mp4, "--out", tmp_path / "set", "--max", "3", "--min-change", "0",
                    "--min-sharpness", "0", cwd=tmp_path)
    assert captured.returncode == 0, captured.stderr
    assert len(list((tmp_path / "set" / "train" / "images").glob("cap_*.jpg"))) == 3

    compared = _uda(venv, "compare", small_onnx, small_onnx, clip_mp4, tmp_path / "ab" / "ab.mp4", "--max-frames", "4", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert json.loads((tmp_path / "ab" / "compare.json").read_text())["frames"] == 4

    from tests.runtime.test_capture_set import blocky_frame, write_clip

    sharp = write_clip(tmp_path / "sharp.avi", [blocky_frame(i) for i in range(12)])     # --collect drops blurred frames
    watched = _uda(venv, "run", small_onnx, sharp, "null://", "--headless", "--watch", "--collect", tmp_path / "next",
                   "--collect-max", "2", "--json", tmp_path / "report.json", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    collect = json.loads((tmp_path / "report.json").read_text())["label_free"]["collect"]
    assert 1 <= collect["collected"] <= 2


def test_the_first_run_engine_build_runs_without_torch(torch_free_env, small_onnx, tmp_path):  # noqa: F811
    """`run BUNDLE` on a Jetson with no engine yet builds one (here with the fake TensorRT)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(Path(small_onnx).parent / name, bundle / name)
    shutil.copy(FAKE_TENSORRT, tmp_path / "fake_tensorrt.py")
    code = f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from fake_tensorrt import make_fake_tensorrt
        model = "NVIDIA Jetson Orin Nano Developer Kit"
        trt = make_fake_tensorrt("10.3.0.26")
        trt.gpu_tag = model
        sys.modules["tensorrt"] = trt
        import uda_adapt.common.engine_build as engine_build
        import uda_adapt.runtime.bundle as bundle
        from uda_adapt.common.engines import Device
        from uda_adapt.common.tensorrt_build import GpuInfo
        engine_build.detect_gpu = lambda device=0: GpuInfo("Orin", (8, 7), 0, model)
        bundle.installed_device = lambda device=0: Device("10.3.0.26", (8, 7), model, 0)
        path = bundle.model_in_bundle({str(bundle)!r}, log=print)
        assert str(path).endswith(".engine") and "torch" not in sys.modules, path
        print("built", path.name)
    '''
    result = _python(torch_free_env, code, tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "built model.trt10.3.0.sm87.jetson-orin-nano-developer-kit" in result.stdout
    assert len(list(bundle.glob("*.engine"))) == 1
