"""The TensorRT build code, driven through fake 10.x and 11.x `tensorrt` modules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import export.api
from common.errors import UserError
from export.api import export_model
from export.config import ExportConfig
from common.engines import check_engine_compatible, compatible_engine, engine_file_name
from common.manifest import EngineSpec, InputSpec, read_manifest
from export.precision import ImageCalibrationReader
from export.tensorrt_build import (
    GpuInfo,
    TensorRTUnavailable,
    build_engine,
    trtexec_command,
)
from tests.export.fake_tensorrt import make_fake_tensorrt

ORIN = GpuInfo("Orin", (8, 7))
SHAPES = {"min": (1, 3, 32, 64), "opt": (1, 3, 64, 128), "max": (1, 3, 128, 256)}


def _calls(trt, name):
    return [c for c in trt.calls if c[0] == name]


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "model.fp16.onnx"
    path.write_bytes(b"not parsed by the fake")
    return path


@pytest.mark.parametrize("version", ["10.3.0.26", "11.4.0.106"])
def test_strongly_typed_build(version, onnx_file, tmp_path):
    trt = make_fake_tensorrt(version)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"earlier-cache")
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image",
                        workspace_gib=2, timing_cache=cache)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert _calls(trt, "create_network") == [("create_network", strongly_typed)]
    assert _calls(trt, "parse_from_file") == [("parse_from_file", "model.fp16.onnx")]
    assert _calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 2 << 30)]
    assert _calls(trt, "create_timing_cache") == [("create_timing_cache", b"earlier-cache")]
    assert _calls(trt, "set_flag") == []  # precision comes from the ONNX, never from flags
    assert _calls(trt, "set_shape") == []
    assert cache.read_bytes().startswith(b"timing:")

    short = ".".join(version.split(".")[:3])
    assert spec.file == f"model.trt{short}.sm87.fp16.engine"
    assert (tmp_path / spec.file).read_bytes().startswith(b"PLAN")  # the plan as TensorRT wrote it, no header
    assert (spec.precision, spec.trt_version, spec.compute_capability, spec.gpu_name) == ("fp16", version, "8.7", "Orin")


def test_dynamic_shapes_make_an_optimization_profile(onnx_file, tmp_path):
    trt = make_fake_tensorrt("11.4.0.106")
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp32", input_name="image", shapes=SHAPES)
    assert _calls(trt, "set_shape") == [("set_shape", "image", *SHAPES.values())]
    assert _calls(trt, "add_optimization_profile")
    assert (spec.min_shape, spec.opt_shape, spec.max_shape) == tuple(SHAPES.values())


def test_legacy_flags_on_trt10(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.3.0.26")
    build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", legacy_precision_flags=True)
    assert _calls(trt, "create_network") == [("create_network", 0)]  # 0 = explicit batch on 10.x
    assert _calls(trt, "set_flag") == [("set_flag", "FP16")]


def test_legacy_flags_are_refused_on_trt11(onnx_file, tmp_path):
    trt = make_fake_tensorrt("11.4.0.106")
    with pytest.raises(UserError, match="removed in 11"):
        build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", legacy_precision_flags=True)
    assert not _calls(trt, "Builder")


class RecordingCuda:
    """Device memory as a dict: what the calibrator uploads, and which pointers it hands out."""

    def __init__(self, device=0):
        self.device, self.buffers, self.uploads, self.closed = device, {}, [], False

    def use_on_this_thread(self):
        pass

    def device_buffer(self, nbytes):
        ptr = 0x7000_0000 + len(self.buffers) * 0x10000
        self.buffers[ptr] = nbytes
        return ptr

    def upload(self, ptr, host):
        assert host.nbytes <= self.buffers[ptr]
        self.uploads.append((ptr, host.copy()))

    def synchronize(self):
        pass

    def close(self):
        self.closed = True


def test_legacy_int8_calibrates_with_entropy_calibrator(onnx_file, tmp_path, target_data, monkeypatch):
    cuda = RecordingCuda()
    monkeypatch.setattr("export.tensorrt_build.open_cuda", lambda device: cuda)
    trt = make_fake_tensorrt("10.3.0.26")
    images = sorted((target_data / "train" / "images").glob("*.png"))
    reader = ImageCalibrationReader(images, InputSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=(64, 128)))
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="int8", input_name="image", shapes=SHAPES,
                        legacy_precision_flags=True, calibration_reader=reader)
    assert [c[1] for c in _calls(trt, "set_flag")] == ["FP16", "INT8"]
    assert _calls(trt, "int8_calibrator") == [("int8_calibrator", "IInt8EntropyCalibrator2")]
    assert _calls(trt, "set_calibration_profile")
    assert _calls(trt, "calibration_batches") == [("calibration_batches", len(images), 1)]
    # get_batch hands TensorRT device pointers (one buffer, reused), never a host array's
    # address: with a CPU-only torch (JetPack's usual case) that was the bug.
    [(_, pointers)] = _calls(trt, "calibration_pointers")
    assert set(pointers) == set(cuda.buffers) and len(cuda.buffers) == 1
    first = ImageCalibrationReader(images, reader.spec).get_next()["image"]
    assert np.array_equal(cuda.uploads[0][1].view(np.float32).reshape(first.shape), first)
    assert cuda.closed
    assert (tmp_path / "calib.cache").read_bytes() == b"calibration-table"
    assert spec.calibration == {"legacy_precision_flags": True}


def test_parse_and_build_failures_are_user_errors(onnx_file, tmp_path):
    with pytest.raises(UserError, match="cannot parse model.fp16.onnx: .*UNSUPPORTED_NODE"):
        build_engine(make_fake_tensorrt("10.3.0.26", parse_ok=False), ORIN, onnx_file, tmp_path,
                     precision="fp16", input_name="image")
    with pytest.raises(UserError, match="failed to build"):
        build_engine(make_fake_tensorrt("11.4.0.106", build_ok=False), ORIN, onnx_file, tmp_path,
                     precision="fp16", input_name="image")
    with pytest.raises(TensorRTUnavailable, match="cannot use the GPU"):
        build_engine(make_fake_tensorrt("10.3.0.26", builder_error=TypeError("factory function returned nullptr")),
                     ORIN, onnx_file, tmp_path, precision="fp16", input_name="image")
    with pytest.raises(UserError, match="too old"):
        build_engine(make_fake_tensorrt("8.6.1"), ORIN, onnx_file, tmp_path, precision="fp16", input_name="image")
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.parametrize("version", ["10.3.0.26", "11.4.0.106"])
def test_export_with_fake_tensorrt_records_the_engine(version, ckpt, target_data, tmp_path, monkeypatch,
                                                      reduced_precision_gates_open):
    trt = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(export.api, "detect_gpu", lambda: ORIN)
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), dynamic=True, trt=True, precision="fp16", parity_data=target_data, parity_num=2))
    short = ".".join(version.split(".")[:3])
    engine = tmp_path / "out" / f"model.trt{short}.sm87.fp16.engine"
    assert result.engine == engine and engine.is_file()
    assert _calls(trt, "parse_from_file") == [("parse_from_file", "model.fp16.onnx")]
    assert (tmp_path / "out" / "timing.cache").is_file()
    [spec] = read_manifest(tmp_path / "out" / "model.json").engines
    assert spec.file == engine.name and spec.trt_version == version and spec.compute_capability == "8.7"
    assert spec.opt_shape == (1, 3, 64, 128)
    assert _calls(trt, "set_shape")[0][1] == "image"


def test_export_without_tensorrt_keeps_the_bundle_and_prints_trtexec(ckpt, tmp_path, monkeypatch,
                                                                     reduced_precision_gates_open):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailable) as caught:
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), trt=True, precision="fp16", parity_num=1, workspace_gib=2))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("TensorRT is not installed")
    out = tmp_path / "out"
    assert (f"trtexec --onnx={out / 'model.fp16.onnx'} --saveEngine={out / 'model.fp16.engine'} --stronglyTyped "
            "--memPoolSize=workspace:2048M") in message
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "model.fp16.onnx", "model.json"}
    assert read_manifest(out / "model.json").engines == []


def test_trtexec_command_for_dynamic_shapes():
    command = trtexec_command("out/model.int8.onnx", "out/model.int8.engine", input_name="image", shapes=SHAPES,
                              timing_cache="cache.bin")
    assert command == ("trtexec --onnx=out/model.int8.onnx --saveEngine=out/model.int8.engine --stronglyTyped "
                       "--memPoolSize=workspace:4096M --minShapes=image:1x3x32x64 --optShapes=image:1x3x64x128 "
                       "--maxShapes=image:1x3x128x256 --timingCacheFile=cache.bin")


def test_engine_compatibility():
    spec = EngineSpec(file=engine_file_name("10.3.0.26", ORIN.compute_capability, "fp16"), precision="fp16", trt_version="10.3.0.26",
                      gpu_name="Orin", compute_capability="8.7")
    assert spec.file == "model.trt10.3.0.sm87.fp16.engine"
    check_engine_compatible(spec, "10.3.0.30", (8, 7))  # same major.minor.patch
    check_engine_compatible(spec, "10.3.0", "sm87")
    with pytest.raises(UserError, match=r"TensorRT 10.3.0.26 \(this system has 10.7.0.23\).*uda-adapt build BUNDLE"):
        check_engine_compatible(spec, "10.7.0.23", "8.7")
    with pytest.raises(UserError, match=r"compute capability 8.7 \(this GPU is 8.9\)"):
        check_engine_compatible(spec, "10.3.0.26", (8, 9))


def test_compatible_engine_picks_the_matching_one(ckpt, tmp_path):
    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    manifest = read_manifest(tmp_path / "out" / "model.json")
    with pytest.raises(UserError, match="no TensorRT engine"):
        compatible_engine(manifest, "10.3.0", "8.7")
    orin = EngineSpec("model.trt10.3.0.sm87.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7")
    ada = EngineSpec("model.trt10.3.0.sm89.fp16.engine", "fp16", "10.3.0.26", "RTX 4090", "8.9")
    manifest.engines = [orin, ada]
    assert compatible_engine(manifest, "10.3.0.26", (8, 9)) is ada
    with pytest.raises(UserError, match="rebuild it on this device"):
        compatible_engine(manifest, "11.4.0.106", (8, 9))


def test_dla_build_defaults_to_the_dla_with_gpu_fallback(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.3.0.26", dla_cores=2)
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", dla_core=1)
    assert _calls(trt, "default_device_type") == [("default_device_type", "DLA")]
    assert _calls(trt, "DLA_core") == [("DLA_core", 1)] and ("set_flag", "GPU_FALLBACK") in trt.calls
    assert spec.file == "model.trt10.3.0.sm87.dla1.fp16.engine" and spec.dla_core == 1


@pytest.mark.parametrize(("version", "cores", "core", "precision", "words"), [
    ("10.3.0.26", 0, 0, "fp16", "has 0 DLA cores .*Orin Nano none"),
    ("10.3.0.26", 2, 2, "fp16", "use 0..1"),
    ("10.3.0.26", 2, 0, "fp32", "fp16 or int8 only"),
    ("11.4.0.106", 2, 0, "fp16", "builds no DLA engines"),
])
def test_dla_refusals(onnx_file, tmp_path, version, cores, core, precision, words):
    trt = make_fake_tensorrt(version, dla_cores=cores)
    with pytest.raises(UserError, match=words):
        build_engine(trt, ORIN, onnx_file, tmp_path, precision=precision, input_name="image", dla_core=core)
    assert not _calls(trt, "build_serialized_network")


def test_a_foreign_timing_cache_is_refused(onnx_file, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    trt = make_fake_tensorrt("10.3.0.26", timing_cache_ok=False)
    with pytest.raises(UserError, match="timing cache .*timing.cache was written by another TensorRT"):
        build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", timing_cache=cache)


def test_trtexec_command_for_the_dla():
    command = trtexec_command("m.fp16.onnx", "m.engine", input_name="image", dla_core=1)
    assert command.endswith("--useDLACore=1 --allowGPUFallback")


def test_a_gpu_engine_is_preferred_to_a_dla_one():
    from common.manifest import Manifest, OutputSpec

    dla = EngineSpec("model.trt10.3.0.sm87.dla0.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7", dla_core=0)
    gpu = EngineSpec("model.trt10.3.0.sm87.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7")
    manifest = Manifest(classes=("a",), palette=((0, 0, 0),), input=InputSpec(), output=OutputSpec(), engines=[dla, gpu])
    assert compatible_engine(manifest, "10.3.0", "8.7") is gpu
