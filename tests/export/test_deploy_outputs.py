"""What an export writes beyond model.onnx: labels.txt/colors.txt, the graphs that take pixels
(normalisation inside, checked against model.onnx), the DeepStream folder; the size it picks;
and how the command line reports a failed gate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest

from uda_adapt.adapt.checkpoint import load_checkpoint, save_checkpoint
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.cli.main import main
from uda_adapt.common.class_files import read_colors, read_labels
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import read_manifest
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.export import pixel_input
from uda_adapt.export.api import ParityGateFailed, export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.export.deepstream import read_nvinfer_config
from tests.export.conftest import small_checkpoint


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_bundle_has_labels_and_colors_files_segnet_reads(ckpt, tmp_path):
    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    assert read_labels(tmp_path / "out" / "labels.txt", 19) == CITYSCAPES_CLASSES
    assert read_colors(tmp_path / "out" / "colors.txt", 19) == tuple(tuple(c) for c in CITYSCAPES_PALETTE)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_uint8_pixel_graph_normalises_inside_and_matches_the_float_graph(ckpt, target_data, tmp_path, layout):
    out = tmp_path / "out"
    export_model(ckpt, out, ExportConfig(size=(64, 128), parity_data=str(target_data), parity_num=2,
                                         pixel_input=f"uint8-{layout}"))
    manifest = read_manifest(out / "model.json")
    entry = manifest.pixel_inputs[f"uint8-{layout}"]
    assert entry["passed"] and entry["pixel_agreement"] >= 0.999
    graph = _session(out / entry["file"])
    (pixels,) = graph.get_inputs()
    assert pixels.type == "tensor(uint8)"
    assert pixels.shape == ([1, 64, 128, 3] if layout == "nhwc" else [1, 3, 64, 128])
    # Same frame, both routes: raw uint8 RGB into the new graph, host-normalised float into model.onnx.
    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 128, 3), dtype=np.uint8)
    raw = rgb[None] if layout == "nhwc" else rgb.transpose(2, 0, 1)[None].copy()
    mine = graph.run(None, {"pixels": raw})[0]
    reference = _session(out / "model.onnx").run(None, {"image": prepare_input(rgb, manifest.input, frame_order="RGB")})[0]
    assert mine.dtype == np.int32 and (mine == reference).mean() > 0.999


def test_a_pixel_graph_that_disagrees_fails_the_gate_and_exits_3(ckpt, tmp_path, capsys, monkeypatch):
    # A wrong normalisation in the graph (mean and std left out): the check must catch it.
    monkeypatch.setattr(pixel_input.PixelWrapper, "forward",
                        lambda self, image: self.deploy(image.float().permute(0, 3, 1, 2) if self.layout == "NHWC" else image.float()))
    status = main(["export", str(ckpt), "--out", str(tmp_path / "out"), "--size", "64x128", "--parity-num", "2",
                   "--pixel-input", "uint8-nhwc"])
    err = capsys.readouterr().err
    assert status == 3, err
    assert "model.uint8-nhwc.onnx agrees with model.onnx on" in err and "below the 99.9 % gate" in err
    assert (tmp_path / "out" / "model.json").is_file()          # kept for inspection


def test_failed_parity_gate_raises_its_own_error(ckpt, target_data, tmp_path, monkeypatch):
    from uda_adapt.export import api

    real = api.compare_onnx

    def wrong(*args, **kwargs):
        check = real(*args, **kwargs)
        return dataclasses.replace(check, pixel_agreement=0.5)
    monkeypatch.setattr(api, "compare_onnx", wrong)
    with pytest.raises(ParityGateFailed) as raised:
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    assert isinstance(raised.value, UserError) and raised.value.exit_code == 3


def test_deepstream_folder_holds_an_nvinfer_segmentation_config_its_graph_and_labels(ckpt, tmp_path):
    out = tmp_path / "out"
    export_model(ckpt, out, ExportConfig(size=(64, 128), parity_num=2, precision="fp16", deepstream=True))
    folder = out / "deepstream"
    config = read_nvinfer_config(folder / "config_infer_primary.txt")
    assert config["network-type"] == "2" and config["network-mode"] == "2"          # segmentation, FP16
    assert config["num-detected-classes"] == "19" and config["infer-dims"] == "3;64;128"
    assert config["net-scale-factor"] == "1.0" and config["offsets"] == "0;0;0" and config["model-color-format"] == "0"
    assert read_labels(folder / config["labelfile-path"], 19) == CITYSCAPES_CLASSES
    graph = _session(folder / config["onnx-file"])
    assert graph.get_inputs()[0].type == "tensor(float)"
    assert [o.name for o in graph.get_outputs()] == [config["output-blob-names"]]
    # nvinfer hands the graph RGB 0..255 as float (net-scale-factor 1, offsets 0): probabilities come out.
    rgb = np.random.default_rng(1).integers(0, 256, size=(64, 128, 3)).astype(np.float32)
    probabilities = graph.run(None, {"pixels": rgb.transpose(2, 0, 1)[None].copy()})[0]
    assert probabilities.shape == (1, 19, 64, 128)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    assert read_manifest(out / "model.json").pixel_inputs["deepstream"]["passed"]


def test_deepstream_refuses_what_nvinfer_cannot_take(ckpt, tmp_path):
    with pytest.raises(UserError, match="--deepstream"):
        ExportConfig(deepstream=True, dynamic=True)


def test_export_size_defaults_to_the_checkpoint_s_evaluation_size(tmp_path):
    path = tmp_path / "sized.pt"
    save_checkpoint(path, dataclasses.replace(load_checkpoint(small_checkpoint(path)),
                                              config={"data": {"eval_size": [32, 96], "target": {"root": ""}}}))
    messages = []
    result = export_model(path, tmp_path / "out", ExportConfig(parity_num=1), log=messages.append)
    assert result.manifest.input.size == (32, 96)
    assert _session(tmp_path / "out" / "model.onnx").get_inputs()[0].shape == [1, 3, 32, 96]
    assert result.manifest.export_config["size"] == [32, 96]
    assert any("export size 32x96: the checkpoint's data.eval_size" in m for m in messages)


def test_data_kind_is_a_choice(ckpt, tmp_path, capsys):
    status = main(["export", str(ckpt), "--out", str(tmp_path / "out"), "--data-kind", "cityscape"])
    assert status == 2
    assert "'cityscape' is not one of" in capsys.readouterr().err
