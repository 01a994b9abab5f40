"""The built-in training configs, and `--config NAME` resolving to one of them.

The wheel ships `samples/configs/*.yaml` as package data in `uda_adapt/configs/` (pyproject's
`package-dir`), so `uda-adapt train --config gta5_to_cityscapes_mean_teacher` works after a plain
`pip install`, as Ultralytics resolves its `cfg` names; a source checkout reads the same files from
`samples/configs/`. A value that names an existing file is always that file.
"""

from __future__ import annotations

import os
from pathlib import Path

import uda_adapt
from uda_adapt.common.errors import UserError

SUFFIX = ".yaml"


def builtin_config_dir() -> Path | None:
    """Where the built-in configs live: the installed package's data, else the checkout's samples/."""
    package = Path(uda_adapt.__file__).resolve().parent
    for folder in (package / "configs", package.parent / "samples" / "configs"):
        if folder.is_dir() and any(folder.glob(f"*{SUFFIX}")):
            return folder
    return None


def builtin_configs() -> dict[str, Path]:
    """Built-in config name (the file's stem) -> its file, sorted by name."""
    folder = builtin_config_dir()
    if folder is None:
        return {}
    return {path.stem: path for path in sorted(folder.glob(f"*{SUFFIX}"))}


def resolve_config_file(value: str | os.PathLike) -> Path:
    """The YAML file `--config VALUE` means: an existing file, else a built-in name (with or without `.yaml`).

    A value that is neither is a `UserError` that lists the built-in names on one line.
    """
    file = Path(value)
    if file.is_file():
        return file
    builtin = builtin_configs()
    looks_like_name = len(file.parts) == 1
    name = file.stem if file.suffix == SUFFIX else file.name
    if looks_like_name and name in builtin:
        return builtin[name]
    names = ", ".join(builtin) or "none installed"
    if looks_like_name and file.suffix != SUFFIX:
        raise UserError(f"--config {value}: no such file and no built-in config of that name; built-in configs: {names}")
    raise UserError(f"config file {file} does not exist; give a YAML path or a built-in config name: {names}")
