"""BatchNorm statistics of the target domain (AdaBN), re-estimated without any gradient.

A network trained on source normalises every layer with source means and variances; on the
target those statistics are wrong before a single weight is wrong. Re-estimating them on target
images (BN layers in train mode, running statistics reset, cumulative average over the images,
no gradients) is the cheapest adaptation there is, and the floor every method must beat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from tqdm import tqdm

from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed, all_reduce_sum, average_batchnorm_statistics


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of `model`'s BatchNorm statistics (running mean, variance, count), keyed as in its state dict."""
    names = {id(layer) for layer in batchnorm_layers(model)}
    return {f"{prefix}.{key}" if prefix else key: value.detach().cpu().clone()
            for prefix, layer in model.named_modules() if id(layer) in names
            for key, value in layer.named_buffers(recurse=False) if value is not None}


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with its BN layers normalising by each batch's own statistics, nothing else changed.

    The mean teacher labels a batch of target crops: with the batch's statistics it sees target
    statistics even though its running ones are an average over source and mixed batches. The
    running statistics are left untouched (momentum 0) and every other layer keeps its mode.
    """
    layers = batchnorm_layers(model)
    saved = [(layer.training, layer.momentum, None if layer.num_batches_tracked is None else layer.num_batches_tracked.clone())
             for layer in layers]
    for layer in layers:
        layer.train()
        layer.momentum = 0.0
    try:
        yield model
    finally:
        for layer, (training, momentum, count) in zip(layers, saved):
            layer.train(training)
            layer.momentum = momentum
            if count is not None:
                layer.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def track_batch_statistics(model: nn.Module, momentum: float = 0.1, dist: Distributed = SINGLE_PROCESS) -> Iterator[nn.Module]:
    """Run `model` as it is (eval mode: running statistics normalise), then fold the statistics of
    what it saw into its running ones: running = (1 - momentum) * running + momentum * batch.

    The mean teacher with `teacher_bn: target`: its running statistics follow the target batches
    it labels, and only those, instead of an average of the student's over source and mixed
    batches (which, on a shift of illumination such as the night benchmark, is far from the
    target). The batch statistics are recorded by pre-hooks (no extra forward) and applied after
    the forward, so each batch is labelled with the statistics of the batches before it. The
    variance is unbiased, as PyTorch's own running variance. Distributed, counts, sums and sums
    of squares are added over ranks: every rank's teacher gets the global batch's statistics, the
    same as one process, and the teachers stay identical.
    """
    layers = batchnorm_layers(model)
    seen: dict[int, torch.Tensor] = {}

    def record(index: int):
        def hook(_module, inputs):
            # Sums in float64, so that the variance from sum of squares keeps its precision.
            x = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            count = torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64, device=x.device)
            seen[index] = torch.cat([count, x.sum(dim=1), (x * x).sum(dim=1)])
        return hook

    handles = [layer.register_forward_pre_hook(record(i)) for i, layer in enumerate(layers)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
    if len(seen) != len(layers):
        return
    with torch.no_grad():
        # Counts, sums and sums of squares add over ranks: the statistics of the global batch.
        stacked = all_reduce_sum(torch.cat([seen[i] for i in range(len(layers))]), dist)
        offset = 0
        for layer in layers:
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
        for images, _ in tqdm(loader, desc=description, unit="batch", disable=None if dist.is_main else True):
            model(images.to(device))
        average_batchnorm_statistics(layers, len(mine), dist)
    finally:
        for layer, momentum in zip(layers, saved_momentum):
            layer.momentum = momentum
        model.eval()
    return len(layers)
