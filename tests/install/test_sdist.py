"""The sdist is enough to run the tests: it holds tests, samples, docs, benchmarks and the licence files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def test_the_sdist_holds_tests_samples_and_docs(tmp_path):
    # From a copy without build leftovers: setuptools would otherwise reuse an old *.egg-info file list.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info",
                                                                 "__pycache__", ".hypothesis", ".pytest_cache"))
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (sdist,) = tmp_path.glob("uda_adapt-*.tar.gz")
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "CONTRIBUTING.md", "pyproject.toml",
                     "tests/install/test_sdist.py", "tests/export/fake_tensorrt.py", "samples/configs/synthetic.yaml",
                     "samples/assets/video_demo_frame.png", "docs/results.md", "benchmarks/update_readme.py",
                     "benchmarks/results/ablation.md", ".ci/run"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
