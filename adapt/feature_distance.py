"""DAFormer's ImageNet feature distance (FD): keep the source features of thing classes near ImageNet's.

Hoyer et al., CVPR 2022, section 3.3 (lhoyer/DAFormer mmseg/models/uda/dacs.py:153-189): while the
network adapts, the deepest backbone features of each *source* image are pulled towards those of
a frozen copy of the ImageNet-initialised backbone,
    FD = weight * mean over kept cells of || f(x_s) - f_ImageNet(x_s) ||_2
where a cell is kept if its source label, downscaled to the feature grid, is a thing class. ImageNet
features of cars, people and bicycles are more general than what a synthetic source teaches; the
term keeps the network from forgetting them. It adds to the mean teacher's source loss.

The frozen copy is built from the weights the network was initialised with (`model.pretrained`), never
from the source-trained network: DAFormer builds `imnet_model` from the model's config (dacs.py:83)
and `init_weights()` loads the pretrained backbone into it as into the student (tools/train.py:145).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.train.config import ImnetFeatureDistanceConfig
from uda_adapt.common.errors import UserError

KEY = "self_train.mean_teacher.imnet_feature_distance"


def refuse_without_imagenet(weight: float, pretrained: str | None, model_name: str) -> None:
    """A one-line UserError when the feature distance is on but the network starts from random weights."""
    if weight > 0 and not pretrained:
        raise UserError(f"config key '{KEY}.weight' is {weight:g}, but model {model_name!r} starts from random weights "
                        "(model.pretrained is unset) and the feature distance compares with its ImageNet initialisation; "
                        f"set model.pretrained=imagenet on a model with ImageNet weights, or {KEY}.weight=0")


def deepest(output: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The deepest backbone feature map (DAFormer's `feat[-1]`): the tensor itself, or the last of a
    torchvision backbone's ordered outputs ({"low", "high"}: "high"; {"out"}: "out")."""
    return output if torch.is_tensor(output) else list(output.values())[-1]


def backbone_of(network: nn.Module, model_name: str) -> nn.Module:
    """`network.backbone`, the part that ImageNet weights initialise; a UserError for a model without one."""
    backbone = getattr(network, "backbone", None)
    if backbone is None or getattr(network, "imagenet_weights", None) is None:
        raise UserError(f"model {model_name!r} has no ImageNet backbone for {KEY} to compare with; "
                        f"choose a model with ImageNet weights or set {KEY}.weight=0")
    return backbone


def imagenet_backbone(model_name: str, num_classes: int, pretrained: str | None, device: torch.device) -> nn.Module:
    """A frozen copy of `model_name`'s backbone with the weights `pretrained` gives it, in eval mode
    (DAFormer calls `imnet_model.eval()`, dacs.py:167): its BatchNorm keeps ImageNet's statistics.

    Built under a forked RNG: the random initialisation it overwrites leaves the run's draws as they were.
    """
    refuse_without_imagenet(1.0, pretrained, model_name)
    with torch.random.fork_rng(devices=[]):
        network = build_segmenter(model_name, num_classes, pretrained)
    backbone = backbone_of(network, model_name)
    return backbone.to(device).eval().requires_grad_(False)


def feature_stride(image_size: Sequence[int], feature_size: Sequence[int]) -> int:
    """The stride of a feature map: the power of two s with ceil(side / s) = cells on the longer ratio.

    Every strided layer of `adapt.models` maps a side n to ceil(n / 2), so a stride-s map of an
    (H, W) image is ceil(H / s) x ceil(W / s); DAFormer's `gt.shape[-1] // feat.shape[-1]` (dacs.py:173)
    is the same where s divides the crop, as its 512 px crops do.
    """
    ratio = max(side / cells for side, cells in zip(image_size, feature_size))
    return 2 ** max(0, math.ceil(math.log2(ratio) - 1e-9))


