"""The built wheel installs one top-level package, `uda_adapt`, and nothing a user's own folders shadow."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy without build leftovers: an in-tree build/ would slip stale files into the wheel.
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info",
                                                                 "__pycache__", ".hypothesis", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = out.glob("uda_adapt-*.whl")
    return found


def test_the_wheel_puts_only_uda_adapt_at_the_top(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"uda_adapt"}, top
    for package in ("common", "adapt", "adapt/train", "adapt/data/synth", "adapt/models", "export", "runtime",
                    "runtime/backends", "cli"):
        assert f"uda_adapt/{package}/__init__.py" in names, package   # every subpackage made it in
    assert "uda_adapt/__main__.py" in names
    configs = {n.split("/")[-1] for n in names if n.startswith("uda_adapt/configs/")}
    assert configs == {p.name for p in (REPO / "samples" / "configs").glob("*.yaml")}, configs   # package data
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "uda-adapt = uda_adapt.cli.main:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_source_package_is_listed_in_pyproject():
    """A new subfolder with an __init__.py must be named in pyproject's package list, or the wheel drops it."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"uda_adapt", "uda_adapt.configs"}   # configs: samples/configs as package data, no code
    for top in ("common", "adapt", "export", "runtime", "cli"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add("uda_adapt." + ".".join(init.parent.relative_to(REPO).parts))
    assert found == listed, found ^ listed


def test_config_names_resolve_from_the_unpacked_wheel(wheel, tmp_path):
    """`--config NAME` finds the packaged YAML, not the checkout's samples/ (run outside the repository)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import uda_adapt; from uda_adapt.adapt.config_files import resolve_config_file; "
            "print(uda_adapt.__file__); print(resolve_config_file('gta5_to_cityscapes_mean_teacher'))")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    package_file, resolved = done.stdout.split()
    assert package_file == str(site / "uda_adapt" / "__init__.py")        # the wheel's copy, not the checkout
    assert resolved == str(site / "uda_adapt" / "configs" / "gta5_to_cityscapes_mean_teacher.yaml")
    unknown = subprocess.run([sys.executable, "-m", "uda_adapt", "train", "--config", "gta5_to_nowhere", "--out", "run"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert unknown.returncode == 1
    (line,) = unknown.stderr.strip().splitlines()
    assert "gta5_to_nowhere" in line and "gta5_to_cityscapes_mean_teacher, synthetic" in line.replace("synthetic,", "synthetic")
