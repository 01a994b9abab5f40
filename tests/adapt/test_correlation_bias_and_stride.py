"""Two correlation-module variants: a learned relative-position bias in the local window
(`correlation.position_bias`) and attention at a finer stride (`correlation.upsample`)."""

from __future__ import annotations

import pytest
import torch

from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.models.correlation import CorrelationModule, classifier_features, local_attention
from uda_adapt.adapt.train.config import CorrelationConfig, TrainConfig
from uda_adapt.adapt.train.correlation_stage import build_correlation_module, correlation_payload, load_correlation_module
from uda_adapt.common.errors import UserError

C = 5


def probs(b=2, h=6, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, C, h, w, generator=g), dim=1)


def padded(h=6, w=9, valid_cols=5):
    """(1, h, w) validity with the columns from `valid_cols` on as padding."""
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[..., valid_cols:] = False
    return valid


def full_matrix_reference(q, k, v, window, scale, bias):
    """softmax over the window of q . k * scale + bias[dy, dx], built as an (N, N) matrix per image."""
    b, d, h, w = q.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy, dx = rows[None, :] - rows[:, None], cols[None, :] - cols[:, None]      # key minus query
    r = window // 2
    near = (dy.abs() <= r) & (dx.abs() <= r)
    offsets = bias[(dy + r).clamp(0, window - 1), (dx + r).clamp(0, window - 1)]
    scores = q.flatten(2).transpose(1, 2) @ k.flatten(2) * scale + offsets
    weights = torch.softmax(scores.masked_fill(~near, float("-inf")), dim=-1)
    return (weights @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, v.shape[1], h, w)


# ---- position bias -----------------------------------------------------------------------------

def test_local_attention_with_a_bias_matches_a_full_matrix():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, 6, 9, generator=g) for _ in range(3))
    bias = torch.randn(3, 3, generator=g)
    assert not torch.allclose(local_attention(q, k, v, 3, 0.3, position_bias=bias), local_attention(q, k, v, 3, 0.3))
    torch.testing.assert_close(local_attention(q, k, v, 3, 0.3, position_bias=bias),
                               full_matrix_reference(q, k, v, 3, 0.3, bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value", ["prediction", "learned"])
def test_the_bias_starts_at_zero_and_reproduces_the_module_without_it(value):
    torch.manual_seed(0)
    plain = CorrelationModule(C, dim=8, value=value, spatial="conv3x3", window=5)
    torch.manual_seed(0)
    biased = CorrelationModule(C, dim=8, value=value, spatial="conv3x3", window=5, position_bias=True)
    assert plain.position_bias is None and biased.position_bias.shape == (5, 5)
    assert torch.equal(biased.position_bias, torch.zeros(5, 5))
    if value == "learned":
        plain.gamma.data.fill_(0.7), biased.gamma.data.fill_(0.7)      # away from the identity
    p, valid = probs(), padded().expand(2, -1, -1)
    assert torch.equal(biased(p, valid), plain(p, valid))
    with torch.no_grad():
        biased.position_bias[0, 0] = 3.0
    assert not torch.equal(biased(p, valid), plain(p, valid))


def test_the_bias_gets_a_gradient_and_moves_in_a_short_fit():
    torch.manual_seed(0)
    c = CorrelationConfig(dim=8, window=3, position_bias=True)      # value "learned": gamma 0 at first
    module = build_correlation_module(c, C).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=c.optim.lr)
    logits, labels = torch.randn(2, C, 4, 8), torch.randint(0, C, (2, 32, 64))
    grads = []
    for _ in range(4):
        optimizer.zero_grad(set_to_none=True)
        correlation_fit_loss(module, logits, labels).backward()
        grads.append(module.position_bias.grad.abs().sum().item())
        optimizer.step()
    assert grads[0] == 0.0 and grads[-1] > 0               # reached once gamma has left 0
    assert module.position_bias.detach().abs().max() > 1e-4


def test_masked_keys_keep_zero_weight_with_the_bias():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 6, 9, generator=g), torch.randn(1, 8, 6, 9, generator=g)
    valid = padded()
    indicator = (~valid).float().unsqueeze(1)                         # value 1 on padding keys, 0 elsewhere
    bias = torch.full((3, 3), 50.0)                                   # every offset strongly favoured
    out = local_attention(q, k, indicator, 3, 0.3, valid, position_bias=bias)
    assert torch.equal(out[..., :5], torch.zeros(1, 1, 6, 5))        # no weight on padding from valid queries
    # The module: what padding predicts does not reach valid cells.
    module = CorrelationModule(C, dim=8, window=3, position_bias=True)
    with torch.no_grad():
        module.position_bias.uniform_(-5, 5)
    p = probs(1)
    garbage = p.clone()
    garbage[..., 5:] = torch.softmax(torch.randn(1, C, 6, 4), dim=1)
    torch.testing.assert_close(module(p, valid)[..., :5], module(garbage, valid)[..., :5])


def test_global_attention_refuses_a_position_bias():
    with pytest.raises(UserError, match="position_bias needs a local window"):
        build_correlation_module(CorrelationConfig(window=0, position_bias=True), C)


