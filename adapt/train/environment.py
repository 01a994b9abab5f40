"""Device choice, seeding, mixed precision and the network the training step calls."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from torch import nn

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.distributed import Distributed, wrap_for_training


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"device {name!r} is not a valid torch device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but no CUDA GPU is available; use --set device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python's, NumPy's and torch's global RNG states (CPU, and the current GPU's), for a checkpoint.

    One GPU's state, not every GPU's of the node: each process trains on one GPU, and a run may
    resume on a node with fewer GPUs, or under another process count."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    # Plain types and tensors only: checkpoints load with torch.load(weights_only=True).
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_device"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict | None) -> None:
    """Put back what `rng_state` saved (a checkpoint without one leaves the RNGs as they are)."""
    if not state:
        return
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"])
    elif state.get("cuda"):
        # Checkpoints before one-GPU states held every GPU's of the saving node: its first is
        # the state of the GPU that rank 0, which wrote it, trained on.
        torch.cuda.set_rng_state(state["cuda"][0])


# bf16 convolutions need Ampere (compute capability 8.0) or newer: cuDNN has none below, and
# torch.cuda.is_bf16_supported() counts emulation, so it says True on a V100 or T4.
BF16_MIN_CAPABILITY = (8, 0)


def has_native_bf16(device: torch.device) -> bool:
    return tuple(torch.cuda.get_device_capability(device)) >= BF16_MIN_CAPABILITY


def amp_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype for config `amp` on `device`; None: full fp32 (always on the CPU, where
    autocast makes convolutions slower)."""
    if device.type != "cuda" or mode == "fp32":
        return None
    bf16 = has_native_bf16(device)
    if mode == "bf16" and not bf16:
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(f"amp=bf16 was requested but {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) "
                        f"has no bf16 convolutions (they need 8.0 or newer); use --set amp=fp16 (or auto)")
    if mode == "auto":
        return torch.bfloat16 if bf16 else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """Autocast for config `amp` (auto | bf16 | fp16 | fp32) on `device`; a no-op for fp32 and on the CPU."""
    dtype = amp_dtype(device, mode)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 only: bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, mode) == torch.float16)


def restore_grad_scaler(scaler: torch.amp.GradScaler, state: dict | None) -> None:
    """Put back a saved loss scaler (fp16): its scale and growth tracker, so that a resumed run
    skips and scales the same steps as an uninterrupted one."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def training_layout(model: nn.Module, cfg, device: torch.device) -> nn.Module:
    """`model` in the memory layout the training network uses (channels-last on CUDA when
    `cfg.channels_last`); for the modules that run beside it, such as the EMA teacher."""
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def training_network(model: nn.Module, cfg, device: torch.device, dist: Distributed) -> nn.Module:
    """What the training step calls: `model` in channels-last layout (CUDA), under DDP when
    distributed, compiled when `cfg.compile`. Parameters stay `model`'s own: checkpoints save it."""
    training_layout(model, cfg, device)
    network = wrap_for_training(model, dist, device, cfg.distributed.sync_batchnorm)
    if cfg.compile:
        network = torch.compile(network)
    return network
