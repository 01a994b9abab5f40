"""The TensorRT build code, driven through fake 10.x and 11.x `tensorrt` modules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import uda_adapt.export.api
from uda_adapt import export
from uda_adapt.common.errors import UserError
from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.common.engines import Device, check_engine_compatible, compatible_engine, engine_file_name
from uda_adapt.common.manifest import EngineSpec, InputSpec, read_manifest
from uda_adapt.common.tensorrt_build import (
    GpuInfo,
    TensorRTUnavailable,
    build_engine,
    trtexec_command,
)
from uda_adapt.export.precision import ImageCalibrationReader
from tests.export.fake_tensorrt import make_fake_tensorrt

AGX_MODEL = "NVIDIA Jetson AGX Orin Developer Kit"
ORIN = GpuInfo("Orin", (8, 7), 0, AGX_MODEL)
AGX = "jetson-agx-orin-developer-kit"
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
    assert spec.file == f"model.trt{short}.sm87.{AGX}.fp16.engine"
    assert (tmp_path / spec.file).read_bytes().startswith(b"PLAN")  # the plan as TensorRT wrote it, no header
    assert (spec.precision, spec.trt_version, spec.compute_capability, spec.gpu_name) == ("fp16", version, "8.7", "Orin")
    assert spec.device_model == AGX_MODEL


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
    assert _calls(trt, "set_flag") == [("set_flag", "FP16"), ("set_flag", "OBEY_PRECISION_CONSTRAINTS")]


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
    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: cuda)
    trt = make_fake_tensorrt("10.3.0.26")
    images = sorted((target_data / "train" / "images").glob("*.png"))
    reader = ImageCalibrationReader(images, InputSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=(64, 128)))
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="int8", input_name="image", shapes=SHAPES,
                        legacy_precision_flags=True, calibration_reader=reader)
    assert [c[1] for c in _calls(trt, "set_flag")] == ["FP16", "OBEY_PRECISION_CONSTRAINTS", "INT8"]
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
    [cache] = tmp_path.glob("calib.*.cache")
    assert cache.read_bytes() == b"calibration-table"
    assert spec.calibration["calibrator"] == "IInt8EntropyCalibrator2" and spec.calibration["legacy_precision_flags"]


DYNAMIC_BATCH = {"min": (1, 3, 32, 64), "opt": (2, 3, 64, 128), "max": (4, 3, 128, 256)}


def test_legacy_int8_calibrates_at_a_fixed_one_image_profile(onnx_file, tmp_path, target_data, monkeypatch):
    """TensorRT reads each calibration batch at the calibration profile's OPT shape: it must be (1, 3, H, W).

    With the build profile (OPT batch 2 here) it would read twice the bytes the calibrator copied.
    """
    cuda = RecordingCuda()
    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: cuda)
    trt = make_fake_tensorrt("10.3.0.26")
    images = sorted((target_data / "train" / "images").glob("*.png"))
    reader = ImageCalibrationReader(images, InputSpec(size=(64, 128)))
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="int8", input_name="image", shapes=DYNAMIC_BATCH,
                        legacy_precision_flags=True, calibration_reader=reader)
    one_image = (1, 3, 64, 128)
    assert _calls(trt, "set_calibration_profile") == [("set_calibration_profile", (one_image,) * 3)]
    assert _calls(trt, "calibration_read_shape") == [("calibration_read_shape", one_image)]
    read_bytes = int(np.prod(one_image)) * 4
    assert set(cuda.buffers.values()) == {read_bytes}
    assert all(host.nbytes == read_bytes for _, host in cuda.uploads) and len(cuda.uploads) == len(images)
    assert spec.calibration["batch_shape"] == list(one_image)
    # The engine keeps the build profile: calibration's profile is only for calibration.
    assert _calls(trt, "set_shape")[0] == ("set_shape", "image", *DYNAMIC_BATCH.values())


def test_calibration_outside_the_dynamic_range_is_refused(onnx_file, tmp_path, target_data):
    images = sorted((target_data / "train" / "images").glob("*.png"))
    reader = ImageCalibrationReader(images, InputSpec(size=(256, 512)))
    with pytest.raises(UserError, match=r"fed at 1x3x256x512, outside the dynamic range"):
        build_engine(make_fake_tensorrt("10.3.0.26"), ORIN, onnx_file, tmp_path, precision="int8", input_name="image",
                     shapes=DYNAMIC_BATCH, legacy_precision_flags=True, calibration_reader=reader)


def test_the_engine_record_describes_the_calibration_that_ran(onnx_file, tmp_path, target_data, monkeypatch):
    """Legacy flags: the entropy calibrator's record, not the Q/DQ variant's; strongly typed: the Q/DQ one."""
    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: RecordingCuda())
    qdq = {"method": "minmax", "n_images": 500, "format": "QDQ", "activations": "int8 symmetric"}
    images = sorted((target_data / "train" / "images").glob("*.png"))
    reader = ImageCalibrationReader(images, InputSpec(size=(64, 128)))
    legacy = build_engine(make_fake_tensorrt("10.3.0.26"), ORIN, onnx_file, tmp_path, precision="int8",
                          input_name="image", legacy_precision_flags=True, calibration_reader=reader, calibration=qdq)
    assert legacy.calibration == {
        "calibrator": "IInt8EntropyCalibrator2", "n_images": len(images), "batch_shape": [1, 3, 64, 128],
        "calib_data": str((target_data / "train" / "images").resolve()),
        "cache": next(tmp_path.glob("calib.*.cache")).name, "legacy_precision_flags": True}
    typed = build_engine(make_fake_tensorrt("10.3.0.26"), ORIN, onnx_file, tmp_path, precision="int8",
                         input_name="image", calibration=qdq)
    assert typed.calibration == qdq
    fp16 = build_engine(make_fake_tensorrt("10.3.0.26"), ORIN, onnx_file, tmp_path, precision="fp16",
                        input_name="image", calibration=qdq)
    assert fp16.calibration is None


def test_the_calibration_cache_follows_the_calibration_images(onnx_file, tmp_path, target_data, monkeypatch):
    """Reused only for the same images (--calib-data, --calib-num) and input contract; else calibrate again."""
    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: RecordingCuda())
    train = sorted((target_data / "train" / "images").glob("*.png"))
    val = sorted((target_data / "val" / "images").glob("*.png"))
    spec = InputSpec(size=(64, 128))

    def calibrate(files, input_spec=spec):
        trt = make_fake_tensorrt("10.3.0.26")
        build_engine(trt, ORIN, onnx_file, tmp_path, precision="int8", input_name="image", legacy_precision_flags=True,
                     calibration_reader=ImageCalibrationReader(files, input_spec))
        return "cached" if _calls(trt, "calibration_cache_used") else "calibrated"

    assert calibrate(train) == "calibrated"
    assert calibrate(train) == "cached"                         # the same images: the cache is reused
    assert calibrate(train[:2]) == "calibrated"                 # --calib-num changed
    assert calibrate(val) == "calibrated"                       # --calib-data changed
    assert calibrate(train, InputSpec(size=(64, 128), mean=(0.0, 0.0, 0.0))) == "calibrated"   # another contract
    assert calibrate(train[:2]) == "cached"
    assert len(list(tmp_path.glob("calib.*.cache"))) == 4


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
    engine = tmp_path / "out" / f"model.trt{short}.sm87.{AGX}.fp16.engine"
    assert result.engine == engine and engine.is_file()
    assert _calls(trt, "parse_from_file") == [("parse_from_file", "model.fp16.onnx")]
    assert (tmp_path / "out" / f"timing.trt{short}.sm87.{AGX}.cache").is_file()
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
    assert f"`uda-adapt build {out}`" in message and f"`uda-adapt build {out} --register {out / 'model.fp16.engine'}`" in message
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "model.fp16.onnx", "model.json"}
    assert read_manifest(out / "model.json").engines == []


def test_trtexec_command_for_dynamic_shapes():
    command = trtexec_command("out/model.int8.onnx", "out/model.int8.engine", input_name="image", shapes=SHAPES,
                              timing_cache="cache.bin")
    assert command == ("trtexec --onnx=out/model.int8.onnx --saveEngine=out/model.int8.engine --stronglyTyped "
                       "--memPoolSize=workspace:4096M --minShapes=image:1x3x32x64 --optShapes=image:1x3x64x128 "
                       "--maxShapes=image:1x3x128x256 --timingCacheFile=cache.bin")


AGX_HERE = Device("10.3.0.26", "8.7", AGX_MODEL, dla_cores=2)


def test_engine_compatibility():
    spec = EngineSpec(file=engine_file_name(AGX_HERE, "fp16"), precision="fp16", trt_version="10.3.0.26",
                      gpu_name="Orin", compute_capability="8.7", device_model=AGX_MODEL)
    assert spec.file == f"model.trt10.3.0.sm87.{AGX}.fp16.engine"
    check_engine_compatible(spec, Device("10.3.0.30", "8.7", AGX_MODEL))  # same major.minor.patch
    check_engine_compatible(spec, Device("10.3.0", "sm87", AGX_MODEL))
    with pytest.raises(UserError, match=r"TensorRT 10.3.0.26 \(this system has 10.7.0.23\).*uda-adapt build BUNDLE"):
        check_engine_compatible(spec, Device("10.7.0.23", "8.7", AGX_MODEL))
    with pytest.raises(UserError, match=r"compute capability 8.7 \(this GPU is 8.9\)"):
        check_engine_compatible(spec, Device("10.3.0.26", (8, 9), AGX_MODEL))


def test_compatible_engine_picks_the_matching_one(ckpt, tmp_path):
    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    manifest = read_manifest(tmp_path / "out" / "model.json")
    with pytest.raises(UserError, match="no TensorRT engine"):
        compatible_engine(manifest, AGX_HERE)
    orin = EngineSpec(f"model.trt10.3.0.sm87.{AGX}.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7", device_model=AGX_MODEL)
    ada = EngineSpec("model.trt10.3.0.sm89.geforce-rtx-4090.fp16.engine", "fp16", "10.3.0.26", "NVIDIA GeForce RTX 4090", "8.9")
    manifest.engines = [orin, ada]
    assert compatible_engine(manifest, Device("10.3.0.26", (8, 9), "NVIDIA GeForce RTX 4090")) is ada
    with pytest.raises(UserError, match="build one for this device"):
        compatible_engine(manifest, Device("11.4.0.106", (8, 9), "NVIDIA GeForce RTX 4090"))


def test_dla_build_defaults_to_the_dla_with_gpu_fallback(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.3.0.26", dla_cores=2)
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", dla_core=1)
    assert _calls(trt, "default_device_type") == [("default_device_type", "DLA")]
    assert _calls(trt, "DLA_core") == [("DLA_core", 1)] and ("set_flag", "GPU_FALLBACK") in trt.calls
    assert spec.file == f"model.trt10.3.0.sm87.{AGX}.dla1.fp16.engine" and spec.dla_core == 1


@pytest.mark.parametrize(("version", "cores", "core", "precision", "words"), [
    ("10.3.0.26", 0, 0, "fp16", "has 0 DLA cores .*Orin Nano none"),
    ("10.3.0.26", 2, 2, "fp16", "use 0..1"),
    ("10.3.0.26", 2, 0, "fp32", "fp16 or int8 only"),
    ("11.4.0.106", 0, 0, "fp16", "has 0 DLA cores"),
    ("10.3.0.26", 1, 1, "fp16", r"has 1 DLA core \(.*Orin NX 8GB 1.*\); use 0..0"),
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
    assert "--stronglyTyped" not in command        # weakly typed on 10.x, as uda-adapt builds it


def test_a_gpu_engine_is_preferred_to_a_dla_one():
    from uda_adapt.common.manifest import Manifest, OutputSpec

    dla = EngineSpec(f"model.trt10.3.0.sm87.{AGX}.dla0.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7", dla_core=0,
                     device_model=AGX_MODEL)
    gpu = EngineSpec(f"model.trt10.3.0.sm87.{AGX}.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7", device_model=AGX_MODEL)
    manifest = Manifest(classes=("a",), palette=((0, 0, 0),), input=InputSpec(), output=OutputSpec(), engines=[dla, gpu])
    assert compatible_engine(manifest, Device("10.3.0", "8.7", AGX_MODEL, dla_cores=2)) is gpu


def test_an_unreadable_calibration_image_fails_the_build_and_keeps_no_cache(onnx_file, tmp_path, target_data,
                                                                             monkeypatch):
    """TensorRT's trampoline swallows an exception in get_batch as "no more data": the build must not."""
    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: RecordingCuda())
    images = sorted((target_data / "train" / "images").glob("*.png"))
    broken = tmp_path / "calib" / "c_broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png")
    files = [*images[:2], broken, *images[2:]]
    assert len(files) >= 4 and files[2] == broken
    reader = ImageCalibrationReader(files, InputSpec(size=(64, 128)))
    trt = make_fake_tensorrt("10.3.0.26")
    with pytest.raises(UserError, match=rf"calibration failed at image 3 of {len(files)} \(.*c_broken.png\)"):
        build_engine(trt, ORIN, onnx_file, tmp_path, precision="int8", input_name="image",
                     legacy_precision_flags=True, calibration_reader=reader)
    # TensorRT saw two batches and an end of data, never an exception; nothing partial is kept.
    assert _calls(trt, "calibration_batches") == [("calibration_batches", 2, 1)]
    assert not _calls(trt, "callback_exception_swallowed")
    assert not list(tmp_path.glob("calib.*.cache")) and not list(tmp_path.glob("*.engine"))


