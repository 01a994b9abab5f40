"""Progress for terminals and log files: when bars, when lines, and what a line says."""

from __future__ import annotations

import io

from uda_adapt.common import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_at_a_terminal_and_lines_only_off_one(monkeypatch):
    monkeypatch.delenv(progress.QUIET_VARIABLE, raising=False)
    terminal, file = _Terminal(), io.StringIO()
    assert progress.bars_enabled(stream=terminal) and not progress.lines_enabled(stream=terminal)
    assert progress.lines_enabled(stream=file) and not progress.bars_enabled(stream=file)
    assert not progress.lines_enabled(main=False, stream=file)          # other ranks stay silent


def test_quiet_silences_bars_and_lines_and_reaches_child_processes(monkeypatch):
    monkeypatch.delenv(progress.QUIET_VARIABLE, raising=False)
    progress.set_quiet(True)
    try:
        assert progress.is_quiet()
        assert not progress.bars_enabled(stream=_Terminal()) and not progress.lines_enabled(stream=io.StringIO())
        import os
        assert os.environ[progress.QUIET_VARIABLE] == "1"
    finally:
        progress.set_quiet(False)
    assert not progress.is_quiet()


def test_iteration_line_reads_like_mmseg():
    line = progress.iteration_line("self_train", 200, 4000, {"loss": 0.41234}, images_per_second=3.21,
                                   seconds_per_iteration=0.5, eta_seconds=3723)
    assert line == "self_train Iter [200/4000]  loss 0.4123  3.2 img/s  0.500 s/it  ETA 1:02:03"
    assert "\r" not in line


def test_format_duration():
    assert progress.format_duration(59.6) == "0:01:00"
    assert progress.format_duration(2 * 86400 + 3661) == "2 days, 1:01:01"
    assert progress.format_duration(float("inf")) == "?"
    assert progress.format_duration(float("nan")) == "?"
