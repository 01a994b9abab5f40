"""The TensorRT backend's logic against a fake `tensorrt` module and a fake CUDA layer.

The fakes follow the TensorRT 10/11 runtime surface the backend uses (tensor names and
modes, profile shapes, set_input_shape, set_tensor_address, execute_async_v3); a real engine
needs a GPU and is not run here.
"""

import threading
import types

import numpy as np
import pytest
from conftest import MODEL_SIZE, street_frame

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import EngineSpec, InputSpec, Manifest, OutputSpec, manifest_for, read_manifest, write_manifest
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.runtime.backends import open_backend
from uda_adapt.runtime.backends.tensorrt_backend import TensorRTBackend

PROFILE = ((1, 3, 16, 32), (1, 3, 32, 64), (2, 3, 32, 64))
AGX_MODEL = "NVIDIA Jetson AGX Orin Developer Kit"


@pytest.fixture(autouse=True)
def board(tmp_path, monkeypatch):
    """This "device" is an AGX Orin: its device tree names the board (CUDA only says "Orin")."""
    tree = tmp_path / "device-tree-model"
    tree.write_bytes(AGX_MODEL.encode() + b"\0")
    monkeypatch.setattr("uda_adapt.common.engines.DEVICE_TREE_MODEL", tree)
    return tree


class FakeCuda:
    stream_handle = 1234

    def __init__(self, capability="8.7", device=0):
        self.capability, self.memory, self.next_ptr = capability, {}, 4096
        self.allocations, self.syncs, self.closed = 0, 0, False
        self.device, self.threads = device, set()

    def use_on_this_thread(self):
        self.threads.add(threading.get_ident())

    def name(self):
        return "Orin"

    def compute_capability(self):
        return self.capability

    def device_buffer(self, nbytes):
        self.allocations += 1
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def pinned(self, nbytes):
        return np.zeros(nbytes, np.uint8)

    def upload(self, ptr, host):
        self.memory[ptr][: host.nbytes] = host

    def download(self, host, ptr):
        host[:] = self.memory[ptr][: host.nbytes]

    def synchronize(self):
        self.syncs += 1

    def close(self):
        self.closed = True


class FakeContext:
    def __init__(self, cuda):
        self.cuda, self.shapes, self.addresses, self.executions = cuda, {}, {}, []
        self.set_shape_calls = []

    def set_input_shape(self, name, shape):
        # TensorRT 10/11: returns False (and keeps the old shape) outside the profile.
        self.set_shape_calls.append(tuple(shape))
        if not all(lo <= d <= hi for lo, d, hi in zip(PROFILE[0], shape, PROFILE[2])):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        b, _, h, w = self.shapes["image"]
        return (b, h, w)

    def set_tensor_address(self, name, ptr):
        assert name not in self.addresses, "tensor address bound twice"
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.executions.append(stream)
        shape = self.shapes["image"]
        n = int(np.prod(shape))
        x = self.cuda.memory[self.addresses["image"]][: n * 4].view(np.float32).reshape(shape)
        mask = (x[:, 0] > 0).astype(np.int32) * 13          # "car" where channel 0 is positive
        self.cuda.memory[self.addresses["mask"]][: mask.nbytes] = mask.view(np.uint8).ravel()
        return True


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, cuda):
        self.context = FakeContext(cuda)

    def get_tensor_name(self, i):
        return ["image", "mask"][i]

    def get_tensor_mode(self, name):
        return "input" if name == "image" else "output"

    def get_tensor_shape(self, name):
        return (-1, 3, -1, -1) if name == "image" else (-1, -1, -1)

    def get_tensor_profile_shape(self, name, profile):
        return PROFILE

    def get_tensor_dtype(self, name):
        return np.float32 if name == "image" else np.int32

    def create_execution_context(self):
        return self.context


def fake_tensorrt(cuda, version="10.3.0", dla_cores=0):
    engines = []

    class Runtime:
        def __init__(self, logger):
            self.num_DLA_cores, self.DLA_core = dla_cores, -1
            engines.append(self)

        def deserialize_cuda_engine(self, data):
            if data != b"plan":
                return None
            engines.append(FakeEngine(cuda))
            return engines[-1]

    # engines[0] is the Runtime, engines[-1] the deserialized engine

    return types.SimpleNamespace(
        __version__=version, engines=engines, Runtime=Runtime,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        TensorIOMode=types.SimpleNamespace(INPUT="input", OUTPUT="output"),
        nptype=lambda dtype: dtype,
    )


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "model.10.3.0.sm87.fp16.engine"
    path.write_bytes(b"plan")
    manifest = Manifest(
        classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE,
        input=InputSpec(), output=OutputSpec(),
        engines=[EngineSpec(file=path.name, precision="fp16", trt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
                            device_model=AGX_MODEL)],
    )
    write_manifest(tmp_path / "model.json", manifest)
    return path


