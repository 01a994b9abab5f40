"""`uda-adapt run --watch --collect`: the running measure in the report and overlay; the least-sure frames kept."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from uda_adapt.cli.main import main
from uda_adapt.common import label_free
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec
from uda_adapt.runtime.collect import Collector
from uda_adapt.runtime.frame_filters import FrameFilter
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.watch import MeasuringBackend, WatchingRenderer
from tests.runtime.conftest import CLIP_FRAMES
from tests.runtime.test_capture_set import blocky_frame, write_clip

SIZE = (32, 64)


class LeftHalfBackend:
    """Class 1 where a pixel is bright *and* in the left half: not flip-consistent, so the more
    of a frame is bright, the less its prediction agrees with that of the flipped frame."""

    manifest = Manifest(classes=("dark", "bright"), palette=((0, 0, 0), (255, 255, 255)), input=InputSpec(size=SIZE),
                        output=OutputSpec(), model_name="fake")
    input_size = SIZE
    providers = ["fake"]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        bright = batch[:, 0] > 0
        bright[..., SIZE[1] // 2:] = False
        return bright.astype(np.int32)

    def describe(self) -> str:
        return "fake"

    def close(self) -> None:
        pass


def frame_with_bright_rows(rows: int, seed: int) -> np.ndarray:
    """A dark textured frame whose top `rows` of 8 bands are bright (distinct per seed, never a duplicate)."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 60, (*SIZE, 3)).astype(np.uint8)
    frame[: rows * SIZE[0] // 8] += 190
    return frame


def test_collected_frames_are_the_least_sure_and_the_window_runs(tmp_path):
    backend = LeftHalfBackend()
    measuring = MeasuringBackend(backend, Preprocessor(backend.manifest.input, SIZE))
    collector = Collector(tmp_path / "collected", 3, FrameFilter(min_change=0.001, min_sharpness=0))
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(), 255)
    watching = WatchingRenderer(renderer, measuring, watch=True, collector=collector)
    order = [0, 5, 1, 8, 2, 7, 3, 6, 4, 0]                 # bright rows per frame, shuffled
    scores = []
    for seed, rows in enumerate(order):
        frame = frame_with_bright_rows(rows, seed)
        mask = measuring.infer(measuring.preprocess(frame))[0]       # as the pipeline's infer thread does
        image = watching.render(frame, mask)
        assert image.shape == frame.shape
        scores.append(watching.window.summary.current)
    summary = watching.window.summary
    assert summary.frames_measured == len(order) and summary.measure == label_free.RUNTIME
    assert summary.current < 1.0

    collected = collector.collected()
    assert len(collected) == 3 and len(list((tmp_path / "collected" / "train" / "images").glob("*.jpg"))) == 3
    # the three brightest frames (8, 7, 6 bright rows) are the least sure: least agreement under flip
    folder = tmp_path / "collected" / "train" / "images"
    kept_rows = sorted(int((cv2.imread(str(folder / name)).mean(axis=(1, 2)) > 120).sum()) // (SIZE[0] // 8) for name, _ in collected)
    assert kept_rows == [6, 7, 8]
    index = json.loads((tmp_path / "collected" / "collect.json").read_text())["frames"]
    assert [f["score"] for f in index] == sorted(f["score"] for f in index)
    assert collector.report()["replaced"] >= 1


def test_collector_drops_duplicates_of_collected_frames(tmp_path):
    collector = Collector(tmp_path, 5, FrameFilter(min_change=0.01, min_sharpness=0))
    frame = frame_with_bright_rows(3, 0)
    assert collector.offer(frame, 0.1)
    assert not collector.offer(frame.copy(), 0.05)          # the same view again: a duplicate
    assert collector.report()["duplicate"] == 1 and len(collector.collected()) == 1


def test_run_watch_and_collect_from_the_cli(tmp_path, tiny_onnx, capsys):
    clip_mp4 = str(write_clip(tmp_path / "textured.avi", [blocky_frame(i) for i in range(CLIP_FRAMES)]))
    report_path, collected = tmp_path / "run_report.json", tmp_path / "next_target"
    args = ["run", tiny_onnx, clip_mp4, str(tmp_path / "out.mp4"), "--headless", "--buffered", "--watch", "--no-fps-overlay",
            "--collect", str(collected), "--collect-max", "4", "--json", str(report_path), "--save-frame", "5", str(tmp_path / "f.png")]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())["label_free"]
    assert report["measure"] == label_free.RUNTIME and report["frames_measured"] == CLIP_FRAMES
    assert 0.0 <= report["current"] <= 1.0
    assert 1 <= report["collect"]["collected"] <= 4
    assert len(list((collected / "train" / "images").glob("col_*.jpg"))) == report["collect"]["collected"]
    assert f"watch    {label_free.RUNTIME}" in capsys.readouterr().err
    # The overlay carries the measure: with the FPS overlay off in both runs, the saved frame differs from a
    # run without --watch in the measure's own box (the bottom rows, where its text is drawn) and nowhere else.
    assert main(["run", tiny_onnx, clip_mp4, "null://", "--headless", "--buffered", "--no-fps-overlay",
                 "--save-frame", "5", str(tmp_path / "g.png")]) == 0
    watched, plain = cv2.imread(str(tmp_path / "f.png")), cv2.imread(str(tmp_path / "g.png"))
    assert watched.shape == plain.shape
    differ = (watched != plain).any(axis=2)
    box = slice(watched.shape[0] - 30, None)
    assert differ[box].any() and not differ[: watched.shape[0] - 30].any()

    # A second run into the same DIR continues the collection: never more than --collect-max files.
    capsys.readouterr()
    assert main(args) == 0
    again = json.loads(report_path.read_text())["label_free"]["collect"]
    assert again["continued"] == report["collect"]["collected"] and again["collected"] <= 4
    assert len(list((collected / "train" / "images").glob("col_*.jpg"))) == again["collected"]
    assert len(json.loads((collected / "collect.json").read_text())["frames"]) == again["collected"]
    assert again["duplicate"] >= 1                     # the same clip: the frames it holds are seen again
    assert "--collect continues the" in capsys.readouterr().err


