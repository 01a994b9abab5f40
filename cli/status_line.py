"""A status line on stderr that never garbles a log or an error.

On a terminal it is rewritten in place (at most 10 times a second); off a terminal (a log file,
journald, `docker logs`) a rewritten line would pile up carriage returns, so it prints one plain
line per interval instead. A log message or the final line first ends the line being rewritten.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

TTY_INTERVAL_S = 0.1
PLAIN_INTERVAL_S = 10.0


class StatusLine:
    def __init__(self, prefix: str, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.prefix = prefix
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = TTY_INTERVAL_S if self._tty else PLAIN_INTERVAL_S
        self._shown_at = -float("inf") if self._tty else time.monotonic()
        self._open = False              # a rewritten line without its newline is on screen

    def show(self, text: str) -> None:
        """The current status; shown if the interval has passed since the last one."""
        now = time.monotonic()
        if now - self._shown_at < self._interval:
            return
        self._shown_at = now
        if self._tty:
            self._stream.write(f"\r\x1b[K{self.prefix}: {text}")
            self._open = True
        else:
            self._stream.write(f"{self.prefix}: {text}\n")
        self._stream.flush()

    def log(self, message: str) -> None:
        """A line of its own (a reconnect, a warning), below the status line."""
        self._end()
        self._stream.write(f"uda-adapt: {message}\n")
        self._stream.flush()

    def finish(self, text: str) -> None:
        """The last status, always shown, on a line of its own."""
        self._end()
        self._stream.write(f"{self.prefix}: {text}\n")
        self._stream.flush()

    def _end(self) -> None:
        if self._open:
            self._stream.write("\r\x1b[K")
            self._open = False
