"""`run --save-masks`, `--labels/--colors` and the progress lines of a run over a file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import CLIP_FRAMES, CLIP_SIZE, read_all_frames, street_frame
from PIL import Image

import uda_adapt.cli.main
from uda_adapt import cli
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.cli.run import run
from uda_adapt.runtime.run_progress import RunProgress, expected_frames


@pytest.fixture
def uda(monkeypatch, capsys):
    monkeypatch.setattr(cli.main, "_register_commands", lambda: cli.main.cli.add_command(run))
    monkeypatch.setenv("UDA_ADAPT_QUIET", "0")   # recorded, so a -q inside a test is undone after it
    monkeypatch.delenv("UDA_ADAPT_QUIET")

    def invoke(*args):
        status = cli.main.main([*map(str, args)])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def _channel_argmax(frame_bgr: np.ndarray) -> np.ndarray:
    """What tiny_onnx predicts: the strongest normalised RGB channel (0 R, 1 G, 2 B)."""
    rgb = frame_bgr[..., ::-1].astype(np.float32) / 255.0
    normalised = (rgb - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return normalised.argmax(-1)


def test_masks_of_an_image_folder_are_named_after_the_files_and_hold_the_class_ids(uda, tiny_onnx, tmp_path):
    frames, masks = tmp_path / "frames", tmp_path / "masks"
    frames.mkdir()
    names = ["street_b", "street_a", "corner"]
    for index, name in enumerate(names):
        cv2.imwrite(str(frames / f"{name}.png"), street_frame(index))
    status, _, err = uda("run", tiny_onnx, frames, "null://", "--headless", "--save-masks", masks)
    assert status == 0, err
    assert sorted(p.name for p in masks.iterdir()) == sorted(f"{n}.png" for n in names)
    for index, name in enumerate(names):
        ids = np.asarray(Image.open(masks / f"{name}.png"))
        assert ids.shape == CLIP_SIZE                      # the frame's size, not the network's
        expected = _channel_argmax(street_frame(index))
        assert (ids == expected).mean() > 0.95             # bilinear resize at the network size blurs edges only
    assert "wrote 3 masks" in err


def test_masks_of_a_video_are_named_stem_and_frame_index_and_palettised_on_request(uda, tiny_onnx, clip_mp4, tmp_path):
    masks = tmp_path / "masks"
    status, _, err = uda("run", tiny_onnx, clip_mp4, "null://", "--headless", "--save-masks", masks,
                         "--mask-format", "palette", "--vid-stride", 10)
    assert status == 0, err
    assert sorted(p.name for p in masks.iterdir()) == ["clip_000000.png", "clip_000010.png", "clip_000020.png"]
    image = Image.open(masks / "clip_000010.png")
    assert image.mode == "P"
    assert image.getpalette()[:6] == [*CITYSCAPES_PALETTE[0], *CITYSCAPES_PALETTE[1]]
    assert set(np.unique(np.asarray(image))) <= {0, 1, 2}
    assert not [p for p in masks.iterdir() if p.name.startswith(".")]       # no temporaries left


def test_labels_and_colors_files_replace_the_model_s_names_and_colours(uda, tiny_onnx, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), street_frame(0))
    labels, colors = tmp_path / "labels.txt", tmp_path / "colors.txt"
    labels.write_text("".join(f"thing{i}\n" for i in range(len(CITYSCAPES_CLASSES))))
    colors.write_text("".join(f"{i} {i} {i}\n" for i in range(len(CITYSCAPES_CLASSES))))
    out = tmp_path / "out_%03d.png"
    status, _, err = uda("run", tiny_onnx, frames, out, "--visualize", "mask", "--no-legend", "--no-fps-overlay",
                         "--labels", labels, "--colors", colors, "--ignore-class", "thing0")
    assert status == 0, err
    rendered = cv2.imread(str(tmp_path / "out_000.png"))
    ids = _channel_argmax(street_frame(0))
    # Colour i is (i, i, i): the rendered mask shows the ids themselves; thing0 (R) is hidden (black).
    visible = (ids == 2) & (rendered[..., 0] == 2)
    assert visible.sum() > 0.9 * (ids == 2).sum()


def test_a_labels_file_with_the_wrong_number_of_classes_is_one_line_error(uda, tiny_onnx, clip_mp4, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("road\nsky\n")
    status, _, err = uda("run", tiny_onnx, clip_mp4, "null://", "--headless", "--labels", labels)
    assert status == 1
    assert "names 2 classes but the model predicts 19" in err


def test_a_long_run_over_a_file_reports_progress_lines():
    lines, now = [], [0.0]
    progress = RunProgress(expected_frames(CLIP_FRAMES, stride=1, loop=1), every_seconds=10.0, log=lines.append,
                           clock=lambda: now[0])
    for index in range(60):
        now[0] = index * 0.5                              # 2 frames a second
        progress(index, np.zeros((1, 1, 3), np.uint8))
    assert len(lines) == 2 and "\r" not in "".join(lines)
    assert lines[0] == "progress: 21/60 frames (35.0 %)  2.1 FPS  ETA 0:00:19"


def test_expected_frames():
    assert expected_frames(30, stride=10) == 3
    assert expected_frames(30, stride=1, loop=2) == 90
    assert expected_frames(30, loop=-1) is None and expected_frames(None, max_frames=5) == 5
    assert expected_frames(30, max_frames=5) == 5


def test_the_run_command_prints_progress_over_a_file(uda, tiny_onnx, clip_mp4, monkeypatch):
    from uda_adapt.runtime import run_progress

    monkeypatch.setattr(run_progress, "EVERY_SECONDS", 0.0)
    status, _, err = uda("run", tiny_onnx, clip_mp4, "null://", "--headless")
    assert status == 0, err
    assert "progress: " in err and f"/{CLIP_FRAMES} frames" in err, err
    status, _, err = uda("run", tiny_onnx, clip_mp4, "null://", "--headless", "-q")
    assert status == 0, err
    assert "progress: " not in err
