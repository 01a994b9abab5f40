import json
import shutil

import numpy as np
import pytest
import torch
from conftest import MODEL_SIZE

from adapt.checkpoint import Checkpoint, save_checkpoint
from adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from common.errors import UserError
from adapt.models import build_segmenter
from common.manifest import manifest_for, read_manifest
from runtime.backends import backend_for, open_backend


def test_auto_picks_the_backend_by_file_type(tmp_path):
    for name, expected in [("m.engine", "trt"), ("m.plan", "trt"), ("m.onnx", "ort"), ("m.pt", "torch"), ("m.pth", "torch")]:
        (tmp_path / name).write_bytes(b"x")
        assert backend_for(tmp_path / name) == expected


def test_missing_or_unknown_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_backend(tmp_path / "nope.onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(UserError, match=r"unknown type .tflite; expected one of .engine, .plan, .onnx, .pt, .pth"):
        open_backend(tmp_path / "model.tflite")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="--backend trt runs .engine/.plan files"):
        open_backend(tmp_path / "m.onnx", "trt")


def test_onnxruntime_backend_runs_the_exported_model(small_onnx):
    backend = open_backend(small_onnx, threads=1)
    assert backend.input_size == MODEL_SIZE
    assert backend.providers == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in backend.describe()
    batch = np.random.default_rng(0).standard_normal((1, 3, *MODEL_SIZE), dtype=np.float32)
    mask = backend.infer(batch)
    assert mask.shape == (1, *MODEL_SIZE) and mask.dtype == np.int32
    assert 0 <= mask.min() and mask.max() < len(CITYSCAPES_CLASSES)
    assert backend.manifest.classes == CITYSCAPES_CLASSES


def test_onnx_without_manifest_reads_the_metadata_or_says_what_is_missing(small_onnx, tmp_path):
    import onnx

    bare = tmp_path / "bare.onnx"
    shutil.copy(small_onnx, bare)
    with pytest.raises(UserError, match="has no manifest"):
        open_backend(bare)
    model = onnx.load(str(bare))
    data = read_manifest(manifest_for(small_onnx)).to_dict()
    for key, value in data.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(bare))
    assert open_backend(bare).manifest.classes == CITYSCAPES_CLASSES


def test_onnx_that_is_not_a_model_is_a_user_error(tmp_path, small_onnx):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    shutil.copy(manifest_for(small_onnx), tmp_path / "model.json")
    with pytest.raises(UserError, match="is not an ONNX model .*re-export it"):
        open_backend(bad)


def test_torch_backend_runs_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = build_segmenter("small", len(CITYSCAPES_CLASSES))
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, Checkpoint("small", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, net.state_dict()))
    backend = open_backend(path, input_size=(32, 64))
    mask = backend.infer(np.zeros((1, 3, 32, 64), np.float32))
    assert mask.shape == (1, 32, 64) and mask.dtype == np.int32
    assert backend.input_size == (32, 64) and backend.manifest.palette == CITYSCAPES_PALETTE
