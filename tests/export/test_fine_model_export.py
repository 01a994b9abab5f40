"""Export of `small_fine` (stride-4 decoder): the same ONNX ops as `small`, and ONNX Runtime parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from uda_adapt.adapt.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from tests.export.conftest import SIZE
from tests.export.test_onnx_export import assert_same_mask_up_to_ties


def calibrated_checkpoint(path: Path, name: str, seed: int = 0) -> Path:
    """Model `name` with random weights and BatchNorm statistics of random images (many classes per image)."""
    torch.manual_seed(seed)
    model = build_segmenter(name, len(CITYSCAPES_CLASSES))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, *SIZE) * 4 - 2)
    save_checkpoint(path, Checkpoint(name, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, model.state_dict()))
    return path


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("dynamic", [False, True])
def test_small_fine_exports_with_the_ops_of_small_and_matches_pytorch(target_data, tmp_path, dynamic):
    exported = {}
    for name in ("small", "small_fine"):
        ckpt = calibrated_checkpoint(tmp_path / f"{name}.pt", name)
        result = export_model(ckpt, tmp_path / name, ExportConfig(size=SIZE, dynamic=dynamic, parity_data=target_data, parity_num=3))
        assert all(check.passed for check in result.parity_checks)
        exported[name] = (ckpt, tmp_path / name / "model.onnx")
    ckpt, onnx_path = exported["small_fine"]
    # A runtime or TensorRT build that handles `small` handles the fine model: no new op type.
    assert op_types(onnx_path) <= op_types(exported["small"][1])
    size = (96, 160) if dynamic else SIZE   # a dynamic graph also runs at another size (odd stride-8 map: 12x20 -> 24x40)
    x = np.random.default_rng(1).standard_normal((1, 3, *size)).astype(np.float32)
    mask = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert mask.dtype == np.int32 and mask.shape == (1, *size)
    assert_same_mask_up_to_ties(mask, build_model(load_checkpoint(ckpt)), x)
