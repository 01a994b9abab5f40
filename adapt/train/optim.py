"""Optimizers and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from uda_adapt.adapt.train.config import OptimConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    base_lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=base_lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(trainable, lr=base_lr, weight_decay=cfg.weight_decay)


def poly_lr(base_lr: float, step: int, total: int, power: float, warmup: int = 0) -> float:
    """DeepLab's poly decay (power 0 keeps the rate constant), after a linear warm-up of `warmup` steps.

    The warm-up rises from 1e-6 x base_lr to base_lr as mmcv's linear warm-up does (DAFormer).
    """
    if step < warmup:
        return base_lr * (1e-6 + (1 - 1e-6) * step / warmup)
    if power == 0 or total <= 0:
        return base_lr
    return base_lr * (1 - min(step, total) / total) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