def test_a_dla_build_pins_a_dynamic_profile_to_its_opt_shape(onnx_file, tmp_path):
    """The DLA runs static shapes: with a range every layer would fall back to the GPU, unseen."""
    trt = make_fake_tensorrt("10.3.0.26", dla_cores=2)
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", shapes=SHAPES, dla_core=0)
    opt = SHAPES["opt"]
    assert SHAPES["min"] != opt != SHAPES["max"]
    assert _calls(trt, "set_shape") == [("set_shape", "image", opt, opt, opt)]
    assert (spec.min_shape, spec.opt_shape, spec.max_shape) == (opt, opt, opt)


def test_dla_on_trt10_is_weakly_typed_with_fp16_as_trtexec_builds_it(tmp_path):
    trt = make_fake_tensorrt("10.3.0.26", dla_cores=2)
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(b"fp32")
    spec = build_engine(trt, ORIN, fp32, tmp_path, precision="fp16", input_name="image", dla_core=0)
    assert _calls(trt, "create_network") == [("create_network", 0)]
    assert {"FP16", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK"} <= {c[1] for c in _calls(trt, "set_flag")}
    assert ("layer_precision", "RESIZE", "FLOAT") in trt.calls and ("layer_precision", "TOPK", "FLOAT") in trt.calls
    assert spec.build["typing"] == "weak" and spec.build["onnx"] == "fp32" and "trtexec --useDLACore" in spec.build["why"]
    assert spec.build["onnx_file"] == "model.onnx"


def test_dla_on_trt11_is_not_refused_by_version_number(onnx_file, tmp_path):
    """Whether TensorRT builds for the DLA is asked of it (num_DLA_cores), never read from its version."""
    trt = make_fake_tensorrt("11.4.0.106", dla_cores=2)
    spec = build_engine(trt, ORIN, onnx_file, tmp_path, precision="fp16", input_name="image", dla_core=1)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert _calls(trt, "create_network") == [("create_network", strongly_typed)]
    assert _calls(trt, "DLA_core") == [("DLA_core", 1)] and spec.dla_core == 1 and spec.build["typing"] == "strong"


def test_int8_on_trt10_runs_unquantized_layers_in_fp16_but_keeps_the_argmax_fp32(tmp_path):
    """Strongly typed, the Q/DQ model keeps every unquantized layer fp32: int8 would be no faster than fp16."""
    qdq = tmp_path / "model.int8.onnx"
    qdq.write_bytes(b"qdq")
    trt = make_fake_tensorrt("10.3.0.26")
    spec = build_engine(trt, ORIN, qdq, tmp_path, precision="int8", input_name="image", calibration={"method": "minmax"})
    assert _calls(trt, "create_network") == [("create_network", 0)]
    assert [c[1] for c in _calls(trt, "set_flag")] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert not _calls(trt, "int8_calibrator")                   # the scales are the Q/DQ ONNX's
    assert _calls(trt, "layer_precision") == [("layer_precision", "RESIZE", "FLOAT"), ("layer_precision", "TOPK", "FLOAT")]
    assert ("layer_output_type", "TOPK", 0, "FLOAT") in trt.calls
    assert spec.calibration == {"method": "minmax"} and spec.build["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    # TensorRT 11 has no weak typing: strongly typed, and the record says what that costs.
    trt11 = make_fake_tensorrt("11.4.0.106")
    typed = build_engine(trt11, ORIN, qdq, tmp_path, precision="int8", input_name="image")
    assert typed.build["typing"] == "strong" and "unquantized run in fp32" in typed.build["why"]
