"""On the device: an engine from an export bundle (no checkpoint), picked by `run BUNDLE`, checked against the ONNX."""

from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

from uda_adapt.common.engine_build import BuildConfig, build_from_bundle, register_engine
from uda_adapt.common.engines import Device
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import EngineSpec, read_manifest, write_manifest
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.common.tensorrt_build import GpuInfo
from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.runtime.backends import open_backend
from uda_adapt.runtime.bundle import model_in_bundle
from uda_adapt.runtime.check import check_engine
from tests.export.fake_tensorrt import make_fake_tensorrt

AGX_MODEL, NANO_MODEL = "NVIDIA Jetson AGX Orin Developer Kit", "NVIDIA Jetson Orin Nano Developer Kit"
# Every Orin module: CUDA name "Orin", compute capability 8.7; only the device tree tells them apart.
AGX, NANO = GpuInfo("Orin", (8, 7), 0, AGX_MODEL), GpuInfo("Orin", (8, 7), 0, NANO_MODEL)
ADA = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), 0, "NVIDIA GeForce RTX 4090")
AGX_FP16 = "model.trt10.3.0.sm87.jetson-agx-orin-developer-kit.fp16.engine"
NANO_FP16 = "model.trt10.3.0.sm87.jetson-orin-nano-developer-kit.fp16.engine"


@pytest.fixture(scope="module")
def bundle_template(ckpt, target_data, tmp_path_factory):
    from uda_adapt.export.parity import GATES
    from tests.export.conftest import UNTRAINED_NET_GATES

    saved = dict(GATES)
    GATES.update(UNTRAINED_NET_GATES)            # an untrained net: the fp16 level is not the point here
    try:
        out = tmp_path_factory.mktemp("bundle") / "export"
        export_model(ckpt, out, ExportConfig(size=(64, 128), precision="fp16", parity_data=target_data, parity_num=3))
    finally:
        GATES.clear()
        GATES.update(saved)
    return out