def test_runs_an_engine_with_buffers_bound_once(engine_file):
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    backend = TensorRTBackend(engine_file, trt=trt, cuda=cuda)
    context = trt.engines[-1].context
    assert backend.input_size == (32, 64)                       # the profile's opt shape
    assert cuda.allocations == 2 and set(context.addresses) == {"image", "mask"}

    batch = np.full((1, 3, 32, 64), -1.0, np.float32)
    batch[0, 0, :, :10] = 1.0
    for _ in range(3):
        mask = backend.infer(batch)
    assert mask.shape == (1, 32, 64) and mask.dtype == np.int32
    assert (mask[0, :, :10] == 13).all() and (mask[0, :, 10:] == 0).all()
    assert context.executions == [FakeCuda.stream_handle] * 3 and cuda.syncs == 3
    # Allocated at the profile max once; the shape is set again only when it changes.
    assert context.set_shape_calls == [PROFILE[2], (1, 3, 32, 64)]
    backend.infer(np.zeros((1, 3, 16, 32), np.float32))
    assert context.set_shape_calls[-1] == (1, 3, 16, 32) and cuda.allocations == 2
    backend.close()
    assert cuda.closed


def test_masks_returned_earlier_are_not_overwritten(engine_file):
    cuda = FakeCuda()
    backend = TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)
    first = backend.infer(np.ones((1, 3, 32, 64), np.float32))
    backend.infer(-np.ones((1, 3, 32, 64), np.float32))
    assert (first == 13).all()


def test_input_beyond_the_profile_is_a_user_error(engine_file):
    cuda = FakeCuda()
    backend = TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)
    with pytest.raises(UserError, match="exceeds the engine's maximum"):
        backend.infer(np.zeros((1, 3, 64, 128), np.float32))


def test_engine_for_another_tensorrt_is_refused(engine_file):
    cuda = FakeCuda()
    with pytest.raises(UserError, match=r"TensorRT 10\.3\.0\.30.*11\.4\.0.*uda-adapt build BUNDLE") as error:
        TensorRTBackend(engine_file, trt=fake_tensorrt(cuda, version="11.4.0"), cuda=cuda)
    assert engine_file.name in str(error.value)
    assert cuda.closed


def test_engine_for_another_gpu_is_refused(engine_file):
    cuda = FakeCuda(capability="9.0")
    with pytest.raises(UserError, match=r"compute capability 8\.7.*this GPU is 9\.0.*uda-adapt build BUNDLE"):
        TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)


def test_engine_for_another_board_with_the_same_gpu_is_refused(engine_file, board):
    """An AGX Orin engine on an Orin Nano: both say "Orin" and 8.7; the device tree tells them apart."""
    board.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    cuda = FakeCuda()
    with pytest.raises(UserError, match=r"built for NVIDIA Jetson AGX Orin Developer Kit \(this device is NVIDIA Jetson "
                                        r"Orin Nano Developer Kit\).*uda-adapt build BUNDLE"):
        TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)
    assert cuda.closed


def test_a_dla_engine_needs_a_dla_here_and_loads_on_its_core(engine_file):
    manifest = read_manifest(manifest_for(engine_file))
    manifest.engines[0].dla_core = 1
    write_manifest(manifest_for(engine_file), manifest)
    cuda = FakeCuda()
    with pytest.raises(UserError, match=r"DLA core 1 \(this device has 0 DLA cores\)"):
        TensorRTBackend(engine_file, trt=fake_tensorrt(cuda, dla_cores=0), cuda=cuda)
    trt = fake_tensorrt(cuda, dla_cores=2)
    TensorRTBackend(engine_file, trt=trt, cuda=cuda)
    assert trt.engines[0].DLA_core == 1


def test_engine_without_manifest_entry_relies_on_tensorrt(engine_file, tmp_path):
    other = tmp_path / "trtexec.engine"
    other.write_bytes(b"plan")
    notes = []
    cuda = FakeCuda()
    TensorRTBackend(other, trt=fake_tensorrt(cuda), cuda=cuda, log=notes.append)
    assert "lists no entry for trtexec.engine" in notes[0] and "--register trtexec.engine" in notes[0]
    stale = tmp_path / "stale.engine"
    stale.write_bytes(b"from another version")
    with pytest.raises(UserError, match=r"cannot load .*stale.engine.*`uda-adapt build "):
        TensorRTBackend(stale, trt=fake_tensorrt(cuda), cuda=cuda)


def test_without_tensorrt_installed_the_error_says_what_to_install(engine_file, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(UserError, match="TensorRT is not installed.*--backend ort"):
        open_backend(engine_file)


def test_compatibility_check_names_version_and_gpu():
    from uda_adapt.common.engines import Device, check_engine_compatible

    spec = EngineSpec(file="m.engine", precision="fp16", trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                      device_model=AGX_MODEL)
    check_engine_compatible(spec, Device("10.3.0.30", "8.7", AGX_MODEL))
    with pytest.raises(UserError, match=r"TensorRT 10.3.0 \(this system has 10.7.0\)"):
        check_engine_compatible(spec, Device("10.7.0", "8.7", AGX_MODEL))
    with pytest.raises(UserError, match=r"compute capability 8.7 \(this GPU is 8.6\)"):
        check_engine_compatible(spec, Device("10.3.0", "8.6", AGX_MODEL))


def test_input_below_the_profile_minimum_is_a_user_error(engine_file):
    cuda = FakeCuda()
    backend = TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)
    with pytest.raises(UserError, match=r"1x3x8x16 is below the engine's minimum 1x3x16x32; use a larger --size"):
        backend.infer(np.zeros((1, 3, 8, 16), np.float32))


