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
    other = tmp_path / ".out.same.tmp.txt"
    other.write_text("someone else's")
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert other.read_text() == "someone else's"
