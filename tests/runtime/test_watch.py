"""`uda-adapt run --watch --collect`: the running measure in the report and overlay; the least-sure frames kept."""

from __future__ import annotations

import json

import cv2
import numpy as np

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
    args = ["run", tiny_onnx, clip_mp4, str(tmp_path / "out.mp4"), "--headless", "--buffered", "--watch",
            "--collect", str(collected), "--collect-max", "4", "--json", str(report_path), "--save-frame", "5", str(tmp_path / "f.png")]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())["label_free"]
    assert report["measure"] == label_free.RUNTIME and report["frames_measured"] == CLIP_FRAMES
    assert 0.0 <= report["current"] <= 1.0
    assert 1 <= report["collect"]["collected"] <= 4
    assert len(list((collected / "train" / "images").glob("col_*.jpg"))) == report["collect"]["collected"]
    assert f"watch    {label_free.RUNTIME}" in capsys.readouterr().err
    # the overlay carries the measure: the saved frame differs from a run without --watch
    assert main(["run", tiny_onnx, clip_mp4, "null://", "--headless", "--buffered", "--save-frame", "5", str(tmp_path / "g.png")]) == 0
    watched, plain = cv2.imread(str(tmp_path / "f.png")), cv2.imread(str(tmp_path / "g.png"))
    assert watched.shape == plain.shape and (watched != plain).any()
