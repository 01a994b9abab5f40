"""`uda-adapt eval`: score any checkpoint on a labelled split.

Writes the scores with the confusion matrix as JSON, the matrix as a PNG beside it, and with
`predictions_dir` each image's predicted ids as a PNG named after the image (label resolution).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from uda_adapt.common.atomic import atomic_write_text, ensure_writable_dir
from uda_adapt.common.mask_png import check_mask_format, write_mask_png
from uda_adapt.adapt.confusion_plot import write_confusion_png
from uda_adapt.adapt.checkpoint import build_model, load_checkpoint, select_network
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.evaluation import EvalResult, PredictionHook, evaluate
from uda_adapt.adapt.train.environment import resolve_device


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    kind: str = "folder",
    split: str = "val",
    size: tuple[int, int] | None = None,
    device: str = "auto",
    json_path: str | Path | None = None,
    network: str = "exported",
    predictions_dir: str | Path | None = None,
    mask_format: str = "id",
    confusion_png: str | Path | None = None,
) -> tuple[EvalResult, Path]:
    """Evaluate at full label resolution; writes the result JSON and returns it with its path.

    `network` picks another network a mean-teacher checkpoint stores (`STORED_NETWORKS`), e.g. its
    EMA teacher, so that the exported one can be chosen on a tune split."""
    check_mask_format(mask_format)
    if predictions_dir is not None:
        ensure_writable_dir(predictions_dir)       # refused before minutes of evaluation, not after
    ckpt = select_network(load_checkpoint(checkpoint), network)
    dataset = open_dataset(kind, data_root, split, require_labels=True,
                           transform=EvalTransform(size=size, mean=ckpt.mean, std=ckpt.std))
    if tuple(dataset.classes) != tuple(ckpt.classes):
        raise UserError(f"checkpoint {checkpoint} predicts {len(ckpt.classes)} classes but {data_root} has {len(dataset.classes)}; evaluate on data with the same classes")
    torch_device = resolve_device(device)
    model = build_model(ckpt).to(torch_device)
    saver = None if predictions_dir is None else _prediction_saver(Path(predictions_dir), dataset.stems,
                                                                      ckpt.palette if mask_format == "palette" else None)
    result = evaluate(model, dataset, device=torch_device, progress=True, on_prediction=saver)
    which = "" if network == "exported" else f"_{network}"
    out = Path(json_path) if json_path else Path(checkpoint).with_name(f"{Path(checkpoint).stem}{which}_eval_{split}.json")
    write_confusion_png(confusion_png or default_confusion_png(out), result.confusion_matrix, dataset.classes)
    payload = {"checkpoint": str(checkpoint), "network": network, "stage": ckpt.stage, "step": ckpt.step, "data": str(data_root),
               "split": split, **result.to_dict()}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    return result, out


def _prediction_saver(folder: Path, stems: list[str], palette) -> PredictionHook:
    """Each prediction as `folder/<image stem>.png` (ids, or ids with the class colours as the palette)."""
    def save(index: int, ids: torch.Tensor) -> None:
        write_mask_png(folder / f"{stems[index]}.png", ids.to(torch.uint8).cpu().numpy(), palette)
    return save


def default_confusion_png(json_path: str | Path) -> Path:
    """`X_eval_val.json` -> `X_eval_val_confusion.png`."""
    path = Path(json_path)
    return path.with_name(f"{path.stem}_confusion.png")
