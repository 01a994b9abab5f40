"""`uda-adapt compare A B INPUT OUTPUT`: frame count, three panels, the report files."""

from __future__ import annotations

import json

import cv2
import numpy as np

from uda_adapt.cli.main import main
from uda_adapt.common import label_free
from tests.runtime.conftest import CLIP_FRAMES, CLIP_SIZE, read_all_frames, street_frame


def test_compare_writes_three_panels_per_frame_and_the_report(tmp_path, tiny_onnx, small_onnx, clip_mp4, capsys):
    source = tmp_path / "source" / "train" / "labels"
    source.mkdir(parents=True)
    cv2.imwrite(str(source / "a.png"), np.kron(np.array([[0, 2], [10, 13]], np.uint8), np.ones((4, 4), np.uint8)))
    out = tmp_path / "ab" / "compare.mp4"
    assert main(["compare", tiny_onnx, small_onnx, clip_mp4, str(out), "--like", str(tmp_path / "source")]) == 0, capsys.readouterr().err
    frames = read_all_frames(out)
    h, w = CLIP_SIZE
    assert len(frames) == CLIP_FRAMES
    assert frames[0].shape == (h, 3 * w, 3)                       # A | B | A != B
    report = json.loads((tmp_path / "ab" / "compare.json").read_text())
    assert report["frames"] == CLIP_FRAMES and 0.0 < report["disagreement"] <= 1.0
    for key in ("A", "B"):
        measures = report["measures"][key]
        assert 0.0 <= measures[label_free.VALIDATED] <= 1.0 and 0.0 <= measures[label_free.RUNTIME] <= 1.0
        assert measures["temporal_flicker"] is not None            # a video: consecutive frames
        assert measures["mean_max_prob"] is None                   # exported models give class ids only
    assert "| measure | A | B | better |" in (tmp_path / "ab" / "compare.md").read_text()
    chart = cv2.imread(str(tmp_path / "ab" / "compare.png"))
    assert chart is not None and chart.shape[1] == 640
    assert f"{label_free.VALIDATED}: A " in capsys.readouterr().out


def test_disagreement_panel_marks_exactly_the_differing_pixels():
    from uda_adapt.runtime.compare import DISAGREE_BGR, disagreement_panel

    frame = np.full((4, 6, 3), 100, np.uint8)
    a = np.zeros((4, 6), np.int32)
    b = a.copy()
    b[1, 2] = b[3, 5] = 7
    panel, share = disagreement_panel(frame, a, b)
    assert share == 2 / 24
    marked = (panel == DISAGREE_BGR).all(axis=2)
    assert marked.sum() == 2 and marked[1, 2] and marked[3, 5]


def test_compare_on_an_image_folder_writes_an_image_grid(tmp_path, tiny_onnx, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), street_frame(i * 10))
    assert main(["compare", tiny_onnx, tiny_onnx, str(folder), str(tmp_path / "grid" / "ab_%03d.png")]) == 0, capsys.readouterr().err
    written = sorted((tmp_path / "grid").glob("ab_*.png"))
    assert len(written) == 3
    report = json.loads((tmp_path / "grid" / "compare.json").read_text())
    assert report["disagreement"] == 0.0 and report["measures"]["A"]["temporal_flicker"] is None


def test_a_checkpoint_runs_at_the_exported_models_size(tmp_path, tiny_onnx, clip_mp4):
    from uda_adapt.adapt.checkpoint import Checkpoint, save_checkpoint
    from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from uda_adapt.adapt.models import build_segmenter
    from uda_adapt.runtime.compare import CompareConfig, compare
    from tests.runtime.conftest import MODEL_SIZE

    net = build_segmenter("small", len(CITYSCAPES_CLASSES))
    ckpt = tmp_path / "source.pt"
    save_checkpoint(ckpt, Checkpoint("small", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, net.state_dict()))
    report = compare(CompareConfig(str(ckpt), tiny_onnx, clip_mp4, str(tmp_path / "out" / "ab.mp4"), max_frames=3))
    assert report["frames"] == 3
    assert report["input_size"] == {"A": list(MODEL_SIZE), "B": list(MODEL_SIZE)}    # not the checkpoint default 512x1024


def test_a_bad_like_or_report_folder_is_refused_before_the_first_frame(tmp_path, tiny_onnx, clip_mp4, capsys):
    empty = tmp_path / "no_labels"
    empty.mkdir()
    out = tmp_path / "ab" / "compare.mp4"
    for extra, culprit in ((["--like", str(empty)], "--like"), (["--like", str(tmp_path / "missing")], "--like"),
                           (["--report", str(tmp_path / "a_file" / "sub")], "cannot create output directory")):
        (tmp_path / "a_file").write_text("")
        assert main(["compare", tiny_onnx, tiny_onnx, clip_mp4, str(out), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and culprit in err[0], err
        assert not out.exists()                   # no video without its report


def test_the_left_panel_is_a_and_each_model_runs_at_its_own_size(tmp_path, tiny_onnx):
    """A and B differ in input size and in their masks, so a swap of A and B anywhere would show."""
    from tests.runtime.conftest import export_small_onnx
    from uda_adapt.common.preprocess import prepare_input
    from uda_adapt.runtime.backends import open_backend
    from uda_adapt.runtime.compare import mask_predictor
    from uda_adapt.runtime.render import Renderer, RenderOptions

    (tmp_path / "b").mkdir()
    model_b = export_small_onnx(tmp_path / "b", size=(32, 64))
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [street_frame(i * 7) for i in range(3)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    assert main(["compare", tiny_onnx, model_b, str(folder), str(tmp_path / "grid" / "ab_%03d.png")]) == 0
    report = json.loads((tmp_path / "grid" / "compare.json").read_text())
    assert report["input_size"] == {"A": [64, 128], "B": [32, 64]}

    expected, measures = [], []
    images = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
    for model in (tiny_onnx, model_b):
        backend = open_backend(model, "auto")
        measures.append(label_free.measure_images(mask_predictor(backend), images, num_classes=len(backend.manifest.classes),
                                                  source_share=None, video=False))
        renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(alpha=0.5, fps=False),
                            backend.manifest.ignore_index)
        expected.append([renderer.render(f, backend.infer(prepare_input(f, backend.manifest.input, backend.input_size))[0])
                         for f in frames])
        backend.close()
    assert measures[0] != measures[1], "A and B measure alike: a swap could not show"
    assert (report["measures"]["A"], report["measures"]["B"]) == tuple(json.loads(json.dumps(m)) for m in measures)
    h, w = CLIP_SIZE
    top = h - 26                                  # above the panel titles
    for i, path in enumerate(sorted((tmp_path / "grid").glob("ab_*.png"))):
        grid = cv2.imread(str(path))
        left, middle = grid[:top, :w], grid[:top, w:2 * w]
        assert not np.array_equal(expected[0][i][:top], expected[1][i][:top]), "A and B render alike: a swap could not show"
        np.testing.assert_array_equal(left, expected[0][i][:top])
        np.testing.assert_array_equal(middle, expected[1][i][:top])
