"""What each install brings: the main job pulls no test tools, [jetson] no PyPI onnxruntime, no torch cap."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from uda_adapt.common.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TEST_ONLY = ("pytest", "hypothesis", "cityscapesscripts")
IMPORTS_MATPLOTLIB = re.compile(r"^\s*(import|from)\s+matplotlib\b", re.MULTILINE)


def names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}


def main_job_command() -> str:
    readme = (REPO / "README.md").read_text()
    return next(line for line in readme.splitlines() if line.endswith("uda-adapt demo --out runs/demo"))


def test_the_main_jobs_install_pulls_no_test_tools():
    command = main_job_command()
    extras = command.split("-e '.[", 1)[1].split("]'", 1)[0].split(",")
    assert "train" in extras and "dev" not in extras, extras
    pulled = set().union(*(names(EXTRAS[e]) for e in extras)) | names(PYPROJECT["project"]["dependencies"])
    assert not pulled & set(TEST_ONLY), pulled & set(TEST_ONLY)


def test_no_extra_holds_cityscapesscripts_and_the_tests_install_it_without_its_dependencies():
    assert all("cityscapesscripts" not in names(reqs) for reqs in EXTRAS.values())
    ci = (REPO / ".ci" / "run").read_text()
    assert "--no-deps cityscapesscripts==2.3.0 pyquaternion" in ci


def test_matplotlib_is_for_benchmarks_only():
    assert "matplotlib" not in names(EXTRAS["train"]) and "matplotlib" in names(EXTRAS["bench"])
    importers = [str(p.relative_to(REPO)) for top in ("common", "adapt", "export", "runtime", "cli")
                 for p in (REPO / top).rglob("*.py") if IMPORTS_MATPLOTLIB.search(p.read_text())]
    assert not importers, importers


def test_onnxscript_comes_with_train_and_jetson_brings_no_onnxruntime():
    assert "onnxscript" in names(EXTRAS["train"])
    assert "onnxruntime" not in names(EXTRAS["jetson"]) and "onnxruntime" in names(EXTRAS["runtime"])


def test_torch_has_a_floor_and_no_cap():
    (torch,) = [r for r in EXTRAS["train"] if r.startswith("torch>") or r.startswith("torch<")]
    assert torch == "torch>=2.14"
    assert not any("<" in r for r in EXTRAS["train"] if r.startswith(("torch", "torchvision")))


def test_a_jetson_install_without_onnx_runtime_says_what_to_install(small_onnx, monkeypatch):
    from uda_adapt.runtime.backends import open_backend

    assert Path(small_onnx).is_file()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)    # `import onnxruntime` now fails, as on [jetson]
    with pytest.raises(UserError, match=r"ONNX Runtime is not installed: .*onnxruntime-gpu wheel built for your JetPack"):
        open_backend(small_onnx, "ort")