@pytest.fixture
def bundle(bundle_template, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(bundle_template, copy)
    return copy


class FakeDevice:
    """A fake TensorRT 10.3 and the GPU it builds on; `use(gpu)` moves to another device."""

    def __init__(self, monkeypatch, dla_cores=0):
        self.trt = make_fake_tensorrt("10.3.0.26", dla_cores=dla_cores)
        self.monkeypatch = monkeypatch
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        monkeypatch.setattr("uda_adapt.common.engine_build.detect_gpu", lambda device=0: self.info)
        monkeypatch.setattr("uda_adapt.runtime.bundle.installed_device", lambda device=0: self.here)
        self.use(AGX, dla_cores)

    def use(self, gpu, dla_cores=0, trt_version="10.3.0.26"):
        self.info = gpu
        self.trt.gpu_tag = gpu.model             # the fake's timing caches are tied to this device
        self.here = Device(trt_version, gpu.cc, gpu.model, dla_cores)

    def builds(self):
        return len([c for c in self.trt.calls if c[0] == "build_serialized_network"])


@pytest.fixture
def device(monkeypatch):
    return FakeDevice(monkeypatch)


def test_the_export_keeps_its_parity_pictures(bundle):
    manifest = read_manifest(bundle / "model.json")
    assert manifest.parity["images"] == ["parity/000.png", "parity/001.png", "parity/002.png"]
    assert cv2.imread(str(bundle / "parity" / "000.png")).shape == (64, 128, 3)
    assert manifest.export_config["size"] == [64, 128] and manifest.export_config["precision"] == "fp16"


def test_engines_for_several_devices_sit_side_by_side(bundle, device):
    first = build_from_bundle(bundle, BuildConfig())              # the bundle's fp16 variant, by default
    assert first.file == AGX_FP16 and (bundle / first.file).is_file()
    device.use(NANO)                                              # same CUDA name and compute capability
    build_from_bundle(bundle, BuildConfig())
    device.use(ADA)
    build_from_bundle(bundle, BuildConfig())
    build_from_bundle(bundle, BuildConfig())                      # again: replaces its own entry
    engines = read_manifest(bundle / "model.json").engines
    assert [e.file for e in engines] == [AGX_FP16, NANO_FP16, "model.trt10.3.0.sm89.geforce-rtx-4090.fp16.engine"]
    assert [e.device_model for e in engines] == [AGX_MODEL, NANO_MODEL, "NVIDIA GeForce RTX 4090"]


def test_each_device_keeps_its_own_timing_cache(bundle, device):
    """TensorRT refuses a timing cache from another GPU: one shared BUNDLE/timing.cache broke the second device's build."""
    build_from_bundle(bundle, BuildConfig())
    device.use(ADA)
    build_from_bundle(bundle, BuildConfig())
    device.use(AGX)
    build_from_bundle(bundle, BuildConfig())                      # the AGX cache is read back and fits
    assert sorted(p.name for p in bundle.glob("timing*.cache")) == [
        "timing.trt10.3.0.sm87.jetson-agx-orin-developer-kit.cache", "timing.trt10.3.0.sm89.geforce-rtx-4090.cache"]
    assert [c for c in device.trt.calls if c[0] == "create_timing_cache"][-1][1].startswith(b"timing:" + AGX_MODEL.encode())
    # An explicit --timing-cache from another device is still refused, with the fix.
    with pytest.raises(UserError, match="timing cache .* was written by another TensorRT version or GPU"):
        build_from_bundle(bundle, BuildConfig(timing_cache=str(bundle / "timing.trt10.3.0.sm89.geforce-rtx-4090.cache")))


def test_build_refuses_a_changed_or_missing_onnx(bundle, device):
    (bundle / "model.fp16.onnx").write_bytes((bundle / "model.fp16.onnx").read_bytes() + b"\0")
    with pytest.raises(UserError, match="does not match the hash"):
        build_from_bundle(bundle, BuildConfig())
    with pytest.raises(UserError, match="has no int8 ONNX .*--precision int8"):
        build_from_bundle(bundle, BuildConfig(precision="int8"))


def test_legacy_int8_build_records_its_own_calibration(bundle, device, target_data, monkeypatch):
    """`build --legacy-precision-flags --precision int8`: the record is the entropy calibrator's, not the Q/DQ variant's."""
    from uda_adapt.export.build import build_bundle_engine
    from tests.export.test_tensorrt_build import RecordingCuda

    monkeypatch.setattr("uda_adapt.common.trt_calibration.open_cuda", lambda device: RecordingCuda())
    manifest = read_manifest(bundle / "model.json")
    manifest.variants["int8"] = {"file": "model.int8.onnx", "calibration": {"method": "minmax", "format": "QDQ", "n_images": 500}}
    write_manifest(bundle / "model.json", manifest)
    images = target_data / "train" / "images"
    spec = build_bundle_engine(bundle, BuildConfig(precision="int8", legacy_precision_flags=True, calib_data=str(images),
                                                   calib_num=2))
    assert spec.calibration["calibrator"] == "IInt8EntropyCalibrator2" and spec.calibration["n_images"] == 2
    assert "format" not in spec.calibration and spec.calibration["calib_data"] == str(images.resolve())
    assert (bundle / spec.calibration["cache"]).is_file()


def test_run_bundle_picks_the_engine_for_this_device_else_onnx(bundle, device, monkeypatch):
    notes = []
    build_from_bundle(bundle, BuildConfig())                      # AGX
    device.use(ADA)
    build_from_bundle(bundle, BuildConfig())
    assert model_in_bundle(bundle, log=notes.append, build=False) == bundle / "model.trt10.3.0.sm89.geforce-rtx-4090.fp16.engine"
    device.use(AGX)
    assert model_in_bundle(bundle, log=notes.append, build=False) == bundle / AGX_FP16
    device.use(NANO)                                              # an AGX engine is never chosen on a Nano
    assert model_in_bundle(bundle, log=notes.append, build=False) == bundle / "model.onnx"
    assert f"{AGX_MODEL} (this device is {NANO_MODEL})" in notes[-1] and "uda-adapt build BUNDLE" in notes[-1]
    device.use(AGX, trt_version="10.7.0.23")
    assert model_in_bundle(bundle, log=notes.append, build=False) == bundle / "model.onnx"
    assert "this system has 10.7.0.23" in notes[-1]
    with pytest.raises(UserError, match="this system has 10.7.0.23"):
        model_in_bundle(bundle, "trt", build=False)
    monkeypatch.setattr("uda_adapt.runtime.bundle.installed_device", lambda device=0: (_ for _ in ()).throw(
        UserError("TensorRT is not usable here (No module named 'tensorrt')")))
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.onnx"
    assert "TensorRT is not usable here" in notes[-1]


def test_a_dla_engine_is_never_chosen_where_there_is_no_dla(bundle, monkeypatch):
    device = FakeDevice(monkeypatch, dla_cores=2)
    build_from_bundle(bundle, BuildConfig(dla_core=1))
    manifest = read_manifest(bundle / "model.json")
    [dla] = manifest.engines
    assert dla.file == "model.trt10.3.0.sm87.jetson-agx-orin-developer-kit.dla1.fp16.engine"
    assert model_in_bundle(bundle, build=False) == bundle / dla.file
    device.use(AGX, dla_cores=0)                                  # the same board name, but no DLA here
    with pytest.raises(UserError, match=r"DLA core 1 \(this device has 0 DLA cores\).*uda-adapt build BUNDLE"):
        model_in_bundle(bundle, "trt", build=False)


def test_a_dla_build_on_trt10_reads_the_fp32_onnx_weakly_typed_and_records_it(bundle, monkeypatch):
    """Strongly typed DLA engines are documented only from TensorRT 11: on 10.x, as trtexec --useDLACore does."""
    device = FakeDevice(monkeypatch, dla_cores=1)                 # an Orin NX 8GB: one DLA core
    notes = []
    spec = build_from_bundle(bundle, BuildConfig(dla_core=0), log=notes.append)
    assert [c for c in device.trt.calls if c[0] == "parse_from_file"] == [("parse_from_file", "model.onnx")]
    [entry] = read_manifest(bundle / "model.json").engines
    assert entry.build == spec.build and entry.build["typing"] == "weak" and entry.build["onnx_file"] == "model.onnx"
    assert "weakly typed: DLA on TensorRT 10.x" in notes[0]
    with pytest.raises(UserError, match=r"has 1 DLA core .*Orin NX 8GB 1"):
        build_from_bundle(bundle, BuildConfig(dla_core=1))


def test_entries_without_a_board_name_are_not_trusted_on_a_jetson(bundle, device):
    """Engines recorded before the board was: "Orin" fits every Orin module, so it is rebuilt, not guessed."""
    manifest = read_manifest(bundle / "model.json")
    manifest.engines = [EngineSpec("model.trt10.3.0.sm87.fp16.engine", "fp16", "10.3.0.26", "Orin", "8.7")]
    write_manifest(bundle / "model.json", manifest)
    device.use(NANO)
    with pytest.raises(UserError, match=r"built for Orin \(this device is NVIDIA Jetson Orin Nano"):
        model_in_bundle(bundle, "trt", build=False)
    # On a discrete GPU the CUDA name is the model name: an old entry still fits.
    manifest.engines = [EngineSpec("model.trt10.3.0.sm89.fp16.engine", "fp16", "10.3.0.26", ADA.name, "8.9")]
    write_manifest(bundle / "model.json", manifest)
    device.use(ADA)
    assert model_in_bundle(bundle, "trt", build=False) == bundle / "model.trt10.3.0.sm89.fp16.engine"


def test_the_first_run_builds_the_engine_once_and_keeps_it(bundle, device):
    notes = []
    device.use(NANO)
    assert model_in_bundle(bundle, log=notes.append) == bundle / NANO_FP16
    assert (bundle / NANO_FP16).is_file() and device.builds() == 1
    assert any("has no TensorRT engine for this NVIDIA Jetson Orin Nano Developer Kit" in n and "building one now" in n
               for n in notes)
    assert [e.file for e in read_manifest(bundle / "model.json").engines] == [NANO_FP16]
    assert model_in_bundle(bundle, log=notes.append) == bundle / NANO_FP16     # the second run: from the bundle
    assert device.builds() == 1


def test_no_build_refuses_to_build_on_the_first_run(bundle, device):
    notes = []
    assert model_in_bundle(bundle, log=notes.append, build=False) == bundle / "model.onnx"
    assert "has no TensorRT engine" in notes[-1] and "uda-adapt build BUNDLE" in notes[-1] and device.builds() == 0
    with pytest.raises(UserError, match="no TensorRT engine; build one on this device with `uda-adapt build BUNDLE`"):
        model_in_bundle(bundle, "trt", build=False)


def test_check_never_builds_an_engine(bundle, device):
    with pytest.raises(UserError, match="no TensorRT engine; build one on this device"):
        check_engine(bundle, log=lambda m: None)
    assert device.builds() == 0
    assert model_in_bundle(bundle, "ort") == bundle / "model.onnx" and device.builds() == 0


def test_a_failed_first_run_build_falls_back_to_the_onnx_and_says_why(bundle, monkeypatch):
    device = FakeDevice(monkeypatch)
    device.trt = make_fake_tensorrt("10.3.0.26", parse_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", device.trt)
    notes = []
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.onnx"
    assert "cannot parse model.fp16.onnx" in notes[-1]
    with pytest.raises(UserError, match="cannot parse"):
        model_in_bundle(bundle, "trt")


def test_an_engine_from_trtexec_is_registered_for_this_device(bundle, device, tmp_path):
    """trtexec --saveEngine=model.engine: `build --register` records it, and `run BUNDLE` then picks it."""
    made = bundle / "model.engine"
    made.write_bytes(b"PLAN from trtexec")
    spec = register_engine(bundle, made)
    assert spec.file == AGX_FP16 and (bundle / AGX_FP16).read_bytes() == b"PLAN from trtexec"
    assert (spec.precision, spec.registered_from, spec.device_model) == ("fp16", "model.engine", AGX_MODEL)
    assert spec.min_shape is None                                 # a static engine
    assert model_in_bundle(bundle, build=False) == bundle / AGX_FP16
    assert device.builds() == 0
    foreign = tmp_path / "other.engine"
    foreign.write_bytes(b"a plan from another TensorRT")
    with pytest.raises(UserError, match=r"cannot load .*other.engine.*`uda-adapt build "):
        register_engine(bundle, foreign)


def test_register_through_the_command_line(bundle, device):
    from uda_adapt.cli.main import main

    made = bundle / "model.engine"
    made.write_bytes(b"PLAN from trtexec, dynamic")
    assert main(["build", str(bundle), "--register", str(made), "--no-check"]) == 0
    [spec] = read_manifest(bundle / "model.json").engines
    assert spec.registered_from == "model.engine" and spec.opt_shape == (1, 3, 64, 128)


class TorchAsEngine:
    """A stand-in engine computed independently of ONNX Runtime: PyTorch on the checkpoint, optionally corrupted."""

    def __init__(self, backend, stride):
        self.backend, self.stride, self.inputs = backend, stride, []

    def infer(self, x):
        self.inputs.append(x.copy())
        mask = self.backend.infer(x).copy()
        if self.stride:
            mask.reshape(-1)[:: self.stride] += 1
        return mask

    def close(self):
        self.backend.close()


@pytest.mark.parametrize(("stride", "passes"), [(0, True), (50, False)])
def test_check_compares_the_engine_with_the_onnx(bundle, ckpt, device, stride, passes):
    spec = build_from_bundle(bundle, BuildConfig())
    engines = []

    def opener(path, backend, **options):
        if backend == "trt":   # the real one needs a GPU: PyTorch stands in, never ONNX Runtime itself
            engines.append(TorchAsEngine(open_backend(ckpt, "torch", input_size=(64, 128)), stride))
            return engines[-1]
        return open_backend(path, backend)

    if passes:
        report = check_engine(bundle, bundle / spec.file, opener=opener, log=lambda m: None)
        # PyTorch and ONNX Runtime differ only at near-ties: the fp32 parity gate of the export held.
        assert report["pixel_agreement"] >= 0.999 and report["n_images"] == 3 and report["precision"] == "fp16"
    else:
        with pytest.raises(UserError, match=r"agrees with the ONNX on 9\d\.\d+ % of pixels, below the fp16 gate of 99\.5 %"):
            check_engine(bundle, bundle / spec.file, opener=opener, log=lambda m: None)
    # The engine was fed the bundle's parity pictures through the input contract.
    manifest = read_manifest(bundle / "model.json")
    expected = [prepare_input(cv2.imread(str(bundle / name)), manifest.input) for name in manifest.parity["images"]]
    assert len(engines[0].inputs) == 3 and all(np.array_equal(a, b) for a, b in zip(engines[0].inputs, expected))
    assert len({float(x.std()) for x in engines[0].inputs}) == 3 and all(x.std() > 0.1 for x in engines[0].inputs)
    assert (bundle / "report" / f"engine_check.{spec.file[:-len('.engine')]}.json").is_file()


@pytest.mark.parametrize(("available", "reference"), [
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider"]),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_check_never_compares_tensorrt_with_tensorrt(bundle, device, monkeypatch, available, reference):
    """JetPack's onnxruntime-gpu lists its TensorRT provider first: the reference must not take it."""
    import onnxruntime

    spec = build_from_bundle(bundle, BuildConfig())
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    opened = {}

    def opener(path, backend, **options):
        opened[backend] = options
        runner = open_backend(bundle / "model.onnx", "ort", providers=["CPUExecutionProvider"])
        runner.providers = options.get("providers") or ["TensorrtExecutionProvider"]  # what it would report
        return runner

    report = check_engine(bundle, bundle / spec.file, opener=opener, log=lambda m: None)
    assert opened["ort"]["providers"] == reference and "providers" not in opened["trt"]
    assert report["reference"] == f"model.onnx (ONNX Runtime on {reference[0]}, fp32)"


@pytest.mark.parametrize(("available", "tensorrt_found", "expected"), [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], False, "model.fp16.onnx"),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], True, "model.fp16.onnx"),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], False, "model.onnx"),    # no libnvinfer: the CPU runs it
    (["CPUExecutionProvider"], False, "model.onnx"),
])
def test_without_an_engine_a_gpu_onnxruntime_runs_the_fp16_variant(bundle, monkeypatch, available, tensorrt_found,
                                                                     expected):
    import onnxruntime

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    monkeypatch.setattr("uda_adapt.runtime.backends.onnxruntime_backend.tensorrt_library_found", lambda: tensorrt_found)
    assert (bundle / "model.fp16.onnx").is_file()
    notes = []
    assert model_in_bundle(bundle, log=notes.append) == bundle / expected
    assert model_in_bundle(bundle, "ort", log=notes.append) == bundle / expected