def downscale_labels(labels: torch.Tensor, size: Sequence[int], min_ratio: float, num_classes: int) -> torch.Tensor:
    """(B, H, W) labels -> (B, h, w): each cell's majority label over its stride x stride pixels, or
    IGNORE_INDEX where that label (ignore included) covers less than `min_ratio` of them or is ignore.

    DAFormer's `downscale_label_ratio` (mmseg/utils/utils.py:18-39): one-hot with ignore as an extra
    class, average-pooled, max. The image is first padded with ignore to the grid's extent, so the
    last row and column of cells cover what the network's padded convolutions see.
    """
    stride = feature_stride(labels.shape[-2:], size)
    height, width = size[0] * stride, size[1] * stride
    padded = F.pad(labels, (0, width - labels.shape[-1], 0, height - labels.shape[-2]), value=IGNORE_INDEX)
    padded = padded.masked_fill(padded == IGNORE_INDEX, num_classes).long()
    one_hot = F.one_hot(padded, num_classes + 1).permute(0, 3, 1, 2).float()   # (B, C + 1, H', W')
    ratio, label = F.avg_pool2d(one_hot, kernel_size=stride).max(dim=1)
    return label.masked_fill((label == num_classes) | (ratio < min_ratio), IGNORE_INDEX)


def masked_feature_distance(features: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean L2 distance over channels between (B, F, h, w) `features` and `reference`, over the cells
    where the (B, h, w) `mask` is True (DAFormer's `masked_feat_dist`, dacs.py:153-162).

    No cell kept gives 0 (with a zero gradient); DAFormer's mean over no cell is NaN, which the
    training loop here would stop on.
    """
    distance = torch.linalg.vector_norm(features - reference, dim=1)   # (B, h, w)
    if mask is None:
        return distance.mean()
    kept = distance[mask]
    return kept.mean() if kept.numel() else distance.sum() * 0.0


class ImagenetFeatureDistance:
    """The FD term of one stage: the frozen ImageNet backbone and a recorder of the student's features.

    The recorder is a forward hook on the student's backbone, registered once before the training
    network is wrapped (DDP, torch.compile: a hook added to a compiled module later never runs),
    and after the EMA teacher is copied from the student (a deep copy would carry the hook along).
    """

    def __init__(self, student: nn.Module, imagenet: nn.Module, model_name: str, cfg: ImnetFeatureDistanceConfig,
                 num_classes: int) -> None:
        wrong = [c for c in cfg.classes if not 0 <= c < num_classes]
        if wrong:
            raise UserError(f"config key '{KEY}.classes' holds {wrong}, not label ids of this dataset's "
                            f"{num_classes} classes; give ids in 0..{num_classes - 1}")
        backbone = backbone_of(student, model_name)
        self.imagenet, self.weight, self.scale_min_ratio, self.num_classes = imagenet, cfg.weight, cfg.scale_min_ratio, num_classes
        self.classes = torch.tensor(list(cfg.classes), dtype=torch.long)
        self._seen: list[torch.Tensor] = []

        def record(module: nn.Module, _inputs, output) -> None:
            if module is backbone:   # a deep copy of the student would share this function
                self._seen[:] = [deepest(output)]

        self._handle = backbone.register_forward_hook(record)

    def close(self) -> None:
        self._handle.remove()
        self._seen.clear()

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """weight x FD of the source batch whose forward through the student ran last.

        images: the (B, 3, H, W) source crops that forward took; labels: their (B, H, W) labels.
        """
        if not self._seen:
            raise RuntimeError("no student forward recorded before the feature distance")
        features = self._seen.pop().float()
        with torch.no_grad():
            reference = deepest(self.imagenet(images)).float()
        mask = None
        if len(self.classes):
            cells = downscale_labels(labels, features.shape[-2:], self.scale_min_ratio, self.num_classes)
            mask = torch.isin(cells, self.classes.to(cells.device))
        return self.weight * masked_feature_distance(features, reference, mask)
