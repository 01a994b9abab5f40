"""The optimiser settings every stage shares (part of `adapt.train.config.TrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9                  # sgd only
    poly_power: float = 0.0                # 0 = constant lr (IAST), 0.9 = DeepLab poly decay (DAFormer: 1.0)
    warmup: int = 0                        # linear warm-up iterations from 1e-6 x lr (DAFormer: 1500)
