"""The export directory as one atomic bundle.

Everything is written into a hidden sibling directory and renamed onto `--out` at the end, so
a failed or interrupted export leaves no partial artefacts and an existing export stays intact
until its replacement is complete. `--force` replaces an existing export, never a directory
that holds something else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from uda_adapt.common.atomic import ensure_writable_dir
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import MANIFEST_NAME


def check_out_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    """Validate `--out` before any work: writable parent, and no export there unless `force`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory for the export")
    if out.is_dir() and any(out.iterdir()):
        is_export = (out / MANIFEST_NAME).is_file() or any(out.glob("*.onnx"))
        if not is_export:
            raise UserError(f"--out {out} is not empty and holds no uda-adapt export; choose another --out "
                            "(--force only replaces an earlier export)")
        if not force:
            raise UserError(f"{out} already holds an export; pass --force to replace it, or choose another --out")
    ensure_writable_dir(out.parent)
    return out


@contextlib.contextmanager
def staged_bundle(out_dir: str | os.PathLike, force: bool) -> Iterator[Path]:
    """Yield a staging directory; if the block succeeds it becomes `out_dir`, else it is removed."""
    out = check_out_dir(out_dir, force)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".staging", dir=out.parent))
    try:
        yield stage
        _install(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _install(stage: Path, out: Path) -> None:
    _make_readable(stage)
    # Two renames within one parent directory: the old export is only removed once the new
    # one is in place, so at every instant `out` is either the old or the new bundle.
    previous = None
    if out.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".replaced", dir=out.parent))
        os.replace(out, previous / out.name)
    try:
        os.replace(stage, out)
    except OSError:
        if previous is not None:
            os.replace(previous / out.name, out)
            previous.rmdir()
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Temporary files and folders are created private (0600/0700); a bundle gets the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