# ---- finer stride ------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [0, 3])
def test_upsample_returns_the_inputs_size_as_probabilities(window):
    torch.manual_seed(0)
    module = CorrelationModule(C, dim=8, window=window, upsample=2)
    p = probs()
    out = module(p, padded().expand(2, -1, -1))
    assert out.shape == p.shape
    assert (out >= 0).all()
    # Valid cells (padding cells with no valid key in reach average a zero-padded window, as at stride 1).
    torch.testing.assert_close(out.sum(dim=1)[..., :5], torch.ones(2, 6, 5))
    torch.testing.assert_close(module(p).sum(dim=1), torch.ones(2, 6, 9))
    learned = CorrelationModule(C, dim=8, value="learned", window=window, upsample=2)
    torch.testing.assert_close(learned(p), p, atol=1e-6, rtol=1e-5)  # gamma 0: still the identity


def test_upsample_attends_over_more_tokens():
    # A one-cell object next to a large region: at stride 1 a 3x3 window mixes the cell with its 8
    # neighbours; at upsample 2 its 4 fine tokens mostly see each other, so more of it survives.
    p = torch.zeros(1, C, 7, 7)
    p[:, 0] = 1.0
    p[:, :, 3, 3] = 0.0
    p[:, 1, 3, 3] = 1.0
    kept = {}
    for upsample in (1, 2):
        module = CorrelationModule(C, dim=8, window=3, upsample=upsample)
        with torch.no_grad():
            module.query.weight.zero_(), module.key.weight.zero_()   # uniform attention over the window
        kept[upsample] = module(p)[0, 1, 3, 3].item()
    assert kept[1] == pytest.approx(1 / 9, abs=1e-6)
    assert kept[2] > 2 * kept[1]


def test_upsample_keeps_padding_out_of_valid_cells():
    torch.manual_seed(0)
    network = build_segmenter("small", C).eval()
    with classifier_features(network) as seen:
        network(torch.randn(1, 3, 48, 72))
    features = seen[0]                                                # (1, F, 6, 9)
    # A 5x5 fine window reaches 2 fine cells (one coarse cell) into the padding: only the resized mask keeps it out.
    module = CorrelationModule(C, dim=8, query="both", feature_channels=features.shape[1], window=5, upsample=2)
    with torch.no_grad():
        module.query.weight.mul_(20)
    valid, p = padded(), probs(1)
    garbage_p, garbage_f = p.clone(), features.clone()
    garbage_p[..., 5:] = torch.softmax(torch.randn(1, C, 6, 4), dim=1)
    garbage_f[..., 5:] = torch.randn(1, features.shape[1], 6, 4)
    torch.testing.assert_close(module(p, valid, features)[..., :5], module(garbage_p, valid, garbage_f)[..., :5])


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_bad_upsample_is_refused(value):
    with pytest.raises(UserError, match="upsample must be a whole factor"):
        build_correlation_module(CorrelationConfig(upsample=value), C)


# ---- config and checkpoints --------------------------------------------------------------------

def test_the_keys_load_from_the_command_line():
    cfg = load_config(TrainConfig, None, ["correlation.window=9", "correlation.position_bias=true", "correlation.upsample=2"])
    assert (cfg.correlation.position_bias, cfg.correlation.upsample) == (True, 2)
    assert (CorrelationConfig().position_bias, CorrelationConfig().upsample) == (False, 1)


def test_a_payload_from_before_the_keys_loads_without_them():
    torch.manual_seed(0)
    old = CorrelationModule(C, dim=8, value="learned", window=3)
    state = old.state_dict()
    payload = {"state_dict": state, "dim": 8, "value": "learned", "spatial": "none", "window": 3}
    loaded = load_correlation_module(payload, C)
    assert loaded.position_bias is None and loaded.upsample == 1


def test_the_payload_rebuilds_the_bias_and_the_stride_exactly():
    torch.manual_seed(0)
    module = build_correlation_module(CorrelationConfig(dim=8, window=3, position_bias=True, upsample=2), C)
    with torch.no_grad():
        module.position_bias.uniform_(-1, 1), module.gamma.fill_(0.5)
    again = load_correlation_module(correlation_payload(None, module), C)
    assert again.config() == module.config() and again.upsample == 2
    assert torch.equal(again.position_bias, module.position_bias)
    p = probs()
    assert torch.equal(again(p), module(p))


@pytest.mark.parametrize("settings, message", [
    (["correlation.upsample=0"], "correlation.upsample"),
    (["correlation.upsample=true"], "correlation.upsample"),
    (["correlation.window=8"], "correlation.window"),
    (["correlation.position_bias=true"], "correlation.position_bias"),
])
def test_bad_shapes_are_refused_when_the_config_loads(settings, message):
    # Refused at load, not after the source stage has trained (the module would refuse them only then).
    with pytest.raises(UserError, match=message):
        load_config(TrainConfig, None, settings)
    load_config(TrainConfig, None, ["correlation.window=9", "correlation.position_bias=true", "correlation.upsample=2"])