def test_a_shape_tensorrt_rejects_is_a_user_error(engine_file):
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    backend = TensorRTBackend(engine_file, trt=trt, cuda=cuda)
    trt.engines[-1].context.set_input_shape = lambda name, shape: False
    with pytest.raises(UserError, match="TensorRT rejected input shape 1x3x16x32"):
        backend.infer(np.zeros((1, 3, 16, 32), np.float32))


def test_inference_selects_the_gpu_on_its_own_thread(engine_file):
    """--device N: the CUDA device is per thread, and the pipeline infers on a worker thread."""
    cuda = FakeCuda(device=1)
    backend = TensorRTBackend(engine_file, trt=fake_tensorrt(cuda), cuda=cuda)
    worker = threading.Thread(target=backend.infer, args=(np.zeros((1, 3, 32, 64), np.float32),))
    worker.start()
    worker.join(timeout=10)
    assert worker.ident in cuda.threads


def test_no_gpu_is_a_user_error():
    import shutil

    from uda_adapt.common.cuda import open_cuda

    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU may be present")
    with pytest.raises(UserError, match="--backend ort"):
        open_cuda(0)


def test_cuda_python_with_a_driver_mismatch_falls_back_to_torch(monkeypatch):
    import uda_adapt.common.cuda
    from uda_adapt import common

    class Err(int):
        name = "cudaErrorInsufficientDriver"

    fake_cudart = types.SimpleNamespace(cudaSetDevice=lambda device: (Err(35),))
    monkeypatch.setattr(common.cuda, "_import_cudart", lambda: fake_cudart)
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch)
    monkeypatch.setattr(common.cuda, "TorchCudaLayer", lambda torch, device: ("torch", torch, device))
    assert common.cuda.open_cuda(1) == ("torch", fake_torch, 1)

    fake_torch.cuda.is_available = lambda: False
    with pytest.raises(UserError, match=r"cudaErrorInsufficientDriver.*torch has no CUDA.*cuda-python==12\.6"):
        common.cuda.open_cuda(0)


class OnnxContext(FakeContext):
    """An execution context that really computes: ONNX Runtime on whatever the backend put in device memory."""

    def __init__(self, cuda, onnx_path):
        super().__init__(cuda)
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def execute_async_v3(self, stream):
        shape = self.shapes["image"]
        n = int(np.prod(shape))
        x = self.cuda.memory[self.addresses["image"]][: n * 4].view(np.float32).reshape(shape)
        (mask,) = self.session.run(["mask"], {"image": x.copy()})
        self.cuda.memory[self.addresses["mask"]][: mask.nbytes] = mask.astype(np.int32).view(np.uint8).ravel()
        return True


@pytest.fixture(scope="module")
def varied_onnx(tmp_path_factory):
    from tests.runtime.varied_model import export_varied_model

    return str(export_varied_model(tmp_path_factory.mktemp("varied"))[0])


def test_the_engine_backend_segments_what_it_is_given(varied_onnx, tmp_path):
    """Real frames through the backend's buffers give ONNX Runtime's own masks: a backend that ignored its
    input, or copied the wrong bytes, would not."""
    import onnxruntime as ort

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_manifest(tmp_path / "model.json", read_manifest(manifest_for(varied_onnx)))
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    static = ((1, 3, *MODEL_SIZE),) * 3
    trt.Runtime.deserialize_cuda_engine = lambda self, data: _onnx_engine(cuda, varied_onnx, static)
    backend = TensorRTBackend(engine, trt=trt, cuda=cuda)
    direct = ort.InferenceSession(varied_onnx, providers=["CPUExecutionProvider"])
    spec = backend.manifest.input
    masks = []
    for index in (0, 12, 24):
        x = prepare_input(street_frame(index), spec)
        (want,) = direct.run(["mask"], {"image": x})
        got = backend.infer(x)
        assert np.array_equal(got, want)
        masks.append(got)
    assert not np.array_equal(masks[0], masks[2])      # the frames differ, and so do their masks
    assert len(np.unique(masks[0])) > 1


def _onnx_engine(cuda, onnx_path, profile):
    engine = FakeEngine(cuda)
    engine.context = OnnxContext(cuda, onnx_path)
    engine.get_tensor_shape = lambda name: profile[0] if name == "image" else (1, *profile[0][2:])
    engine.get_tensor_profile_shape = lambda name, index: profile
    return engine