# --- through the real two-thread pipeline --------------------------------------------------------------
class _Sink:
    name = "memory://"
    frames = 0

    def write(self, image):
        self.frames += 1
        return True


def _run_watching(frames, collector, log=lambda m: None):
    """Frames through run_pipeline (capture thread, infer thread, render on this thread), watched and collected."""
    from tests.runtime.conftest import FakeSource
    from uda_adapt.runtime.capture import CaptureThread
    from uda_adapt.runtime.pipeline import run_pipeline
    from uda_adapt.runtime.watch import attach_watch

    backend = LeftHalfBackend()
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(fps=False), 255)
    measuring, preprocess, watching = attach_watch(backend, Preprocessor(backend.manifest.input, SIZE), renderer,
                                                   watch=True, collect=None, collect_max=1, log=log)
    watching._collector = collector
    capture = CaptureThread(FakeSource(frames), latest=False, log=log)
    sink = _Sink()
    report = run_pipeline(capture, measuring, preprocess, watching, sink, queue_size=2, show_fps=False, log=log)
    return report, watching, sink


def _bright_rows(image: np.ndarray) -> int:
    return int((image.mean(axis=(1, 2)) > 120).sum()) // (SIZE[0] // 8)


def test_each_collected_frame_carries_its_own_score_through_the_pipeline(tmp_path):
    order = [0, 5, 1, 8, 2, 7, 3, 6, 4]                    # bright rows per frame: each frame is told apart by them
    frames = [frame_with_bright_rows(rows, seed) for seed, rows in enumerate(order)]
    # The score each frame must get, measured alone, one frame at a time.
    alone = MeasuringBackend(LeftHalfBackend(), Preprocessor(LeftHalfBackend.manifest.input, SIZE))
    expected = {}
    for rows, frame in zip(order, frames):
        alone.infer(alone.preprocess(frame))
        expected[rows] = label_free.oriented(label_free.RUNTIME, alone.pop_score())
    assert len(set(expected.values())) == len(order), "frames with equal scores could not show a shifted score"

    collector = Collector(tmp_path / "collected", 4, FrameFilter(min_change=0.001, min_sharpness=0))
    report, watching, sink = _run_watching(frames, collector)
    assert report.frames == sink.frames == len(order) and watching.window.summary.frames_measured == len(order)
    folder = tmp_path / "collected" / "train" / "images"
    recorded = {_bright_rows(cv2.imread(str(folder / name))): score for name, score in collector.collected()}
    assert sorted(recorded) == [5, 6, 7, 8]                 # the four least sure
    for rows, score in recorded.items():
        assert score == pytest.approx(expected[rows]), f"the frame with {rows} bright rows got another frame's score"


def test_a_full_disk_turns_collecting_off_and_the_stream_goes_on(tmp_path, monkeypatch):
    import errno

    import uda_adapt.common.atomic as atomic

    real_replace, calls = os.replace, []

    def full_after_two_images(src, dst):
        if str(dst).endswith(".jpg"):
            calls.append(dst)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_after_two_images)
    frames = [frame_with_bright_rows(rows, seed) for seed, rows in enumerate([1, 2, 3, 4, 5, 6, 7, 8])]
    messages = []
    collector = Collector(tmp_path / "collected", 10, FrameFilter(min_change=0.001, min_sharpness=0))
    report, watching, sink = _run_watching(frames, collector, log=messages.append)
    assert sink.frames == len(frames) and report.frames == len(frames)      # every frame rendered and written
    warnings = [m for m in messages if "--collect is off" in m]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    collect = watching.report()["collect"]
    assert collect["collected"] == 2 and "No space left" in collect["stopped"]
    assert len(calls) == 3                                   # no write tried after the first failure


def test_a_second_run_continues_the_collection(tmp_path):
    folder = tmp_path / "collected"
    first = Collector(folder, 3, FrameFilter(min_change=0.01, min_sharpness=0))
    for seed, (rows, score) in enumerate([(1, 0.9), (2, 0.5), (3, 0.4), (4, 0.8)]):
        first.offer(frame_with_bright_rows(rows, seed), score)
    assert sorted(s for _, s in first.collected()) == [0.4, 0.5, 0.8]
    (folder / "train" / "images" / "col_000099.jpg").write_bytes(b"killed mid-write")    # not in the index

    again = Collector(folder, 3, FrameFilter(min_change=0.01, min_sharpness=0))
    assert again.continued == 3 and sorted(s for _, s in again.collected()) == [0.4, 0.5, 0.8]
    assert not again.offer(frame_with_bright_rows(2, 1), 0.1)          # a view it already holds: a duplicate
    assert again.offer(frame_with_bright_rows(6, 50), 0.2)             # less sure than 0.8: replaces it
    files = sorted((folder / "train" / "images").glob("col_*.jpg"))
    index = json.loads((folder / "collect.json").read_text())["frames"]
    assert len(files) == 3 and [f["score"] for f in index] == [0.2, 0.4, 0.5]
    assert sorted(f["image"].split("/")[-1] for f in index) == [p.name for p in files]

    smaller = Collector(folder, 2, FrameFilter(min_change=0.01, min_sharpness=0))   # a lower --collect-max
    assert [s for _, s in smaller.collected()] == [0.2, 0.4] and len(list((folder / "train" / "images").glob("col_*"))) == 2
