"""Tiny models, clips and fake sources/backends built on the fly for the runtime tests."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec, manifest_for, write_manifest

# torch is imported only where a test exports with it: the GStreamer tests run in a venv without it.

MODEL_SIZE = (64, 128)        # (H, W) of the test network
CLIP_SIZE = (72, 128)         # (H, W) of the test clip: not the model size, so resizing is exercised
CLIP_FRAMES = 30


def export_small_onnx(directory, size=MODEL_SIZE) -> str:
    """The exported contract from a real (tiny) segmenter: normalised RGB (B, 3, H, W) -> int32 mask (B, H, W)."""
    import torch

    from uda_adapt.adapt.models import build_segmenter, upsample_logits

    class MaskModel(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            logits = upsample_logits(self.net(image), tuple(image.shape[-2:]))
            return logits.argmax(1).to(torch.int32)

    torch.manual_seed(0)
    model = MaskModel(build_segmenter("small", len(CITYSCAPES_CLASSES)).eval())
    path = directory / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(1, 3, *size), str(path), input_names=["image"], output_names=["mask"], dynamo=False, opset_version=17)
    _write_test_manifest(path, size)
    return str(path)


def export_channel_argmax_onnx(directory, size=MODEL_SIZE) -> str:
    """A torch-free model with the same contract: the mask is the strongest colour channel (0 R, 1 G, 2 B).

    Built with onnx.helper, so the tests of a `[jetson]` install (no torch) still run a real ONNX.
    """
    import onnx
    from onnx import TensorProto, helper

    h, w = size
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["image"], ["index"], axis=1, keepdims=0),
         helper.make_node("Cast", ["index"], ["mask"], to=TensorProto.INT32)],
        "channel_argmax",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("mask", TensorProto.INT32, [1, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8          # readable by every onnxruntime the extras allow
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    _write_test_manifest(path, size)
    return str(path)


def _write_test_manifest(path, size) -> None:
    manifest = Manifest(
        classes=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE,
        input=InputSpec(size=size),
        output=OutputSpec(),
        model_name="small",
    )
    write_manifest(manifest_for(path), manifest)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_small_onnx(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> str:
    return export_channel_argmax_onnx(tmp_path_factory.mktemp("tiny_model"))


def street_frame(index: int, size=CLIP_SIZE) -> np.ndarray:
    """A BGR frame with a sky band, a road and a box that moves with `index`."""
    h, w = size
    frame = np.zeros((h, w, 3), np.uint8)
    frame[: h // 3] = (180, 130, 70)
    frame[h // 3 :] = (90, 90, 90)
    frame[2 * h // 3 :] = (128, 64, 128)
    x = (index * 3) % (w - 20)
    frame[h // 3 : h // 3 + 16, x : x + 20] = (0, 0, 200)
    return frame


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    h, w = CLIP_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for i in range(CLIP_FRAMES):
        writer.write(street_frame(i))
    writer.release()
    return str(path)


def read_all_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


class FakeSource:
    """An in-memory source. `frames` items: an array, None (a corrupt frame), or an exception to raise.

    `live` sources return "lost" once the list is exhausted `drop_after` times over, then come back.
    `interval` paces reads like a camera. `fresh`: every read returns a new array, as a decoder
    does, so a pipeline that kept frames would show in memory.
    """

    def __init__(self, frames, *, live=False, interval=0.0, fail_opens=0, name="fake://", fresh=False):
        self.name, self.live, self.fps, self.fresh = name, live, 30.0, fresh
        self._frames, self._interval, self._fail_opens = list(frames), interval, fail_opens
        self.opens = 0
        self.closed = 0
        self._next = 0

    def open(self):
        self.opens += 1
        if self.opens > 1 and self._fail_opens > 0:
            self._fail_opens -= 1
            from uda_adapt.common.errors import UserError

            raise UserError(f"{self.name} still down")
        self._next = 0 if not self.live else self._next

    def read(self):
        if self._interval:
            time.sleep(self._interval)
        if self._next >= len(self._frames):
            return False, None
        item = self._frames[self._next]
        self._next += 1
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, str) and item == "lost":
            return False, None
        if self.fresh and isinstance(item, np.ndarray):
            item = item.copy()
        return True, item

    def skip(self):
        self._next += 1
        return self._next <= len(self._frames)

    def close(self):
        self.closed += 1


class FakeBackend:
    """Returns a constant mask; optional sleep to play a slow network."""

    def __init__(self, size=MODEL_SIZE, delay=0.0, label=0, classes=CITYSCAPES_CLASSES):
        self.manifest = Manifest(classes=classes, palette=CITYSCAPES_PALETTE[: len(classes)], input=InputSpec(size=size), output=OutputSpec())
        self.input_size = size
        self.providers = ["fake"]
        self.delay, self.label = delay, label
        self.calls = 0
        self.threads = set()

    def infer(self, batch):
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return np.full((batch.shape[0], *batch.shape[2:]), self.label, np.int32)

    def describe(self):
        return "fake backend"

    def close(self):
        pass
