"""The JetPack-like environment of the GStreamer tests, and running `uda-adapt` in it.

The environment: the system OpenCV built with GStreamer (Debian's or JetPack's python3-opencv),
PyGObject with gst-rtsp-server, seen from a venv made with --system-site-packages. Where any of
it is missing the tests skip, unless UDA_ADAPT_REQUIRE_GSTREAMER=1 (as `.ci/run` sets), which
turns the skip into a failure so that CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED = os.environ.get("UDA_ADAPT_REQUIRE_GSTREAMER") == "1"


def missing_pieces() -> list[str]:
    """What this environment lacks for the GStreamer tests; empty when it has it all."""
    missing = []
    from uda_adapt.runtime import cvbuild

    if not cvbuild.has_gstreamer():
        missing.append("OpenCV with GStreamer (python3-opencv)")
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import Gst, GstRtspServer  # noqa: F401
    except (ImportError, ValueError):
        missing.append("PyGObject with gst-rtsp-server (python3-gi, gir1.2-gst-rtsp-server-1.0)")
    for tool in ("ffprobe",):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (ffmpeg)")
    return missing


def require_gstreamer(module_level: bool = False) -> None:
    """Skip (or, in CI, fail) unless the JetPack-like environment is here."""
    missing = missing_pieces()
    if missing:
        message = "needs " + ", ".join(missing) + "; see CONTRIBUTING.md, GStreamer tests"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=module_level)


def gst():
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    return Gst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uda_command(*args) -> list[str]:
    return [sys.executable, "-m", "uda_adapt", *map(str, args)]


def uda_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


class Process:
    """A `uda-adapt` child whose stderr is collected line by line as it runs."""

    def __init__(self, *args, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._popen = subprocess.Popen(uda_command(*args), cwd=REPO, env=env or uda_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._popen.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float, after: int = 0) -> int:
        """Wait until a stderr line after index `after` contains `text`; its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, line in enumerate(self.lines[after:], start=after):
                if text in line:
                    return index
            if self._popen.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from uda-adapt {' '.join(map(str, self.args))} within {timeout} s:\n{self.stderr[-3000:]}")

    def running(self) -> bool:
        return self._popen.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the CLI's Ctrl-C) and wait; the exit status."""
        if self._popen.poll() is None:
            self._popen.terminate()
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            status = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait(10)
            raise AssertionError(f"uda-adapt {' '.join(map(str, self.args))} did not end within {timeout} s:\n{self.stderr[-3000:]}") from None
        self._reader.join(5)
        return status

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait(10)
