"""Lower the scheduling priority of one thread: the pipeline's side work yields to inference.

On a CPU where the inference engine already keeps every core busy (ONNX Runtime on 2 cores),
capture, rendering and encoding at the same priority take their share of the cores in the
middle of the engine's parallel sections: one worker is descheduled and the whole operator waits
for it. At a lower priority (a higher nice value) the side work runs in the gaps the engine
leaves (between operators, in its serial parts) and preempts nothing. Measured with
benchmarks/pipeline_throughput.py --video (benchmarks/results/pipeline_run_vs_bare.md).

Linux only (a nice value is per thread there); elsewhere, or where the system refuses, nothing
changes and the call says so by returning False. A thread's nice value cannot be lowered again
without privileges, so only threads that end with the run are ever lowered: never the caller's.
"""

from __future__ import annotations

import os
import sys
import threading

MAX_NICE = 19
# `run`'s default for files: the lowest priority, measured ahead of 10 and 0
# (benchmarks/results/pipeline_run_vs_bare.md).
SIDE_NICE = 19


def lower_current_thread(increment: int) -> bool:
    """Raise this thread's nice value by `increment` (capped at 19); True when it took effect."""
    if increment <= 0 or not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + increment))
    except OSError:
        return False
    return True


def current_thread_nice() -> int | None:
    """This thread's nice value, or None where threads have none of their own."""
    if not sys.platform.startswith("linux") or not hasattr(os, "getpriority"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
