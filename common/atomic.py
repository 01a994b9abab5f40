"""Atomic file writes: a killed process leaves either the old file or the new one, never half.

Everything uda-adapt writes that a later run would trust (images, labels, checkpoints,
manifests, exported models) goes through here: write to a temporary sibling, fsync, rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from uda_adapt.common.errors import UserError


# Errors of the disk or file system, not of the program: a full disk, a quota, a read-only mount.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the final suffix, so libraries that pick a format from the
    extension (OpenCV, torch, onnx) still do the right thing.
    """
    final = Path(path)
    ensure_writable_dir(final.parent)
    # The name is chosen before `try` and the file created inside it, so a Ctrl-C at any point
    # (even between creating the file and binding its name) still reaches the cleanup below.
    # Not mkstemp: its 0600 mode would stick to the final file; O_EXCL keeps the name ours.
    tmp = final.with_name(f".{final.stem}.{secrets.token_hex(6)}.tmp{final.suffix}")
    created = False
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        created = True
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except FileExistsError:
        if not created:   # a name collision: the file is someone else's, leave it
            tmp = None
        raise
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise UserError(f"cannot write {final}: {exc.strerror}; free some disk space or choose another output "
                        "(the previous file, if any, is unchanged)") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create `directory` if needed and check that we can write there, with a user-facing error."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {folder}: {exc.strerror}; choose another --out") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output directory {folder} is not writable; choose another --out or fix its permissions")
    return folder
