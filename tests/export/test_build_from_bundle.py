"""On the device: an engine from an export bundle (no checkpoint), picked by `run BUNDLE`, checked against the ONNX."""

from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

from common.errors import UserError
from common.manifest import read_manifest
from export.api import export_model
from export.build import BuildConfig, build_from_bundle
from export.config import ExportConfig
from export.tensorrt_build import GpuInfo
from runtime.backends import open_backend
from runtime.bundle import model_in_bundle
from runtime.check import check_engine
from tests.export.fake_tensorrt import make_fake_tensorrt

ORIN, ADA = GpuInfo("Orin", (8, 7)), GpuInfo("RTX 4090", (8, 9))


@pytest.fixture(scope="module")
def bundle_template(ckpt, target_data, tmp_path_factory):
    from export.parity import GATES, Gate

    saved = dict(GATES)
    GATES.update({"fp16": Gate(0.0, None)})      # an untrained net: the fp16 level is not the point here
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


@pytest.fixture
def device(monkeypatch):
    """A fake TensorRT 10.3 and a GPU that tests may swap."""
    trt = make_fake_tensorrt("10.3.0.26")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    gpu = {"info": ORIN}
    monkeypatch.setattr("export.build.detect_gpu", lambda device=0: gpu["info"])
    return gpu


def test_the_export_keeps_its_parity_pictures(bundle):
    manifest = read_manifest(bundle / "model.json")
    assert manifest.parity["images"] == ["parity/000.png", "parity/001.png", "parity/002.png"]
    assert cv2.imread(str(bundle / "parity" / "000.png")).shape == (64, 128, 3)
    assert manifest.export_config["size"] == [64, 128] and manifest.export_config["precision"] == "fp16"


def test_engines_for_several_devices_sit_side_by_side(bundle, device):
    first = build_from_bundle(bundle, BuildConfig())              # the bundle's fp16 variant, by default
    assert first.file == "model.trt10.3.0.sm87.fp16.engine" and (bundle / first.file).is_file()
    device["info"] = ADA
    build_from_bundle(bundle, BuildConfig())
    build_from_bundle(bundle, BuildConfig())                      # again: replaces its own entry
    engines = read_manifest(bundle / "model.json").engines
    assert [e.file for e in engines] == ["model.trt10.3.0.sm87.fp16.engine", "model.trt10.3.0.sm89.fp16.engine"]
    assert {e.compute_capability for e in engines} == {"8.7", "8.9"}


def test_build_refuses_a_changed_or_missing_onnx(bundle, device):
    (bundle / "model.fp16.onnx").write_bytes((bundle / "model.fp16.onnx").read_bytes() + b"\0")
    with pytest.raises(UserError, match="does not match the hash"):
        build_from_bundle(bundle, BuildConfig())
    with pytest.raises(UserError, match="has no int8 ONNX .*--precision int8"):
        build_from_bundle(bundle, BuildConfig(precision="int8"))


def test_run_bundle_picks_the_engine_for_this_device_else_onnx(bundle, device, monkeypatch):
    notes = []
    monkeypatch.setitem(sys.modules, "tensorrt", None)              # no TensorRT here
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.onnx"
    assert "holds no TensorRT engine" in notes[-1]
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.26"))
    build_from_bundle(bundle, BuildConfig())
    device["info"] = ADA
    build_from_bundle(bundle, BuildConfig())
    monkeypatch.setattr("runtime.bundle.installed_tensorrt", lambda device=0: ("10.3.0.30", "8.9"))
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.trt10.3.0.sm89.fp16.engine"
    monkeypatch.setattr("runtime.bundle.installed_tensorrt", lambda device=0: ("10.7.0.23", "8.7"))
    assert model_in_bundle(bundle, log=notes.append) == bundle / "model.onnx"
    assert "this system has 10.7.0.23" in notes[-1]
    with pytest.raises(UserError, match="this system has 10.7.0.23"):
        model_in_bundle(bundle, "trt")


class Flipping:
    """A stand-in engine: the ONNX's answer with every `stride`-th pixel changed."""

    def __init__(self, backend, stride):
        self.backend, self.stride = backend, stride

    def infer(self, x):
        mask = self.backend.infer(x).copy()
        if self.stride:
            mask.reshape(-1)[:: self.stride] += 1
        return mask

    def close(self):
        self.backend.close()


@pytest.mark.parametrize(("stride", "passes"), [(0, True), (50, False)])
def test_check_compares_the_engine_with_the_onnx(bundle, device, stride, passes):
    spec = build_from_bundle(bundle, BuildConfig())

    def opener(path, backend, **options):
        if backend == "trt":   # the real one needs a GPU: the ONNX stands in, optionally corrupted
            return Flipping(open_backend(bundle / "model.onnx", "ort"), stride)
        return open_backend(path, backend)

    if passes:
        report = check_engine(bundle, bundle / spec.file, opener=opener, log=lambda m: None)
        assert report["pixel_agreement"] == 1.0 and report["n_images"] == 3 and report["precision"] == "fp16"
    else:
        with pytest.raises(UserError, match=r"agrees with the ONNX on 98\.\d+ % of pixels, below the fp16 gate of 99\.5 %"):
            check_engine(bundle, bundle / spec.file, opener=opener, log=lambda m: None)
    assert (bundle / "report" / f"engine_check.{spec.file[:-len('.engine')]}.json").is_file()


def test_uda_adapt_run_on_a_bundle_directory(bundle, tmp_path, monkeypatch):
    from cli.main import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 64))
    for i in range(5):
        writer.write(np.full((64, 128, 3), 20 * i, np.uint8))
    writer.release()
    assert main(["run", str(bundle), str(clip), str(tmp_path / "out.mp4"), "--headless"]) == 0
    assert (tmp_path / "out.mp4").is_file()
