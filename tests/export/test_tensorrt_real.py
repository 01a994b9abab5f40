"""Real TensorRT builds: run only where `import tensorrt` works and an NVIDIA GPU is present."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.common.manifest import read_manifest

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None,
                       reason="needs TensorRT and an NVIDIA GPU"),
]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_engine(precision, ckpt, target_data, tmp_path, reduced_precision_gates_open):
    import tensorrt as trt
    import torch

    from uda_adapt.common.engines import check_engine_compatible
    from uda_adapt.runtime.bundle import installed_device

    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), trt=True, precision=precision, parity_data=target_data, parity_num=2, workspace_gib=1))
    [spec] = read_manifest(tmp_path / "out" / "model.json").engines
    check_engine_compatible(spec, installed_device(0))
    assert spec.device_model and spec.file.startswith(f"model.trt{'.'.join(trt.__version__.split('.')[:3])}.sm")

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


def test_build_from_bundle_then_check_and_run(ckpt, target_data, tmp_path, reduced_precision_gates_open):
    """The device path: export (fp16 variant), build from the bundle, check against the ONNX, run the bundle."""
    from uda_adapt.export.build import BuildConfig, build_bundle_engine as build_from_bundle
    from uda_adapt.runtime.bundle import model_in_bundle
    from uda_adapt.runtime.check import check_engine

    out = tmp_path / "out"
    export_model(ckpt, out, ExportConfig(size=(64, 128), precision="fp16", parity_data=target_data, parity_num=3))
    spec = build_from_bundle(out, BuildConfig(workspace_gib=1))
    assert model_in_bundle(out) == out / spec.file
    report = check_engine(out, out / spec.file)
    assert report["passed"] and report["n_images"] == 3


def test_legacy_int8_calibrator_feeds_device_memory(ckpt, target_data, tmp_path, reduced_precision_gates_open):
    """--legacy-precision-flags --precision int8 (TensorRT 10.x): the calibrator's batches live on the GPU."""
    import tensorrt as trt

    if not hasattr(trt.BuilderFlag, "INT8"):
        pytest.skip("TensorRT 11 has no legacy int8 flag")
    result = export_model(ckpt, tmp_path / "out", ExportConfig(
        size=(64, 128), trt=True, precision="int8", legacy_precision_flags=True, calib_data=target_data / "train" / "images",
        calib_num=3, parity_data=target_data, parity_num=2, workspace_gib=1))
    assert result.engine is not None
    [spec] = read_manifest(tmp_path / "out" / "model.json").engines
    assert spec.calibration["calibrator"] == "IInt8EntropyCalibrator2" and spec.calibration["n_images"] == 3
    assert (tmp_path / "out" / spec.calibration["cache"]).is_file()
