import math

import pytest
import torch

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.losses import correlation_fit_loss, correlation_transfer_loss
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.models.correlation import CorrelationModule, attention, naive_attention

C = 6


def random_probs(b=2, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, C, h, w, generator=g), dim=1)


@pytest.mark.parametrize("spatial", ["none", "conv3x3", "posenc"])
@pytest.mark.parametrize("value", ["prediction", "learned"])
def test_output_is_a_probability_map(value, spatial):
    torch.manual_seed(0)
    module = CorrelationModule(C, dim=16, value=value, spatial=spatial)
    if module.gamma is not None:
        module.gamma.data.fill_(0.7)  # away from its identity init
    out = module(random_probs())
    assert out.shape == (2, C, 5, 7)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 5, 7))
    torch.testing.assert_close(module.log_probs(random_probs()).exp(), out, atol=1e-6, rtol=1e-5)


def test_identical_pixels_are_left_unchanged():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(1, C, 1, 1), dim=1).expand(2, C, 4, 6).contiguous()
    for value in ("prediction", "learned"):
        module = CorrelationModule(C, value=value)
        torch.testing.assert_close(module(p), p)


def test_learned_value_starts_as_the_identity():
    p = random_probs()
    torch.testing.assert_close(CorrelationModule(C, value="learned")(p), p, atol=1e-6, rtol=1e-5)


def test_sdpa_path_matches_naive_attention():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 35, 64, generator=g), torch.randn(2, 35, 64, generator=g)
    v = torch.randn(2, 35, C, generator=g)
    scale = 1 / math.sqrt(64)
    torch.testing.assert_close(attention(q, k, v, scale), naive_attention(q, k, v, scale), atol=1e-5, rtol=1e-5)


def test_module_equals_a_naive_reference():
    torch.manual_seed(0)
    module = CorrelationModule(C, dim=8, temperature=0.5)
    p = random_probs()
    q = module.query(p).flatten(2).transpose(1, 2)
    k = module.key(p).flatten(2).transpose(1, 2)
    v = p.flatten(2).transpose(1, 2)
    expected = naive_attention(q, k, v, 1 / (math.sqrt(8) * 0.5)).transpose(1, 2).reshape(p.shape)
    torch.testing.assert_close(module(p), expected, atol=1e-5, rtol=1e-5)


def _graph_ops(tensor):
    seen, stack, names = set(), [tensor.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


def test_sdpa_uses_a_fused_kernel_not_an_n_by_n_matrix():
    # The math fallback (different head sizes, non-contiguous inputs) builds softmax(QK^T)
    # explicitly: O(N^2) memory. The fused kernels appear as one attention node.
    module = CorrelationModule(C, dim=64)
    ops = _graph_ops(module(random_probs().requires_grad_()))
    assert any("Attention" in op for op in ops), ops
    assert not any(op.startswith(("Softmax", "Bmm")) for op in ops), ops


def test_invalid_options_are_user_errors():
    with pytest.raises(UserError, match="prediction, learned"):
        CorrelationModule(C, value="features")
    with pytest.raises(UserError, match="none, conv3x3, posenc"):
        CorrelationModule(C, spatial="conv5")
    with pytest.raises(UserError, match="multiple of 4"):
        CorrelationModule(C, dim=6, spatial="posenc")


def _stage_setup():
    torch.manual_seed(0)
    network = build_segmenter("small", C)
    module = CorrelationModule(C, dim=8, value="learned")
    module.gamma.data.fill_(0.5)
    images = torch.randn(2, 3, 32, 32)
    return network, module, images


def test_correlation_fit_trains_the_module_only():
    network, module, images = _stage_setup()
    labels = torch.randint(0, C, (2, 32, 32))
    loss = correlation_fit_loss(module, network(images), labels)
    loss.backward()
    assert all(p.grad is None for p in network.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_correlation_transfer_trains_the_network_only_through_log_p():
    network, module, images = _stage_setup()
    logits = network(images)
    logits.retain_grad()
    loss = correlation_transfer_loss(module, logits)
    loss.backward()
    assert all(p.grad is None for p in module.parameters())
    assert network.classifier.weight.grad is not None
    # The gradient is that of KL(q || softmax(z)) with q a constant: softmax(z) - q, per pixel mean.
    with torch.no_grad():
        q = module(torch.softmax(logits, dim=1))
        expected = (torch.softmax(logits, dim=1) - q) / (logits.numel() / C)
    torch.testing.assert_close(logits.grad, expected, atol=1e-7, rtol=1e-4)
