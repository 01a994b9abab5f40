"""Edge segmenters: torchvision's MobileNetV3-Large LR-ASPP and DeepLabV3, without the final resize.

torchvision's segmentation models upsample their logits to the input size and return a dict;
these wrappers run the same backbone and head and return the logits at the model's output
stride as a plain tensor, like every uda-adapt model. The layers (and so the state_dict keys,
"backbone.*" and "classifier.*") are torchvision's own.

Both use MobileNetV3-Large with its last stage dilated (torchvision's `dilated=True`), so the
deepest features are at stride 16. Every strided layer pads (k - 1) / 2, so each halves a side
as ceil(n / 2) and a stride-s feature map is ceil(H / s) x ceil(W / s).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large


def _mobilenet_backbone_key(key: str) -> str | None:
    """Where a key of a torchvision MobileNetV3-Large checkpoint goes; None: unused (its classifier)."""
    if key.startswith("features."):
        return "backbone." + key.removeprefix("features.")
    return None


class LRASPPMobileNetV3(nn.Module):
    """Input (B, 3, H, W) normalised RGB -> logits (B, C, ceil(H/8), ceil(W/8)).

    The LR-ASPP head combines the stride-8 'low' features with the stride-16 'high' features
    (upsampled to the low ones' size), so its output is at stride 8.
    """

    output_stride = 8
    imagenet_weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
    backbone_key = staticmethod(_mobilenet_backbone_key)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        reference = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone = reference.backbone  # returns {"low": stride 8, "high": stride 16}
        self.classifier = reference.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


class DeepLabV3MobileNetV3(nn.Module):
    """Input (B, 3, H, W) normalised RGB -> logits (B, C, ceil(H/16), ceil(W/16)).

    The head's ASPP has an image-pooling branch with BatchNorm on a 1x1 map: in training mode
    it needs a batch of at least 2 (or frozen BatchNorm, see `freeze_batchnorm`).
    """

    output_stride = 16
    imagenet_weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
    backbone_key = staticmethod(_mobilenet_backbone_key)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        reference = deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
        )
        self.backbone = reference.backbone  # returns {"out": stride 16}
        self.classifier = reference.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x)["out"])
