"""`uda-adapt run` / `bench` through the real entry point: one-line errors, exit codes, outputs."""

import json

import pytest
from conftest import CLIP_FRAMES, read_all_frames

import uda_adapt.cli.main
from uda_adapt import cli
from uda_adapt.runtime import sinks
from uda_adapt.cli.run import bench, run


@pytest.fixture
def uda(monkeypatch, capsys):
    # Only this area's commands: the test does not depend on the other command modules.
    monkeypatch.setattr(cli.main, "_register_commands", lambda: (cli.main.cli.add_command(run), cli.main.cli.add_command(bench)))

    def invoke(*args):
        status = cli.main.main([*map(str, args)])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.startswith("uda-adapt: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_run_writes_the_overlay_video_and_json_report(uda, small_onnx, clip_mp4, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    status, stdout, err = uda("run", small_onnx, clip_mp4, out, "--json", report, "--visualize", "side-by-side", "--alpha", 150)
    assert status == 0, err
    assert len(read_all_frames(out)) == CLIP_FRAMES
    assert json.loads(report.read_text())["frames"] == CLIP_FRAMES
    assert "CPUExecutionProvider" in err and "latency" in err


def test_run_headless_without_output_only_reports(uda, small_onnx, clip_mp4):
    status, stdout, err = uda("run", small_onnx, clip_mp4, "--headless", "--max-frames", 4, "--stats")
    assert status == 0, err
    assert json.loads(stdout)["frames"] == 4


def test_image_folder_to_image_sequence(uda, small_onnx, clip_mp4, tmp_path):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, image in enumerate(read_all_frames(clip_mp4)[:3]):
        cv2.imwrite(str(frames / f"{i:03d}.jpg"), image)
    status, _, err = uda("run", small_onnx, frames, tmp_path / "seg" / "out_%03d.png", "--visualize", "mask")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["out_000.png", "out_001.png", "out_002.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.onnx", "clip.mp4", "null://"], "model file missing.onnx does not exist"),
        (["run", "{model_dir}/model.json", "clip.mp4", "null://"], "unknown type .json"),
        (["run", "{model}", "{tmp}/nothing.mp4", "null://"], "input {tmp}/nothing.mp4 does not exist"),
        (["run", "{model}", "{tmp}/fake.mp4", "null://"], "cannot open input {tmp}/fake.mp4: OpenCV's FFmpeg cannot decode it"),
        (["run", "{model}", "csi://0", "null://"], "csi://0 needs OpenCV built with GStreamer"),
        (["run", "{model}", "{clip}", "{tmp}/blocker/out.mp4"], "cannot create output directory {tmp}/blocker"),
        (["run", "{model}", "{clip}", "{tmp}/out.gif"], "unknown file type .gif"),
        (["run", "{model}", "{clip}", "null://", "--ignore-class", "lamppost"], "'lamppost' is not a class of this model"),
        (["run", "{model}", "{clip}", "null://", "--alpha", "400"], "--alpha must be in 0..1"),
        (["bench", "{model}", "--iters", "1"], "--iters 2 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(uda, small_onnx, clip_mp4, tmp_path, args, message):
    (tmp_path / "fake.mp4").write_text("not a video")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    model_dir = str(__import__("pathlib").Path(small_onnx).parent)
    fill = dict(model=small_onnx, model_dir=model_dir, clip=clip_mp4, tmp=tmp_path)
    status, _, err = uda(*[a.format(**fill) for a in args])
    assert status == 1
    assert message.format(**fill) in one_line_error(err)


def test_display_on_a_headless_machine_says_what_to_do(uda, small_onnx, clip_mp4, monkeypatch):
    monkeypatch.setattr(sinks, "display_problem", lambda: "no display is attached (DISPLAY is not set)")
    status, _, err = uda("run", small_onnx, clip_mp4)
    assert status == 1
    assert "pass --headless, or give an output file such as out.mp4" in one_line_error(err)


def test_interrupted_run_finalises_the_video_and_exits_130(uda, small_onnx, clip_mp4, tmp_path, monkeypatch):
    from uda_adapt.runtime.sinks import VideoFileSink

    original = VideoFileSink.write

    def write_then_interrupt(self, image):
        if self.frames == 5:
            raise KeyboardInterrupt
        return original(self, image)

    monkeypatch.setattr(VideoFileSink, "write", write_then_interrupt)
    out = tmp_path / "cut.mp4"
    status, _, err = uda("run", small_onnx, clip_mp4, out)
    assert status == 130
    assert "interrupted" in err
    assert len(read_all_frames(out)) == 5


def test_bench_reports_model_only_and_pipeline(uda, small_onnx, tmp_path):
    out = tmp_path / "bench.json"
    status, stdout, err = uda("bench", small_onnx, "--warmup", 1, "--iters", 5, "--threads", 1, "--json", out)
    assert status == 0, err
    assert "[I] Throughput:" in stdout and "percentile(99%)" in stdout and "pipeline / model-only throughput" in stdout
    result = json.loads(out.read_text())
    assert result["shape"] == [1, 3, 64, 128] and result["providers"] == ["CPUExecutionProvider"]
    assert result["model_only"]["throughput_qps"] > 0 and result["pipeline"]["frames"] == 6
    assert set(result["model_only"]["latency_ms"]) == {"min", "mean", "median", "p90", "p95", "p99", "max"}


def test_latest_and_buffered_pass_through_run_on_a_file(uda, small_onnx, clip_mp4, tmp_path):
    report = tmp_path / "report.json"
    status, _, err = uda("run", small_onnx, clip_mp4, "null://", "--buffered", "--json", report)
    assert status == 0, err
    assert "(every frame)" in err
    result = json.loads(report.read_text())
    assert result["frames"] == result["captured"] == CLIP_FRAMES and result["dropped"] == 0

    # --latest on a file: capture no longer waits for the pipeline; whatever it does not take is dropped and counted.
    status, _, err = uda("run", small_onnx, clip_mp4, "null://", "--latest", "--json", report)
    assert status == 0, err
    assert "(latest frame)" in err
    result = json.loads(report.read_text())
    assert result["captured"] == CLIP_FRAMES and result["frames"] + result["dropped"] == CLIP_FRAMES


def test_input_flip_flips_the_frames(uda, small_onnx, clip_mp4, tmp_path):
    import numpy as np

    flips = {"horizontal": (slice(None), slice(None, None, -1)), "vertical": (slice(None, None, -1), slice(None)),
             "rotate-180": (slice(None, None, -1), slice(None, None, -1))}
    for flip in ("none", *flips):
        status, _, err = uda("run", small_onnx, clip_mp4, tmp_path / flip / "f_%02d.png", "--input-flip", flip,
                             "--visualize", "side-by-side", "--no-legend", "--no-fps-overlay", "--max-frames", 1)
        assert status == 0, err
    import cv2

    plain = cv2.imread(str(tmp_path / "none" / "f_00.png"))
    width = plain.shape[1] // 2           # side-by-side: the input frame is the left half
    frame = plain[:, :width].astype(int)
    for flip, index in flips.items():
        flipped = cv2.imread(str(tmp_path / flip / "f_00.png"))[:, :width].astype(int)
        assert np.abs(flipped - frame).mean() > 5, f"{flip}: the frame looks the same flipped, so the test cannot tell"
        assert np.abs(flipped - frame[index]).mean() < 1, f"--input-flip {flip} did not flip the frame that way"
