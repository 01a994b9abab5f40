"""`uda-adapt checks`: one report for bug reports, whatever is (not) installed, torch or no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from uda_adapt.cli import checks
from uda_adapt.cli.main import main

MISSING = ("torch", "onnxruntime", "tensorrt", "cv2")


def test_the_report_names_every_component(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    for key in ("uda-adapt:", "python:", "torch:", "onnxruntime:", "providers:", "tensorrt:", "cuda-python:", "opencv:",
                "gstreamer:", "board:", "built-in configs:"):
        assert key in out, key
    assert "gta5_to_cityscapes_mean_teacher" in out


def test_json_holds_the_same_sections(capsys):
    assert main(["checks", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == list(checks.PROBES)
    assert report["onnxruntime"]["providers"].endswith("CPUExecutionProvider")


def test_missing_packages_are_findings_and_torch_is_never_needed():
    """With torch, ONNX Runtime, TensorRT and OpenCV unimportable the report still comes, and loads no torch."""
    code = f"""
import sys
for name in {MISSING!r}:
    sys.modules[name] = None          # import fails as if not installed
import importlib.util
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in {MISSING!r} else real_find_spec(name, *a)
from uda_adapt.cli.checks import collect_checks, format_checks
report = collect_checks()
print(format_checks(report))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    for key in ("torch", "onnxruntime", "tensorrt", "opencv"):
        assert lines[key].strip().startswith("not installed"), (key, lines[key])


def test_a_probe_that_breaks_is_reported_and_the_rest_still_run():
    def broken() -> dict[str, str]:
        raise RuntimeError("libnvinfer.so.10: cannot open shared object file\nsecond line")

    report = checks.collect_checks({"tensorrt": broken, "system": checks.check_system})
    assert report["tensorrt"] == {"tensorrt": "error: RuntimeError: libnvinfer.so.10: cannot open shared object file"}
    assert report["system"]["uda-adapt"].startswith("0.") or report["system"]["uda-adapt"][0].isdigit()


def test_tensorrt_and_onnxruntime_versions_are_read_from_the_modules(monkeypatch):
    fake = types.ModuleType("tensorrt")
    fake.__version__, fake.__file__ = "10.3.0", "/usr/lib/python3/dist-packages/tensorrt/__init__.py"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(checks, "_installed", lambda name: True)
    assert checks.check_tensorrt() == {"tensorrt": "10.3.0 (/usr/lib/python3/dist-packages/tensorrt)"}


def test_the_board_comes_from_the_device_tree(tmp_path):
    model, release = tmp_path / "model", tmp_path / "nv_tegra_release"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    section = checks.check_board(model, release)
    assert section["board"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert section["l4t"].startswith("R36 (release), REVISION: 4.3")
    assert checks.check_board(tmp_path / "absent", tmp_path / "absent")["board"].startswith("not a Jetson")


@pytest.mark.parametrize("line, expected", [("    GStreamer:                   YES (1.22.0)", "YES (1.22.0)"),
                                            ("    GStreamer:                   NO", "NO")])
def test_opencv_build_flags_are_parsed(line, expected):
    assert checks._build_flag(f"Video I/O:\n{line}\n    FFMPEG: YES\n", "GStreamer") == expected
