"""BatchNorm statistics of the target domain (AdaBN), re-estimated without any gradient.

A network trained on source normalises every layer with source means and variances; on the
target those statistics are wrong before a single weight is wrong. Re-estimating them on target
images (BN layers in train mode, running statistics reset, cumulative average over the images,
no gradients) is the cheapest adaptation there is, and the floor every method must beat.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from uda_adapt.common.progress import tqdm_disable
from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed, all_reduce_sum, average_batchnorm_statistics


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of `model`'s BatchNorm statistics (running mean, variance, count), keyed as in its state dict."""
    names = {id(layer) for layer in batchnorm_layers(model)}
    return {f"{prefix}.{key}" if prefix else key: value.detach().cpu().clone()
            for prefix, layer in model.named_modules() if id(layer) in names
            for key, value in layer.named_buffers(recurse=False) if value is not None}


def _valid_at(valid: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor | None:
    """(B, h, w) bool: the cells of a feature map (B, C, h, w) whose input pixels are all image.

    `valid` (B, H, W) marks image pixels of the input (False on crop padding). A cell counts only
    if no padding pixel falls in its share of the input (adaptive max pooling of the padding), so
    the statistics near the padding edge are not pulled towards the mean-colour fill.
    """
    if valid is None or features.dim() != 4:
        return None
    padding = F.adaptive_max_pool2d((~valid).float().unsqueeze(1).to(features.device), features.shape[-2:])
    return padding[:, 0] == 0


def _moments(features: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(3C,) float64: per channel count, sum and sum of squares of `features` (B, C, ...) over valid cells.

    Sums in float64, so that the variance from the sum of squares keeps its precision. With no
    valid cell at all (a tiny map under heavy padding), every cell counts.
    """
    x = features.detach().double()
    channels = x.shape[1]
    if valid is not None and bool(valid.any()):
        weights = valid.unsqueeze(1).double()
        count = torch.full((channels,), float(valid.sum()), dtype=torch.float64, device=x.device)
        return torch.cat([count, (x * weights).sum(dim=(0, 2, 3)), (x * x * weights).sum(dim=(0, 2, 3))])
    flat = x.transpose(0, 1).reshape(channels, -1)
    count = torch.full((channels,), float(flat.shape[1]), dtype=torch.float64, device=x.device)
    return torch.cat([count, flat.sum(dim=1), (flat * flat).sum(dim=1)])


def _warn_unreached(model: nn.Module, layers: list, reached: set[int]) -> None:
    """A BatchNorm layer the forward never ran keeps stale statistics: say which, not silently."""
    if len(reached) == len(layers):
        return
    names = {id(m): name for name, m in model.named_modules()}
    missing = [names.get(id(layer), "?") for i, layer in enumerate(layers) if i not in reached]
    warnings.warn(f"teacher BatchNorm statistics: {len(missing)} of {len(layers)} layers were never reached by the "
                  f"forward and keep their old statistics ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})",
                  RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def batch_statistics(model: nn.Module, valid: torch.Tensor | None = None) -> Iterator[nn.Module]:
    """Run `model` with its BN layers normalising by each batch's own statistics, nothing else changed.

    The mean teacher labels a batch of target crops with the batch's statistics (DACS, DAFormer
    and MIC keep their EMA teacher in train mode: DACS trainUDA.py:265, `ema_model.train()`).
    `valid` (B, H, W) bool leaves crop padding out of those statistics, where train-mode
    BatchNorm would count it. Each layer's statistics are measured by a pre-hook and the layer
    normalises with them in eval mode (the biased variance, as train-mode BatchNorm); its running
    statistics and mode are restored afterwards, and every other layer keeps its mode.
    """
    layers = batchnorm_layers(model)
    saved = [(layer.training, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    reached: set[int] = set()

    def measure(index: int):
        def hook(layer, inputs):
            x = inputs[0]
            count, total, squares = _moments(x, _valid_at(valid, x)).view(3, -1)
            mean = total / count
            layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
            layer.running_var.copy_((squares / count - mean * mean).clamp_min(0).to(layer.running_var.dtype))
            reached.add(index)
        return hook

    handles = [layer.register_forward_pre_hook(measure(i)) for i, layer in enumerate(layers)]
    for layer in layers:
        layer.eval()
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for layer, (training, mean, var) in zip(layers, saved):
                layer.train(training)
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
    _warn_unreached(model, layers, reached)


@contextlib.contextmanager
def track_batch_statistics(model: nn.Module, momentum: float = 0.1, dist: Distributed = SINGLE_PROCESS,
                           valid: torch.Tensor | None = None) -> Iterator[nn.Module]:
    """Run `model` as it is (eval mode: running statistics normalise), then fold the statistics of
    what it saw into its running ones: running = (1 - momentum) * running + momentum * batch.

    The mean teacher with `teacher_bn: target`: its running statistics follow the target batches
    it labels, and only those, instead of an average of the student's over source and mixed
    batches (which, on a shift of illumination such as the night benchmark, is far from the
    target). The batch statistics are recorded by pre-hooks (no extra forward) and applied after
    the forward, so each batch is labelled with the statistics of the batches before it. The
    variance is unbiased, as PyTorch's own running variance. `valid` (B, H, W) bool leaves crop
    padding out (AdaBN, which these statistics start from, sees whole images). A layer the
    forward never reaches keeps its statistics, with a warning. Distributed, counts, sums and sums
    of squares are added over ranks: every rank's teacher gets the global batch's statistics, the
    same as one process, and the teachers stay identical.
    """
    layers = batchnorm_layers(model)
    seen: dict[int, torch.Tensor] = {}

    def record(index: int):
        def hook(_module, inputs):
            seen[index] = _moments(inputs[0], _valid_at(valid, inputs[0]))
        return hook

    handles = [layer.register_forward_pre_hook(record(i)) for i, layer in enumerate(layers)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
    _warn_unreached(model, layers, set(seen))
    reached = [i for i in range(len(layers)) if i in seen]
    if not reached:
        return
    with torch.no_grad():
        # Counts, sums and sums of squares add over ranks: the statistics of the global batch.
        # Every rank runs the same network, so every rank reaches the same layers.
        stacked = all_reduce_sum(torch.cat([seen[i] for i in reached]), dist)
        offset = 0
        for i in reached:
            layer = layers[i]
            channels = layer.running_mean.numel()
            count, total, squares = stacked[offset: offset + 3 * channels].view(3, channels)
            offset += 3 * channels
            mean = total / count
            var = (squares / count - mean * mean).clamp_min(0) * count / (count - 1).clamp_min(1)
            layer.running_mean.mul_(1 - momentum).add_(mean.to(layer.running_mean.dtype), alpha=momentum)
            layer.running_var.mul_(1 - momentum).add_(var.to(layer.running_var.dtype), alpha=momentum)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, dataset, device: torch.device, batch_size: int = 8,
                         description: str = "target BN statistics", dist: Distributed = SINGLE_PROCESS) -> int:
    """Replace every BN layer's running mean/var by its cumulative average over `dataset`.

    `dataset` yields (normalised image (3, H, W), anything); images of one batch must share a
    size. Returns the number of BN layers updated (0: nothing to do, the model is left as is).
    The model comes back in eval mode; weights and the rest of its state are untouched.
    Distributed, rank r takes batches r, r + N, ... and the per-rank averages are then averaged,
    weighted by batch count: the same statistics as one process over every batch.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved_momentum = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative moving average, i.e. the mean over all batches
        layer.train()
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    mine = batches[dist.rank::dist.world_size]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=mine, num_workers=0)
    try:
        for images, _ in tqdm(loader, desc=description, unit="batch", disable=tqdm_disable(dist.is_main)):
            model(images.to(device))
        average_batchnorm_statistics(layers, len(mine), dist)
    finally:
        for layer, momentum in zip(layers, saved_momentum):
            layer.momentum = momentum
        model.eval()
    return len(layers)
