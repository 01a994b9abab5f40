import json
import shutil

import numpy as np
import pytest
import torch
from conftest import MODEL_SIZE

from uda_adapt.adapt.checkpoint import Checkpoint, save_checkpoint
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.common.manifest import manifest_for, read_manifest
from uda_adapt.runtime.backends import backend_for, open_backend


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


# --- every backend against a direct ONNX Runtime session, on real frames ---------------------------

@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """(model.onnx, its checkpoint) of a network whose masks change with the frame."""
    from tests.runtime.varied_model import export_varied_model

    return export_varied_model(tmp_path_factory.mktemp("varied"))


def _frames(spec):
    from uda_adapt.common.preprocess import prepare_input
    from conftest import street_frame

    return [prepare_input(street_frame(i), spec) for i in (0, 15, 29)]


def test_onnxruntime_backend_gives_the_masks_of_a_direct_session(varied):
    import onnxruntime as ort

    onnx_path, _ = varied
    backend = open_backend(onnx_path, threads=1)
    direct = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    masks = []
    for x in _frames(backend.manifest.input):
        (want,) = direct.run(["mask"], {"image": x})
        masks.append(backend.infer(x))
        assert np.array_equal(masks[-1], want)
    assert len(np.unique(masks[0])) > 1 and not np.array_equal(masks[0], masks[-1])   # the frames matter


def test_torch_backend_agrees_with_onnx_runtime_up_to_near_ties(varied):
    """The checkpoint in PyTorch and its ONNX in ONNX Runtime: the same mask wherever the two best classes
    are not a near tie (which way a tie falls depends on the CPU's float kernels)."""
    import onnxruntime as ort

    from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
    from uda_adapt.export.onnx_export import DeployWrapper

    onnx_path, ckpt_path = varied
    backend = open_backend(ckpt_path, input_size=(64, 128))
    direct = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = DeployWrapper(build_model(load_checkpoint(ckpt_path)), "logits").eval()
    decided = 0
    for x in _frames(read_manifest(manifest_for(onnx_path)).input):      # the same pictures ORT gets
        got = backend.infer(x)
        (want,) = direct.run(["mask"], {"image": x})
        with torch.no_grad():
            top2 = wrapper(torch.from_numpy(x)).topk(2, dim=1).values
        gap = (top2[:, 0] - top2[:, 1]).numpy()
        clear = gap >= 1e-3
        assert np.array_equal(got[clear], want[clear]), f"{int((got != want)[clear].sum())} pixels differ without a tie"
        decided += int(clear.sum())
    assert decided > 0.9 * 3 * 64 * 128


# --- ONNX Runtime's execution providers (onnxruntime-gpu, JetPack's build) --------------------------

from uda_adapt.runtime.backends.onnxruntime_backend import (  # noqa: E402
    CPU_EP,
    CUDA_EP,
    TENSORRT_EP,
    choose_providers,
    onnx_precision,
    provider_options,
)

GPU_BUILD = [TENSORRT_EP, CUDA_EP, CPU_EP]


@pytest.mark.parametrize(("available", "tensorrt_found", "expected"), [
    (GPU_BUILD, True, GPU_BUILD),                        # JetPack: libnvinfer is there
    (GPU_BUILD, False, [CUDA_EP, CPU_EP]),               # an onnxruntime-gpu wheel without TensorRT installed
    ([CUDA_EP, CPU_EP], True, [CUDA_EP, CPU_EP]),
    ([CPU_EP], True, [CPU_EP]),
])
def test_providers_best_first(available, tensorrt_found, expected):
    assert choose_providers(available, None, tensorrt_found) == expected


def test_asked_providers_must_exist():
    assert choose_providers(GPU_BUILD, [CUDA_EP], True) == [CUDA_EP, CPU_EP]
    with pytest.raises(UserError, match=r"no TensorrtExecutionProvider; it has CPUExecutionProvider .*Jetson Zoo"):
        choose_providers([CPU_EP], [TENSORRT_EP], True)


@pytest.mark.parametrize(("precision", "ort_version", "fp16", "int8"), [
    ("fp32", "1.21.1", False, False), ("fp16", "1.21.1", True, False), ("int8", "1.21.1", True, True),
    # From 1.22 the baked file's own types hold: with trt_fp16_enable TensorRT could run its fp32 Resize/ArgMax in fp16.
    ("fp32", "1.22.0", False, False), ("fp16", "1.22.0", False, False), ("int8", "1.30.0", False, True),
])
def test_tensorrt_provider_options_follow_the_onnx_precision(tmp_path, precision, ort_version, fp16, int8):
    (trt, trt_options), (cuda, cuda_options), cpu = provider_options(GPU_BUILD, 1, precision, tmp_path, ort_version)
    assert (trt, cuda, cpu) == tuple(GPU_BUILD)
    assert trt_options["trt_fp16_enable"] is fp16 and trt_options["trt_int8_enable"] is int8
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_engine_cache_path"] == str(tmp_path)
    assert trt_options["trt_timing_cache_path"] == str(tmp_path) and trt_options["device_id"] == 1
    assert cuda_options == {"device_id": 1}


def test_onnx_precision_comes_from_the_bundle_variant(small_onnx, tmp_path):
    manifest = read_manifest(manifest_for(small_onnx))
    manifest.variants = {"fp16": {"file": "model.fp16.onnx"}}
    assert onnx_precision(manifest, tmp_path / "model.fp16.onnx") == "fp16"
    assert onnx_precision(manifest, tmp_path / "model.onnx") == "fp32"


def test_a_gpu_onnxruntime_that_falls_back_says_so_and_keeps_its_tensorrt_cache(small_onnx, tmp_path, monkeypatch):
    """onnxruntime-gpu lists TensorRT and CUDA; here neither can start, as with missing libraries: ORT falls
    back to the CPU, and the backend says which providers it asked for and which run."""
    import onnxruntime as ort

    import uda_adapt.runtime.backends.onnxruntime_backend as module

    model = tmp_path / "bundle" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(small_onnx, model)
    shutil.copy(manifest_for(small_onnx), manifest_for(model))
    asked = []
    real_session = ort.InferenceSession

    def session(path, options, providers):
        asked.append(providers)
        return real_session(path, options, providers=[CPU_EP])

    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(module, "tensorrt_library_found", lambda: True)
    notes = []
    backend = open_backend(model, threads=1, device=0, log=notes.append)
    [[(trt, options), (cuda, _), cpu]] = asked
    cache = model.parent / "ort_trt_cache" / f"ort{ort.__version__}.gpu0"
    assert (trt, cuda, cpu) == tuple(GPU_BUILD) and options["trt_engine_cache_path"] == str(cache) and cache.is_dir()
    assert any("builds its engines on the first run" in n for n in notes)
    assert "could not start TensorrtExecutionProvider, CUDAExecutionProvider" in notes[-1]
    assert backend.providers == [CPU_EP] and "CPUExecutionProvider" in backend.describe()
