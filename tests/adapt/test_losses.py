import math

import torch
import torch.nn.functional as F

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.losses import (
    correlation_fit_loss,
    correlation_transfer_loss,
    entropy_on_ignored,
    kl_to_uniform_on_labelled,
    segmentation_ce,
)
from uda_adapt.adapt.models.correlation import CorrelationModule

C = 4


def logits_and_labels(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 4, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, C, (2, 8, 10), generator=g)
    labels[:, :2] = IGNORE_INDEX
    return logits, labels


def test_segmentation_ce_upsamples_logits_and_skips_ignored_pixels():
    logits, labels = logits_and_labels()
    up = F.interpolate(logits, size=(8, 10), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(segmentation_ce(logits, labels), expected)


def test_losses_are_zero_not_nan_on_empty_masks():
    logits, _ = logits_and_labels()
    all_ignored = torch.full((2, 8, 10), IGNORE_INDEX)
    none_ignored = torch.zeros(2, 8, 10, dtype=torch.long)
    module = CorrelationModule(C, dim=8)
    for loss in (
        segmentation_ce(logits, all_ignored),
        correlation_fit_loss(module, logits, all_ignored),
        entropy_on_ignored(logits, none_ignored),
        kl_to_uniform_on_labelled(logits, all_ignored),
    ):
        assert loss.shape == () and loss.item() == 0.0
        loss.backward()  # still part of the graph
    assert torch.isfinite(logits.grad).all()


def test_correlation_transfer_is_kl_of_attended_to_prediction():
    logits, _ = logits_and_labels()
    module = CorrelationModule(C, dim=8)
    q = module(torch.softmax(logits, dim=1)).detach()
    log_p = torch.log_softmax(logits, dim=1)
    direct = (q * (torch.log(q) - log_p)).sum(dim=1).mean()
    torch.testing.assert_close(correlation_transfer_loss(module, logits), direct)
    # Passing probabilities instead of log-probabilities (ProDA's bug) gives another value.
    wrong = F.kl_div(torch.softmax(logits, 1), q, reduction="none").sum(1).mean()
    assert not torch.allclose(wrong, direct)


def test_correlation_transfer_is_zero_when_the_module_returns_the_prediction():
    logits, _ = logits_and_labels()
    module = CorrelationModule(C, value="learned")  # gamma = 0: identity
    assert correlation_transfer_loss(module, logits).abs().item() < 1e-6


def test_correlation_fit_is_nll_of_upsampled_attended_probabilities():
    logits, labels = logits_and_labels()
    module = CorrelationModule(C, dim=8)
    attended = module(torch.softmax(logits, dim=1))
    up = F.interpolate(attended, size=(8, 10), mode="bilinear", align_corners=False)
    expected = F.nll_loss(torch.log(up), labels, ignore_index=IGNORE_INDEX)
    everywhere = torch.ones(labels.shape, dtype=torch.bool)   # attend over every cell, ignored ones included
    torch.testing.assert_close(correlation_fit_loss(module, logits, labels, valid=everywhere), expected)


def test_entropy_counts_only_pixels_without_a_pseudo_label():
    logits = torch.zeros(1, C, 2, 2)
    logits[0, 0, 0, 0] = 50.0  # confident pixel
    labels = torch.full((1, 2, 2), IGNORE_INDEX)
    labels[0, 1, :] = 0  # labelled pixels carry uniform predictions: excluded
    expected = (0.0 + math.log(C)) / 2  # pixels (0,0) ~0 entropy and (0,1) uniform
    torch.testing.assert_close(entropy_on_ignored(logits, labels), torch.tensor(expected), atol=1e-5, rtol=0)


def test_kl_to_uniform_is_zero_at_uniform_and_counts_labelled_pixels_only():
    logits = torch.zeros(1, C, 2, 2)
    labels = torch.full((1, 2, 2), IGNORE_INDEX)
    labels[0, 0, 0] = 1
    assert kl_to_uniform_on_labelled(logits, labels).abs().item() < 1e-6
    logits[0, :, 0, 0] = torch.tensor([2.0, 0.0, -1.0, 0.5])
    logits[0, :, 1, 1] = torch.tensor([9.0, 0.0, 0.0, 0.0])  # ignored pixel: excluded
    p = torch.softmax(logits[0, :, 0, 0], 0)
    expected = (torch.full((C,), 1 / C) * (torch.log(torch.tensor(1 / C)) - torch.log(p))).sum()
    torch.testing.assert_close(kl_to_uniform_on_labelled(logits, labels), expected)


def test_losses_train_with_channels_last_logits():
    # Channels-last tensors reach NLL's CPU backward, which rejects them, unless made contiguous.
    logits, labels = logits_and_labels()
    module = CorrelationModule(C, dim=8)
    for loss_fn in (segmentation_ce, entropy_on_ignored, kl_to_uniform_on_labelled):
        channels_last = logits.detach().to(memory_format=torch.channels_last).requires_grad_()
        loss_fn(channels_last, labels).backward()
        assert torch.isfinite(channels_last.grad).all()
    for loss in (correlation_fit_loss(module, logits, labels), correlation_transfer_loss(module, logits)):
        loss.backward()


def test_correlation_transfer_with_a_teacher_targets_the_teacher_prediction():
    import torch

    from uda_adapt.adapt.losses import correlation_transfer_loss
    from uda_adapt.adapt.models.correlation import CorrelationModule

    torch.manual_seed(0)
    module = CorrelationModule(5, dim=8).eval().requires_grad_(False)
    logits = torch.randn(2, 5, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 5, 4, 6)
    loss = correlation_transfer_loss(module, logits, teacher)
    with torch.no_grad():
        q = module(torch.softmax(teacher, dim=1))
    direct = (q * (torch.log(q.clamp_min(1e-12)) - torch.log_softmax(logits, dim=1))).sum(1).mean()
    assert torch.allclose(loss, direct, atol=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
