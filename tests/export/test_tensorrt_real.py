"""Real TensorRT builds: run only where `import tensorrt` works and an NVIDIA GPU is present."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from export.api import export_model
from export.config import ExportConfig
from common.manifest import read_manifest

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None,
                       reason="needs TensorRT and an NVIDIA GPU"),
]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_engine(precision, ckpt, target_data, tmp_path, reduced_precision_gates_open):
    import tensorrt as trt
    import torch

    from export.tensorrt_build import check_engine_compatible

    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), trt=True, precision=precision, parity_data=target_data, parity_num=2, workspace_gib=1))
    [spec] = read_manifest(tmp_path / "out" / "model.json").engines
    check_engine_compatible(spec, trt.__version__, torch.cuda.get_device_capability(0))

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(result.engine.read_bytes())
    context = engine.create_execution_context()
    x = torch.zeros(1, 3, 64, 128, device="cuda")
    mask = torch.empty(1, 64, 128, dtype=torch.int32, device="cuda")
    context.set_tensor_address("image", x.data_ptr())
    context.set_tensor_address("mask", mask.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    assert np.all((mask.cpu().numpy() >= 0) & (mask.cpu().numpy() < 19))


def test_int8_engine_from_qdq(ckpt, target_data, tmp_path, reduced_precision_gates_open):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), dynamic=True, trt=True, precision="int8", calib_data=target_data / "train" / "images", calib_num=3, parity_data=target_data, parity_num=2, workspace_gib=1))
    assert result.engine is not None and result.engine.name.endswith(".int8.engine")
