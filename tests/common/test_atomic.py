import os

import pytest

from uda_adapt.common.atomic import atomic_path, atomic_write_text, ensure_writable_dir
from uda_adapt.common.errors import UserError


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_written_files_get_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_output_under_a_regular_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create output directory"):
        ensure_writable_dir(blocker / "sub")


def test_ctrl_c_right_after_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch):
    """The window that once leaked `.name.xxxx.tmp.jpg` files: interrupted between creating and binding."""
    import uda_adapt.common.atomic as atomic
    real_open = os.open
    created = []

    def open_then_interrupt(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        created.append(path)
        os.close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "frame.txt", "x")
    assert created, "the temporary file was never created, so nothing was tested"
    assert list(tmp_path.iterdir()) == []


def test_a_name_collision_leaves_the_other_file_alone(tmp_path, monkeypatch):
    import uda_adapt.common.atomic as atomic
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "same")
    other = tmp_path / f".out.{os.getpid()}-same.tmp.txt"
    other.write_text("someone else's")
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert other.read_text() == "someone else's"


def test_create_never_replaces_an_existing_file(tmp_path):
    from uda_adapt.common.atomic import atomic_create_bytes

    target = tmp_path / "cap_000001.jpg"
    atomic_create_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        atomic_create_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap_000001.jpg"]


def test_create_without_hard_links_is_still_exclusive(tmp_path, monkeypatch):
    """FAT/exFAT (SD cards, USB disks) refuse os.link; the name is claimed with O_EXCL instead."""
    import errno

    import uda_adapt.common.atomic as atomic

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_link)
    target = tmp_path / "a.bin"
    atomic.atomic_create_bytes(target, b"one")
    with pytest.raises(FileExistsError):
        atomic.atomic_create_bytes(target, b"two")
    assert target.read_bytes() == b"one" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    import stat

    import uda_adapt.common.atomic as atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"),
                                                      real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "x.json", "{}")
    assert events == ["file", "rename", "dir"]


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from uda_adapt.common.atomic import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".cap_000003.{dead.pid}-a1b2c3.tmp.jpg"
    live = tmp_path / f".cap_000004.{os.getpid()}-a1b2c3.tmp.jpg"
    kept = tmp_path / "cap_000001.jpg"
    for path in (stale, live, kept):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, kept.name])
