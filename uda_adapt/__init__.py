"""uda-adapt: adapt a semantic segmenter to your camera, export it, and run it on video.

One import namespace for the whole toolkit: `uda_adapt.common` (torch-free, shared by all),
`uda_adapt.adapt` (training), `uda_adapt.export` (ONNX, TensorRT) and `uda_adapt.runtime` (video,
no torch), with the click CLI in `uda_adapt.cli`. The repository keeps these as top-level folders;
the wheel maps them under `uda_adapt/` (pyproject.toml's `package-dir`).
"""

from __future__ import annotations

from pathlib import Path

_SUBPACKAGES = ("common", "adapt", "export", "runtime", "cli")


def _source_tree_path() -> list[str]:
    """The checkout's root, where `uda_adapt` is imported from a source tree rather than a wheel.

    A wheel (or an editable install) finds the subpackages on its own; a plain checkout on
    `sys.path` (benchmarks run as scripts, `python -m uda_adapt` from the repository) has them one
    level up, beside this folder. Only a folder that holds this project's pyproject.toml qualifies,
    so an unrelated `adapt` package elsewhere is never picked up.
    """
    here = Path(__file__).resolve().parent
    root = here.parent
    if (here / "common").is_dir() or not (root / "pyproject.toml").is_file():
        return []
    if not all((root / name / "__init__.py").is_file() for name in _SUBPACKAGES):
        return []
    return [str(root)]


__path__ += _source_tree_path()  # noqa: F821  (a package's own __path__)

from uda_adapt.common import __version__  # noqa: E402

__all__ = ["__version__"]
