"""Segmentation networks by name.

Every model maps normalised RGB (B, 3, H, W) to logits at its own output stride s,
(B, C, ceil(H/s), ceil(W/s)); callers upsample with `upsample_logits` where they need full
resolution. `output_size` gives that size without building the model.

| name                          | network                                           | stride |
|-------------------------------|---------------------------------------------------|--------|
| small                         | small CPU conv net (tests, smoke runs)            | 8      |
| small_fine                    | `small` + a DeepLabV3+-style stride-4 decoder     | 4      |
| deeplabv2_resnet101           | DeepLab-V2, dilated ResNet-101 (the paper's base) | 8      |
| lraspp_mobilenet_v3_large     | torchvision LR-ASPP, MobileNetV3-Large            | 8      |
| deeplabv3_mobilenet_v3_large  | torchvision DeepLabV3, MobileNetV3-Large          | 16     |
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.models.deeplabv2 import DeepLabV2ResNet101
from uda_adapt.adapt.models.mobilenet import DeepLabV3MobileNetV3, LRASPPMobileNetV3
from uda_adapt.adapt.models.pretrained import load_pretrained
from uda_adapt.adapt.models.small import SmallFineSegmenter, SmallSegmenter

_MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "small": SmallSegmenter,
    "small_fine": SmallFineSegmenter,
    "deeplabv2_resnet101": DeepLabV2ResNet101,
    "lraspp_mobilenet_v3_large": LRASPPMobileNetV3,
    "deeplabv3_mobilenet_v3_large": DeepLabV3MobileNetV3,
}


def _build(name: str, num_classes: int, pretrained: str | None) -> nn.Module:
    model = _MODEL_CLASSES[name](num_classes)
    load_pretrained(model, pretrained, name)
    return model


MODEL_BUILDERS: dict[str, Callable[[int, str | None], nn.Module]] = {
    name: functools.partial(_build, name) for name in _MODEL_CLASSES
}


def _model_class(name: str) -> type[nn.Module]:
    try:
        return _MODEL_CLASSES[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(MODEL_BUILDERS)}") from None


def build_segmenter(name: str, num_classes: int, pretrained: str | None = None) -> nn.Module:
    """Build model `name`; `pretrained` is None, "imagenet" or a path to a local weight file."""
    _model_class(name)
    return MODEL_BUILDERS[name](num_classes, pretrained)


def output_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of model `name`'s logits for an (H, W) input: (ceil(H/s), ceil(W/s)), s its stride.

    Exact for every model here: each strided layer pads (k - 1) / 2 and so maps n to ceil(n / 2).
    """
    stride = _model_class(name).output_stride
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, C, h, w) logits to (B, C, *size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running statistics) and stop its affine gradients.

    IAST freezes BatchNorm during adaptation: target batches are small and their statistics
    differ from the source's. Returns the number of layers frozen. Hazard: `model.train()` puts
    BatchNorm back in training mode (the parameters stay frozen), so call this after every
    `model.train()`. Build the optimizer from parameters with `requires_grad` only.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
            frozen += 1
    return frozen
