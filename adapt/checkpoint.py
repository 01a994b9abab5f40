"""Checkpoints: the network's weights plus everything needed to use them without the config.

A checkpoint carries the model name, class names, palette, input normalisation, the stage
that produced it and the resolved config, so `eval`, `export` and `run` need nothing else.
Writes are atomic: a killed run keeps the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.errors import UserError
from uda_adapt.common.preprocess import IMAGENET_MEAN, IMAGENET_STD
from uda_adapt.common.file_kinds import require_kind

FORMAT_VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    model_name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    stage: str = "source"
    step: int = 0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Anything a stage needs to resume or to hand to the next stage (optimizer state,
    # correlation-module weights, metrics); not needed to run the network.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    payload = dataclasses.asdict(ckpt)
    payload["format_version"] = FORMAT_VERSION
    payload["kind"] = "uda-adapt-checkpoint"
    # Serialised in memory first: torch's own file writer turns a full disk into a RuntimeError
    # without errno, and atomic_write_bytes reports it as one (the previous checkpoint stays).
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a uda-adapt checkpoint; anything else is a one-line UserError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint {file} does not exist")
    # Name an ONNX model, an engine or a cut-short file as such, before torch.load's own message.
    require_kind(file, "checkpoint", accept=("pickle",))
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason.startswith("Weights only load failed"):
            reason = "it holds Python objects, not only tensors and plain values as uda-adapt checkpoints do"
        raise UserError(f"cannot read checkpoint {file}: {reason[:200]}") from exc
    if not isinstance(payload, dict) or payload.get("kind") != "uda-adapt-checkpoint":
        raise UserError(f"{file} is not a uda-adapt checkpoint (made by `uda-adapt train`)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"checkpoint {file} has format version {payload.get('format_version')}, this uda-adapt reads {FORMAT_VERSION}")
    fields = {f.name for f in dataclasses.fields(Checkpoint)}
    values = {k: v for k, v in payload.items() if k in fields}
    values["classes"] = tuple(values["classes"])
    values["palette"] = tuple(tuple(int(c) for c in rgb) for rgb in values["palette"])
    values["mean"] = tuple(values["mean"])
    values["std"] = tuple(values["std"])
    return Checkpoint(**values)


# The networks a finished mean-teacher checkpoint holds besides the exported one (in `extra`):
# both ends of the EMA pair, and the student with the BatchNorm statistics training left it
# (before the end-of-stage re-estimation on target images), so each choice can be scored.
STORED_NETWORKS = ("exported", "student", "teacher", "student-training-bn")


def select_network(ckpt: Checkpoint, network: str) -> Checkpoint:
    """`ckpt` with the weights of one stored network (`STORED_NETWORKS`); "exported" is `ckpt` itself."""
    if network not in STORED_NETWORKS:
        raise UserError(f"unknown network {network!r}; choose one of {', '.join(STORED_NETWORKS)}")
    if network == "exported":
        return ckpt
    student = ckpt.extra.get("student")
    if network == "teacher":
        weights = ckpt.extra.get("teacher")
    elif network == "student":
        weights = student
    else:
        statistics = ckpt.extra.get("student_training_bn")
        weights = None if student is None or statistics is None else {**student, **statistics}
    if weights is None:
        raise UserError(f"the checkpoint ({ckpt.stage} stage, step {ckpt.step}) holds no {network} network; "
                        "only a finished mean-teacher stage stores one (its last.pt)")
    return dataclasses.replace(ckpt, state_dict=weights)


def build_model(ckpt: Checkpoint) -> nn.Module:
    """The checkpoint's network with its weights, in eval mode on the CPU."""
    from uda_adapt.adapt.models import build_segmenter

    model = build_segmenter(ckpt.model_name, ckpt.num_classes, pretrained=None)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint weights do not fit model {ckpt.model_name!r} ({first}); the checkpoint comes from another architecture or class count") from exc
    return model.eval()
