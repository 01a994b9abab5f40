"""A small segmenter that trains in minutes on two CPU cores.

A plain conv encoder at output stride 8 with a light multi-rate context head, built from
ops every exporter and TensorRT handles (Conv, BatchNorm, ReLU, Resize, Concat).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallSegmenter(nn.Module):
    """Input (B, 3, H, W) normalised RGB -> logits (B, C, ceil(H/8), ceil(W/8))."""

    output_stride = 8

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            _conv_bn_relu(3, w, stride=2),
            _conv_bn_relu(w, w),
            _conv_bn_relu(w, 2 * w, stride=2),
            _conv_bn_relu(2 * w, 2 * w),
            _conv_bn_relu(2 * w, 4 * w, stride=2),
            _conv_bn_relu(4 * w, 4 * w),
        )
        # Dilated branches widen the receptive field without losing resolution (a tiny ASPP).
        self.context = nn.ModuleList([_conv_bn_relu(4 * w, 2 * w, dilation=d) for d in (1, 2, 4)])
        self.fuse = _conv_bn_relu(6 * w, 4 * w)
        self.classifier = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        context = torch.cat([branch(features) for branch in self.context], dim=1)
        return self.classifier(self.fuse(context))
