"""Label-free measures of a checkpoint (or a network in training) on target images, no labels read.

The measures themselves are `common.label_free` (NumPy); this module feeds them: target images
as RGB uint8 at one size, a predictor from a torch network (softmax probabilities), and the
source label distribution the class-share measure compares with.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.models import upsample_logits
from uda_adapt.common import label_free
from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError

# Images scored per checkpoint: enough for stable means (measured on the synthetic benchmark:
# the measures move by < 0.005 between 48 and 96 images), few enough to score many checkpoints.
DEFAULT_LIMIT = 64


def load_target_images(dataset, size: tuple[int, int] | None = None, limit: int = DEFAULT_LIMIT) -> np.ndarray:
    """The first `limit` images of an opened dataset as RGB uint8 (N, H, W, 3), all at `size` (default: the first's)."""
    count = min(limit, len(dataset)) if limit else len(dataset)
    if count < 2:
        raise UserError(f"label-free measures need at least 2 target images, the split has {len(dataset)}; add images or measure another split (--split train)")
    images = []
    for index in range(count):
        image = dataset.load_image(index)
        size = size or image.shape[:2]
        if image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(image)
    return np.stack(images)


def network_predictor(model: nn.Module, mean, std, device: torch.device | str = "cpu"):
    """RGB uint8 (N, H, W, 3) -> softmax probabilities float32 (N, C, H, W) of `model` (eval mode)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def predict(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            logits = upsample_logits(model((x - mean_t) / std_t).float(), tuple(images.shape[1:3]))
            return torch.softmax(logits, dim=1).cpu().numpy()

    return predict


def source_label_share(kind: str, root: str | Path, split: str, num_classes: int, limit: int = 200) -> np.ndarray | None:
    """(C,) share of labelled pixels per class in a labelled source split; None when it has no labels."""
    dataset = open_dataset(kind, root, split, require_labels=False)
    if not dataset.has_labels:
        return None
    counts = np.zeros(num_classes, np.float64)
    for index in range(min(limit, len(dataset))):
        label = dataset.load_label(index)
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts / max(counts.sum(), 1.0)


def source_share_for(ckpt, source_root: str | Path | None) -> np.ndarray | None:
    """The source label share from `source_root` (a folder dataset), else from the checkpoint's own
    training source when it is still where the config says; None when neither is at hand."""
    if source_root:
        return source_label_share("folder", source_root, "train", ckpt.num_classes)
    source = ckpt.config.get("data", {}).get("source", {})
    if source.get("root") and Path(source["root"]).is_dir():
        return source_label_share(source.get("kind", "folder"), source["root"], source.get("train_split", "train"), ckpt.num_classes)
    return None


def measure_network(model: nn.Module, images: np.ndarray, *, mean, std, num_classes: int, device="cpu",
                    source_share: np.ndarray | None = None, video: bool = False) -> dict:
    was_training = model.training
    model.eval()
    try:
        return label_free.measure_images(network_predictor(model, mean, std, device), images,
                                         num_classes=num_classes, source_share=source_share, video=video)
    finally:
        model.train(was_training)


def measure_checkpoint(checkpoint: str | Path, data_root: str | Path, *, kind: str = "folder", split: str = "val",
                       size: tuple[int, int] | None = None, device: str = "auto", source_root: str | Path | None = None,
                       limit: int = DEFAULT_LIMIT, json_path: str | Path | None = None) -> tuple[dict, Path]:
    """`uda-adapt eval CKPT --data ROOT --no-labels`: every measure, written as JSON; returns it and its path."""
    from uda_adapt.adapt.train.environment import resolve_device

    ckpt = load_checkpoint(checkpoint)
    dataset = open_dataset(kind, data_root, split, require_labels=False)
    if tuple(dataset.classes) != tuple(ckpt.classes):
        raise UserError(f"checkpoint {checkpoint} predicts {len(ckpt.classes)} classes but {data_root} has {len(dataset.classes)}; "
                        "measure on data with the same classes")
    torch_device = resolve_device(device)
    share = source_share_for(ckpt, source_root)
    values = measure_network(build_model(ckpt).to(torch_device), load_target_images(dataset, size, limit),
                             mean=ckpt.mean, std=ckpt.std, num_classes=ckpt.num_classes, device=torch_device, source_share=share)
    out = Path(json_path) if json_path else Path(checkpoint).with_name(f"{Path(checkpoint).stem}_label_free_{split}.json")
    payload = {"checkpoint": str(checkpoint), "stage": ckpt.stage, "step": ckpt.step, "data": str(data_root), "split": split,
               "validated": label_free.VALIDATED, "measures": values}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    return values, out
