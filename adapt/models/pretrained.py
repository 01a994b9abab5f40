"""Initial weights for a freshly built model: none, torchvision's ImageNet backbone, or a local file.

A local file may hold either
- a full state_dict of the same model (keys "backbone.*", "classifier.*"), possibly wrapped in
  {"state_dict": ...} (a uda-adapt checkpoint) or {"model": ...}, possibly with DDP's "module."; or
- a torchvision classification checkpoint of the backbone (e.g. resnet101-63fe2227.pth or
  mobilenet_v3_large-8738ca79.pth, exactly what "imagenet" downloads): its classifier is dropped,
  the rest lands in the model's backbone and the segmentation head keeps its random init.
Anything else is a UserError that names the file and counts the keys that did not match.
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import nn

from uda_adapt.common.errors import UserError

# Seconds before a stalled download counts as failed. Without it, a machine whose firewall drops
# packets (rather than refusing them) waits for the OS TCP timeout, minutes, before failing.
DOWNLOAD_TIMEOUT_S = 10.0

# BatchNorm's step counter is not a weight; old checkpoints lack it and BatchNorm fills it in.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def load_pretrained(model: nn.Module, pretrained: str | None, model_name: str) -> None:
    """Initialise `model` in place from `pretrained`: None, "imagenet" or a path to a weight file."""
    if not pretrained:
        return
    if pretrained == "imagenet":
        state = download_imagenet_state_dict(model, model_name)
        _load_backbone(model, state, model_name, f"torchvision's ImageNet weights for {model_name}")
        return
    path = Path(pretrained).expanduser()
    state = read_state_dict(path)
    _load_full_or_backbone(model, state, model_name, str(path))


def download_imagenet_state_dict(model: nn.Module, model_name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet backbone weights for `model` (from torch's hub cache when present)."""
    weights = getattr(model, "imagenet_weights", None)
    if weights is None:
        raise UserError(
            f"model {model_name!r} has no ImageNet weights; leave model.pretrained unset or pass a local weight file"
        )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError, timeouts, truncated files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not download ImageNet weights for {model_name} ({reason[:160]}); download "
            f"{weights.url} on a connected machine and pass --set model.pretrained=PATH"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file, unwrapped from {"state_dict"|"model": ...} and DDP's "module."."""
    if not path.is_file():
        raise UserError(f"pretrained weights {path} do not exist; fix model.pretrained or leave it unset")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read pretrained weights {path}: {reason[:200]}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"pretrained weights {path} hold no state_dict (a dict of tensors)")
    return {key.removeprefix("module."): value for key, value in payload.items()}


def _load_full_or_backbone(model: nn.Module, state: dict[str, torch.Tensor], model_name: str, source: str) -> None:
    expected = _required_keys(model.state_dict())
    missing, unexpected = expected - state.keys(), _required_keys(state) - expected
    if not missing and not unexpected:
        _check_shapes_and_load(model, state, model_name, source)
        return
    mapper = getattr(model, "backbone_key", None)
    if mapper is not None:
        mapped = _map_backbone(state, mapper)
        backbone = {key for key in expected if key.startswith("backbone.")}
        bb_missing, bb_unexpected = backbone - mapped.keys(), _required_keys(mapped) - backbone
        if not bb_missing and not bb_unexpected:
            _check_shapes_and_load(model, mapped, model_name, source)
            return
        # Report against whichever reading of the file came closer.
        if len(bb_missing) + len(bb_unexpected) < len(missing) + len(unexpected):
            missing, unexpected = bb_missing, bb_unexpected
    raise UserError(
        f"weights in {source} do not match model {model_name!r} or its backbone: "
        f"{_describe(missing, 'missing')}, {_describe(unexpected, 'unexpected')}"
    )


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], model_name: str, source: str) -> None:
    mapped = _map_backbone(state, model.backbone_key)
    backbone = {key for key in _required_keys(model.state_dict()) if key.startswith("backbone.")}
    missing, unexpected = backbone - mapped.keys(), _required_keys(mapped) - backbone
    if missing or unexpected:
        raise UserError(
            f"{source} do not match the backbone of {model_name!r}: "
            f"{_describe(missing, 'missing')}, {_describe(unexpected, 'unexpected')}"
        )
    _check_shapes_and_load(model, mapped, model_name, source)


def _map_backbone(state: dict[str, torch.Tensor], mapper) -> dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        target = mapper(key)
        if target is not None:
            mapped[target] = value
    return mapped


def _check_shapes_and_load(model: nn.Module, state: dict[str, torch.Tensor], model_name: str, source: str) -> None:
    own = model.state_dict()
    wrong = [key for key, value in state.items() if key in own and own[key].shape != value.shape]
    if wrong:
        key = wrong[0]
        hint = " (trained for another number of classes?)" if key.startswith("classifier.") else ""
        raise UserError(
            f"weights in {source} do not fit model {model_name!r}: {key} has shape "
            f"{tuple(state[key].shape)} in the file but {tuple(own[key].shape)} in the model"
            f"{hint}, {len(wrong)} mismatched tensor(s) in all"
        )
    # Keys were checked above; strict=False only tolerates the optional BatchNorm counters
    # and, for a backbone file, the head that keeps its random init.
    model.load_state_dict(state, strict=False)


def _required_keys(state: dict[str, torch.Tensor]) -> set[str]:
    return {key for key in state if not key.endswith(_OPTIONAL_SUFFIXES)}


def _describe(keys: set[str], kind: str) -> str:
    if not keys:
        return f"0 {kind} keys"
    examples = ", ".join(sorted(keys)[:3])
    return f"{len(keys)} {kind} keys (e.g. {examples})"
