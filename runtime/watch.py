"""`uda-adapt run --watch` / `--collect`: the label-free measure, frame by frame, on the device.

    [infer thread]  preprocess(frame) ──> backend.infer ──> mask ─────────────┐
                          │  (MeasuringBackend: the photometric + flip view    │ results queue
                          └──> of the same frame, inferred on the same thread) │ (FIFO, in order)
    [caller]        WatchingRenderer.render(frame, mask): score of this frame <┘
                    -> running window (report + overlay) -> Collector (least-sure frames)

The measure is `common.label_free.RUNTIME`: the best of the validated measures that class ids
alone give (exported models fuse the argmax). Per frame it needs one more inference, which runs
on the inference thread, so backends that are not thread-safe (TensorRT contexts) are only
ever called from one thread. Scores travel from the inference thread to the render thread in a
FIFO: the pipeline hands results on in the order they were inferred.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable

import cv2
import numpy as np

from uda_adapt.common import label_free
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.capture import Log, log_to_stderr

# Frames in the running window: a few seconds of video, long enough to smooth single hard frames.
WINDOW = 100


class MeasuringBackend:
    """A backend that also scores each frame with `label_free.RUNTIME` (its raw value), in a FIFO."""

    def __init__(self, backend: Backend, preprocess: Callable[[np.ndarray], np.ndarray]) -> None:
        self._backend, self._preprocess = backend, preprocess
        self.manifest, self.input_size, self.providers = backend.manifest, backend.input_size, backend.providers
        self._frame: np.ndarray | None = None
        self._previous: tuple[np.ndarray, np.ndarray] | None = None     # (frame, mask) for flicker
        self._scores: collections.deque[float | None] = collections.deque()
        self._lock = threading.Lock()

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        self._frame = frame            # the same (infer) thread calls infer() next, with this frame's batch
        return self._preprocess(frame)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        masks = self._backend.infer(batch)
        score = self._score(self._frame, masks[0]) if self._frame is not None else None
        with self._lock:
            self._scores.append(score)
        return masks

    def _score(self, frame: np.ndarray, mask: np.ndarray) -> float | None:
        measure = label_free.RUNTIME
        if measure == "augment_agreement":
            view = label_free.augment(frame[None])[0]
            other = self._backend.infer(self._preprocess(view))[0]
            return float(label_free.augment_agreement_per_image(mask[None], other[None])[0])
        if measure == "temporal_flicker":
            previous, self._previous = self._previous, (frame, mask)
            if previous is None or previous[1].shape != mask.shape:
                return None
            changed, still = label_free.flicker_counts(previous[0], frame, previous[1], mask)
            return changed / still if still else None
        if measure == "classmix_accuracy":
            previous, self._previous = self._previous, (frame, mask)
            if previous is None or previous[0].shape != frame.shape or previous[1].shape != mask.shape:
                return None
            image, label = label_free.classmix(frame, previous[0], mask, previous[1], np.random.default_rng(0))
            predicted = self._backend.infer(self._preprocess(image))[0]
            return label_free.pixel_agreement(label_free.resize_nearest(predicted, label.shape), label)
        raise ValueError(f"no per-frame form of {measure}")

    def pop_score(self) -> float | None:
        """The score of the oldest frame not yet rendered."""
        with self._lock:
            return self._scores.popleft() if self._scores else None

    def describe(self) -> str:
        return self._backend.describe()

    def close(self) -> None:
        self._backend.close()


@dataclasses.dataclass
class WatchSummary:
    measure: str
    window: int
    frames_measured: int = 0
    current: float | None = None          # mean over the last `window` measured frames
    mean: float | None = None             # over the whole run
    worst_window: float | None = None     # the lowest window mean seen (drift shows here)
    history: list[tuple[int, float]] = dataclasses.field(default_factory=list)   # (frame, window mean) every window


class RunningWindow:
    def __init__(self, size: int = WINDOW) -> None:
        self.summary = WatchSummary(label_free.RUNTIME, size)
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._total = 0.0

    def add(self, frame_index: int, value: float) -> None:
        s = self.summary
        self._values.append(value)
        self._total += value
        s.frames_measured += 1
        s.current = float(np.mean(self._values))
        s.mean = self._total / s.frames_measured
        if len(self._values) == self._values.maxlen:
            s.worst_window = s.current if s.worst_window is None else min(s.worst_window, s.current)
        if s.frames_measured % s.window == 0:
            s.history.append((frame_index, round(s.current, 5)))


class WatchingRenderer:
    """The pipeline's renderer, plus the running window on the overlay and the collection of least-sure frames.

    Collecting is a side feature: a write that fails (a full disk) turns it off with one warning,
    and the stream, its output and the watch go on.
    """

    def __init__(self, renderer, measuring: MeasuringBackend, *, watch: bool, collector=None, log: Log = log_to_stderr) -> None:
        self._renderer, self._measuring, self._watch, self._collector = renderer, measuring, watch, collector
        self._log = log
        self.collect_stopped: str | None = None      # why collecting was turned off mid-run
        self.window = RunningWindow()
        self._index = 0

    def render(self, frame: np.ndarray, mask: np.ndarray, fps: float | None = None) -> np.ndarray:
        score = self._measuring.pop_score()
        image = self._renderer.render(frame, mask, fps)
        if score is not None:
            self.window.add(self._index, score)
            if self._collector is not None and self.collect_stopped is None:
                self._offer(frame, label_free.oriented(label_free.RUNTIME, score))
        current = self.window.summary.current
        if self._watch and current is not None:
            text = f"{label_free.RUNTIME} {current:.3f} (last {min(self.window.summary.frames_measured, WINDOW)})"
            width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0]
            origin = (max(4, image.shape[1] - width - 8), image.shape[0] - 10)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        self._index += 1
        return image

    def _offer(self, frame: np.ndarray, score: float) -> None:
        try:
            self._collector.offer(frame, score)
        except (UserError, OSError) as exc:
            self.collect_stopped = str(exc)
            self._log(f"--collect is off from frame {self._index}: {exc}; the run goes on without collecting "
                      f"({len(self._collector.collected())} frames kept in {self._collector.folder})")

    def report(self) -> dict:
        out = dataclasses.asdict(self.window.summary) if self._watch else {}
        if self._collector is not None:
            out["collect"] = {**self._collector.report(), "stopped": self.collect_stopped}
        return out


def attach_watch(backend: Backend, preprocess, renderer, *, watch: bool, collect: str | None, collect_max: int,
                 log: Log = log_to_stderr):
    """(backend, preprocess, renderer) for the pipeline, measuring each frame; the renderer reports."""
    from uda_adapt.runtime.collect import Collector

    collector = Collector(collect, collect_max) if collect else None
    if collector is not None and collector.continued:
        log(f"--collect continues the {collector.continued} frames already in {collector.folder}")
    measuring = MeasuringBackend(backend, preprocess)
    return measuring, measuring.preprocess, WatchingRenderer(renderer, measuring, watch=watch, collector=collector, log=log)


def format_watch(report: dict | None) -> str | None:
    """The lines `uda-adapt run` prints after its report."""
    if not report:
        return None
    lines = []
    if report.get("current") is not None:
        info = label_free.MEASURES[report["measure"]]
        lines.append(f"watch    {report['measure']} {report['current']:.4f} over the last {min(report['frames_measured'], report['window'])} "
                     f"frames, {report['mean']:.4f} over the run ({'higher' if info.higher_is_better else 'lower'} is better)")
    if "collect" in report:
        c = report["collect"]
        stopped = "; stopped early: " + c["stopped"] if c.get("stopped") else ""
        lines.append(f"collect  {c['collected']} least-sure frames in {c['folder']}/train/images "
                     f"({c['offered']} offered, {c['duplicate']} duplicate, {c['blurred']} blurred{stopped})")
    return "\n".join(lines) or None
