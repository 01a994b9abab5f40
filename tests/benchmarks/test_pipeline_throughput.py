"""benchmarks/pipeline_throughput.py --video: `uda-adapt run` over a file against a bare ONNX Runtime loop.

Logic only (which sides run, what is recorded); nothing here depends on how fast anything ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pipeline_throughput  # noqa: E402


def test_video_rounds_time_both_sides_and_both_preprocessing_placements(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((48, 64, 3), 60 * i, np.uint8))
    video = tmp_path / "clip.mp4"
    pipeline_throughput.make_video(video, images, frames=12, size=(48, 64))
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 64
    capture.release()

    model = pipeline_throughput.export_small_model(tmp_path, 32, 64)
    import uda_adapt.runtime.stream as stream

    placements, real_run_pipeline = [], stream.run_pipeline

    def recording(*args, **kwargs):
        placements.append((kwargs["prefetch"], kwargs["side_nice"]))
        return real_run_pipeline(*args, **kwargs)

    monkeypatch.setattr(stream, "run_pipeline", recording)
    rounds = pipeline_throughput.alternate_video_rounds(model, video, warmup=1, iters=3, rounds=2, threads=1,
                                                       codec=None, output=None)
    shipped = stream.RunConfig(model="m", input="i").side_nice
    assert shipped > 0
    assert placements == [(False, shipped), (False, 0), (True, shipped)] * 2
    assert len(rounds) == 2
    for row in rounds:
        assert row["bare_onnxruntime_qps"] > 0 and row["run_fps"] > 0 and row["run_prefetch_fps"] > 0 and row["run_same_priority_fps"] > 0
        assert row["ratio"] == row["run_ratio"] == row["run_fps"] / row["bare_onnxruntime_qps"]
        assert {"preprocess", "infer", "render", "sink", "capture"} <= set(row["run_stages_ms"])
        assert "load_average" in row
