"""Endurance of the video pipeline: a long synthetic live stream into a sink slower than the source.

The quick version runs in the tests (tests/runtime/test_endurance.py). This one runs thousands of
frames and prints what a long camera session would show: traced memory at intervals (it should
stay flat), frames written / dropped / captured, the latency percentiles in --latest mode
(bounded by about one sink write, never growing), and whether every thread ended.

    python benchmarks/runtime_endurance.py --frames 20000 --sink-ms 4
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE  # noqa: E402
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec  # noqa: E402
from uda_adapt.runtime.capture import Backoff, CaptureThread  # noqa: E402
from uda_adapt.runtime.pipeline import run_pipeline  # noqa: E402
from uda_adapt.runtime.preprocess import Preprocessor  # noqa: E402
from uda_adapt.runtime.render import Renderer, RenderOptions  # noqa: E402
from uda_adapt.runtime.sinks import NullSink  # noqa: E402


class SyntheticCamera:
    """A camera-paced source: `frames` frames, one every `interval` seconds, then the end.

    Not `live`: a live source that stops is reconnected forever, and this one should end the run.
    """

    live, fps = False, None

    def __init__(self, frames: int, size: tuple[int, int], interval: float) -> None:
        self.name = "synthetic://"
        self._left, self._interval = frames, interval
        self._images = [np.full((*size, 3), 40 * i, np.uint8) for i in range(4)]

    def open(self) -> None: ...

    def read(self):
        time.sleep(self._interval)
        if self._left <= 0:
            return False, None
        self._left -= 1
        return True, self._images[self._left % 4]

    def skip(self) -> bool:
        return True

    def close(self) -> None: ...


class ConstantBackend:
    def __init__(self, size: tuple[int, int]) -> None:
        self.manifest = Manifest(classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, input=InputSpec(size=size),
                                 output=OutputSpec())
        self.input_size = size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], *batch.shape[2:]), np.int32)

    def describe(self) -> str:
        return "constant mask"


class SlowSink(NullSink):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def write(self, image: np.ndarray) -> bool:
        time.sleep(self.seconds)
        return super().write(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5000, help="Frames the source delivers.")
    parser.add_argument("--size", nargs=2, type=int, default=(64, 128), metavar=("H", "W"))
    parser.add_argument("--source-ms", type=float, default=1.0, help="Source frame interval.")
    parser.add_argument("--sink-ms", type=float, default=4.0, help="Time of one sink write (slower than the source).")
    parser.add_argument("--buffered", action="store_true", help="Every frame in order instead of --latest.")
    args = parser.parse_args()
    size = tuple(args.size)

    backend = ConstantBackend(size)
    source = SyntheticCamera(args.frames, size, args.source_ms / 1000)
    capture = CaptureThread(source, latest=not args.buffered, backoff=Backoff(0.01, 0.01), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False))
    memory: list[tuple[int, int]] = []

    def on_frame(index: int, image: np.ndarray) -> None:
        if index % 250 == 0:
            memory.append((index, tracemalloc.get_traced_memory()[0]))

    threads_before = threading.active_count()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        report = run_pipeline(capture, backend, Preprocessor(backend.manifest.input, size), renderer,
                              SlowSink(args.sink_ms / 1000), on_frame=on_frame, log=lambda m: None)
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started

    mode = "buffered" if args.buffered else "latest"
    print(f"{args.frames} frames of {size[0]}x{size[1]}, source every {args.source_ms} ms, sink {args.sink_ms} ms, "
          f"--{mode}, {seconds:.1f} s")
    print(f"frames   {report.frames} written, {report.captured} captured, {report.dropped} dropped, "
          f"{report.captured - report.frames - report.dropped} neither (in flight at the end)")
    lat = report.latency_ms
    print(f"latency  p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms")
    if len(memory) > 1:
        first, last = memory[1] if len(memory) > 2 else memory[0], memory[-1]
        print(f"memory   {first[1] / 1024:.0f} KiB at frame {first[0]} -> {last[1] / 1024:.0f} KiB at frame {last[0]} "
              f"({(last[1] - first[1]) / 1024:+.0f} KiB)")
    print(f"threads  {threading.active_count() - threads_before} left over after the run")


if __name__ == "__main__":
    main()
