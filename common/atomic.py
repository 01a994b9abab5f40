"""Atomic file writes: a killed process leaves either the old file or the new one, never half.

Everything uda-adapt writes that a later run would trust (images, labels, checkpoints,
manifests, exported models) goes through here: write to a temporary sibling, fsync, rename,
fsync the folder. After that last fsync the file survives a power cut too (before it, the
rename may be lost with the power, leaving the old file or none, still never half of one).

`atomic_create_bytes` never replaces: two processes that pick the same new name cannot
overwrite each other's file; the second gets FileExistsError and picks another name.
Temporaries carry their writer's pid, so a later run can delete those of a killed one
(`remove_stale_temporaries`) without touching those of a run still writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from uda_adapt.common.errors import UserError


# Errors of the disk or file system, not of the program: a full disk, a quota, a read-only mount.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}
# os.link on file systems without hard links (FAT/exFAT SD cards and USB disks).
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}
# `.<stem>.<pid>-<hex>.tmp<suffix>`: the temporary name atomic_path picks.
TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]+\.tmp(\.[^.]*)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the final suffix, so libraries that pick a format from the
    extension (OpenCV, torch, onnx) still do the right thing. `replace=False`: an existing
    `path` is never replaced; FileExistsError instead.
    """
    final = Path(path)
    ensure_writable_dir(final.parent)
    # The name is chosen before `try` and the file created inside it, so a Ctrl-C at any point
    # (even between creating the file and binding its name) still reaches the cleanup below.
    # Not mkstemp: its 0600 mode would stick to the final file; O_EXCL keeps the name ours.
    tmp = final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(6)}.tmp{final.suffix}")
    created = False
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        created = True
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, final)
        else:
            _create_exclusively(tmp, final)
        fsync_directory(final.parent)
    except FileExistsError:
        if not created:   # a name collision of the temporary: the file is someone else's, leave it
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


def atomic_create_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a new file `path`, whole; FileExistsError (nothing written) if `path` exists."""
    with atomic_path(path, replace=False) as tmp:
        tmp.write_bytes(data)


def _create_exclusively(tmp: Path, final: Path) -> None:
    """Give `tmp` the name `final` unless `final` exists (then FileExistsError)."""
    try:
        os.link(tmp, final)           # atomic and exclusive: readers never see a partial file
        return
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno not in NO_HARD_LINKS:
            raise
    # No hard links here: claim the name with O_EXCL, then rename over our own empty claim.
    os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    os.replace(tmp, final)


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the names in `folder` (a rename into it) durable; a no-op where the file system cannot."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporaries in `folder` whose writer is no longer running (a SIGKILL, a power cut); how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not _running(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # another user's process: running
        return True
    return True


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
