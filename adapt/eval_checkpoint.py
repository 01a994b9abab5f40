"""`uda-adapt eval`: score any checkpoint on a labelled split."""

from __future__ import annotations

import json
from pathlib import Path

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.adapt.checkpoint import build_model, load_checkpoint, select_network
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.evaluation import EvalResult, evaluate
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
) -> tuple[EvalResult, Path]:
    """Evaluate at full label resolution; writes the result JSON and returns it with its path.

    `network` picks another network a mean-teacher checkpoint stores (`STORED_NETWORKS`), e.g. its
    EMA teacher, so that the exported one can be chosen on a tune split."""
    ckpt = select_network(load_checkpoint(checkpoint), network)
    dataset = open_dataset(kind, data_root, split, require_labels=True,
                           transform=EvalTransform(size=size, mean=ckpt.mean, std=ckpt.std))
    if tuple(dataset.classes) != tuple(ckpt.classes):
        raise UserError(f"checkpoint {checkpoint} predicts {len(ckpt.classes)} classes but {data_root} has {len(dataset.classes)}; evaluate on data with the same classes")
    torch_device = resolve_device(device)
    model = build_model(ckpt).to(torch_device)
    result = evaluate(model, dataset, device=torch_device, progress=True)
    which = "" if network == "exported" else f"_{network}"
    out = Path(json_path) if json_path else Path(checkpoint).with_name(f"{Path(checkpoint).stem}{which}_eval_{split}.json")
    payload = {"checkpoint": str(checkpoint), "network": network, "stage": ckpt.stage, "step": ckpt.step, "data": str(data_root),
               "split": split, **result.to_dict()}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    return result, out
