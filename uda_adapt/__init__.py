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

# The documented Python API (docs/api.md), imported on first use so that `import uda_adapt` loads
# neither torch nor ONNX Runtime: a runtime-only install can use Segmenter, a training install all.
_API: dict[str, str] = {
    "train": "uda_adapt.api",
    "load_train_config": "uda_adapt.api",
    "export_model": "uda_adapt.export.api",
    "ExportConfig": "uda_adapt.export.config",
    "Segmenter": "uda_adapt.runtime.segmenter",
    "UserError": "uda_adapt.common.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    """`uda_adapt.Segmenter` and the rest of `_API`, imported when first asked for (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'uda_adapt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