def test_tensorrt_installed_but_unusable_falls_back_loudly(bundle, monkeypatch):
    """`pip install tensorrt` without a CUDA layer: run BUNDLE must not pass ONNX Runtime on the CPU off quietly."""
    device = FakeDevice(monkeypatch)
    monkeypatch.setattr("uda_adapt.runtime.bundle.installed_device", lambda device=0: (_ for _ in ()).throw(
        UserError("no usable CUDA for GPU 0: cuda-python is not installed (No module named 'cuda')")))
    notes = []
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.onnx"
    assert notes[-1].startswith(f"WARNING: TensorRT {device.trt.__version__} is installed but cannot run this bundle")
    assert "cuda-python is not installed" in notes[-1] and "uda-adapt[runtime,trt]" in notes[-1]
    monkeypatch.setitem(sys.modules, "tensorrt", None)            # not installed: a plain note, as before
    model_in_bundle(bundle, log=notes.append)
    assert notes[-1].startswith("note: ")


def test_the_trt_extra_brings_a_cuda_layer():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(r.startswith("tensorrt") for r in extras["trt"])
    assert any(r.startswith("cuda-python") for r in extras["trt"])


def _clip(tmp_path):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 64))
    for i in range(5):
        writer.write(np.full((64, 128, 3), 20 * i, np.uint8))
    writer.release()
    return clip


