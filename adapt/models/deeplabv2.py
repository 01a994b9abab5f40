"""DeepLab-V2 with a ResNet-101 backbone: the base network of the UDA segmentation literature.

The backbone is torchvision's ResNet-101 with layers 3 and 4 dilated (rates 2 and 4) instead of
strided, so the output stride is 8. The classifier is DeepLab-V2's ASPP: four parallel 3x3
convolutions with dilation 6, 12, 18 and 24 from the 2048 backbone channels straight to the
class scores, summed. Differences from the original Caffe model: torchvision's ResNet puts the
stride in the 3x3 convolution (ResNet v1.5) and its max-pool uses floor mode, so the output is
ceil(H/8) x ceil(W/8) rather than Caffe's ceil(H/8)+1 for even H.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import ResNet101_Weights, resnet101

ASPP_RATES = (6, 12, 18, 24)


class ASPPClassifier(nn.Module):
    """DeepLab-V2 head: sum of parallel dilated 3x3 convs, features (B, Cin, h, w) -> logits (B, C, h, w)."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for branch in self.branches:
            # DeepLab-V2 initialises its classifier with N(0, 0.01): large initial logits from
            # four summed 2048-channel convolutions would saturate the softmax.
            nn.init.normal_(branch.weight, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.branches[0](features)
        for branch in self.branches[1:]:
            logits = logits + branch(features)
        return logits


class DeepLabV2ResNet101(nn.Module):
    """Input (B, 3, H, W) normalised RGB -> logits (B, C, ceil(H/8), ceil(W/8))."""

    output_stride = 8
    imagenet_weights = ResNet101_Weights.IMAGENET1K_V1

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        resnet = resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        # Same parameter names as torchvision's ResNet under "backbone.", so ImageNet
        # checkpoints load by prefixing their keys (see `backbone_key`).
        self.backbone = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in names))
        self.classifier = ASPPClassifier(resnet.fc.in_features, num_classes)

    @staticmethod
    def backbone_key(key: str) -> str | None:
        """Where a key of a torchvision ResNet-101 checkpoint goes in this model; None: unused."""
        if key.startswith("fc."):
            return None
        return "backbone." + key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))