def test_uda_adapt_run_on_a_bundle_directory(bundle, tmp_path, monkeypatch):
    from uda_adapt.cli.main import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["run", str(bundle), str(_clip(tmp_path)), str(tmp_path / "out.mp4"), "--headless"]) == 0
    assert (tmp_path / "out.mp4").is_file()


def test_uda_adapt_run_no_build_runs_the_onnx_where_tensorrt_could_build(bundle, device, tmp_path, capfd):
    from uda_adapt.cli.main import main

    assert main(["run", str(bundle), str(_clip(tmp_path)), str(tmp_path / "out.mp4"), "--headless", "--no-build"]) == 0
    assert device.builds() == 0 and read_manifest(bundle / "model.json").engines == []
    assert "has no TensorRT engine; build one on this device" in capfd.readouterr().err


def test_the_first_run_build_imports_no_torch():
    """`run BUNDLE` builds on a Jetson without torch: the build code it reaches imports none of the training stack."""
    import subprocess
    from pathlib import Path

    code = ("import sys\n"
            "for name in ('torch', 'torchvision', 'onnx'):\n"
            "    sys.modules[name] = None          # importing them now raises ImportError\n"
            "import uda_adapt.runtime.bundle, uda_adapt.common.engine_build, uda_adapt.common.tensorrt_build\n"
            "heavy = sorted(m for m in sys.modules if m.startswith(('uda_adapt.adapt', 'uda_adapt.export')))\n"
            "assert not heavy, heavy\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
