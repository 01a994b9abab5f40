"""Correlation-module variants: each config switch does what it says, and old checkpoints still load."""

from __future__ import annotations

import math

import pytest
import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.losses import class_balanced_mean, correlation_fit_loss, correlation_transfer_loss, sharpen
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.models.correlation import (CorrelationModule, classifier_features, feature_channels_of, local_attention,
                                                naive_local_attention, refine_pseudo_labels)
from uda_adapt.adapt.train.config import CorrelationConfig
from uda_adapt.adapt.train.correlation_stage import (FitInputs, build_correlation_module, correlation_payload, image_pixels,
                                                     load_correlation_module)
from uda_adapt.common.errors import UserError

C = 5


def probs(b=2, h=6, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, C, h, w, generator=g), dim=1)


def test_local_attention_matches_a_full_matrix_with_a_distance_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, 6, 9, generator=g) for _ in range(3))
    torch.testing.assert_close(local_attention(q, k, v, 3, 0.3), naive_local_attention(q, k, v, 3, 0.3), atol=1e-5, rtol=1e-5)


def test_a_window_keeps_far_pixels_out():
    # One pixel of class 1 far from a block of class 0 pixels: global attention mixes them when
    # their queries agree; a 3x3 window cannot see the block from the far corner.
    p = torch.zeros(1, C, 8, 8)
    p[:, 0] = 1.0
    p[:, :, 7, 7] = 0.0
    p[:, 1, 7, 7] = 1.0
    for window, far_changes in ((0, True), (3, False)):
        torch.manual_seed(0)
        module = CorrelationModule(C, dim=8, window=window)
        with torch.no_grad():
            module.query.weight.zero_(), module.key.weight.zero_()      # every pixel attends alike
        out = module(p)
        assert (out[0, :, 0, 0] - p[0, :, 0, 0]).abs().max() < 1e-6 if window else True
        changed = (out[0, :, 0, 0] - p[0, :, 0, 0]).abs().max().item() > 1e-4
        assert changed == far_changes, (window, changed)


def test_window_attention_leaves_padding_out():
    p = probs(1, 5, 5)
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    valid[:, :, 3:] = False
    module = CorrelationModule(C, dim=8, window=3)
    garbage = p.clone()
    garbage[:, :, :, 3:] = torch.softmax(torch.randn(1, C, 5, 2), dim=1)
    # Column 2's window reaches column 3, which is padding.
    torch.testing.assert_close(module(p, valid)[..., :3], module(garbage, valid)[..., :3])


def test_feature_queries_read_the_networks_penultimate_features():
    torch.manual_seed(0)
    network = build_segmenter("small", C).eval()
    images = torch.randn(1, 3, 32, 64)
    with classifier_features(network) as seen:
        logits = network(images)
    assert seen[0].shape == (1, feature_channels_of(network), 4, 8)
    assert not network.classifier._forward_pre_hooks                  # the hook is gone afterwards
    module = CorrelationModule(C, dim=8, query="both", feature_channels=feature_channels_of(network))
    with torch.no_grad():
        module.query.weight.mul_(20)                                   # a sharp affinity, away from uniform
    p = probs(1, 4, 8)                                                 # an untrained network predicts alike everywhere
    features = torch.rand_like(seen[0])
    out = module(p, features=features)
    # Other features, same p: another affinity, hence another output.
    assert (out - module(p, features=features.flip(-1))).abs().max() > 1e-3
    with pytest.raises(UserError, match="query='both'.*none were given"):
        module(p)
    with pytest.raises(UserError, match="feature width"):
        CorrelationModule(C, query="features")


def test_feature_gradients_stop_at_the_module():
    network = build_segmenter("small", C)
    images = torch.randn(2, 3, 32, 32)
    with classifier_features(network) as seen:
        logits = network(images)
    module = CorrelationModule(C, dim=8, value="learned", query="features", feature_channels=feature_channels_of(network))
    module.gamma.data.fill_(0.5)
    correlation_fit_loss(module, logits, torch.randint(0, C, (2, 32, 32)), features=seen[0]).backward()
    assert all(p.grad is None for p in network.parameters())
    assert module.query.weight.grad.abs().sum() > 0


def test_the_learned_value_has_no_bias_unless_asked():
    assert CorrelationModule(C, value="learned").value_proj.bias is None
    assert CorrelationModule(C, value="learned", value_bias=True).value_proj.bias is not None


def test_a_payload_from_before_the_variant_keys_loads_with_its_bias():
    old = CorrelationModule(C, dim=8, value="learned", spatial="conv3x3", value_bias=True)
    payload = {"state_dict": old.state_dict(), "dim": 8, "value": "learned", "spatial": "conv3x3"}   # the old format
    loaded = load_correlation_module(payload, C)
    assert loaded.value_proj.bias is not None
    p = probs()
    torch.testing.assert_close(loaded(p), old(p))


def test_the_payload_rebuilds_every_variant():
    c = CorrelationConfig(dim=8, window=5, temperature=0.5, query="both")
    module = build_correlation_module(c, C, build_segmenter("small", C))
    again = load_correlation_module(correlation_payload(None, module), C)
    assert again.config() == module.config()
    assert (again.window, again.temperature, again.query_mode) == (5, 0.5, "both")


def test_the_attention_temperature_is_a_config_key():
    p = probs()
    torch.manual_seed(0)
    warm = build_correlation_module(CorrelationConfig(dim=8, value="prediction", spatial="none", temperature=1.0), C)
    torch.manual_seed(0)
    cold = build_correlation_module(CorrelationConfig(dim=8, value="prediction", spatial="none", temperature=0.1), C)
    # A colder softmax concentrates each row: outputs move further from the global average.
    spread = lambda out: (out - out.mean(dim=(2, 3), keepdim=True)).abs().mean()
    assert spread(cold(p)) > spread(warm(p))


@pytest.mark.parametrize("key, value", [("fit_mask_ratio", 1.0), ("fit_mask_block", 0.0), ("early_stop_every", -1)])
def test_bad_fit_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=f"correlation.{key}"):
        build_correlation_module(CorrelationConfig(**{key: value}), C)
    with pytest.raises(UserError, match="odd"):
        build_correlation_module(CorrelationConfig(window=4), C)


def test_the_fit_leaves_padding_out_of_attention():
    torch.manual_seed(0)
    module = CorrelationModule(C, dim=8)
    logits = torch.randn(1, C, 4, 4)
    labels = torch.randint(0, C, (1, 32, 32))
    images = torch.randn(1, 3, 32, 32)
    images[..., 16:] = 0.0                                     # crop padding: exactly 0
    # Bilinear upsampling blends the last valid cell with the first padding cell over columns 12-15:
    # leave them unlabelled so the loss reads whole valid cells only.
    labels[..., 12:] = IGNORE_INDEX
    valid = image_pixels(images)
    assert valid[..., :16].all() and not valid[..., 16:].any()
    loss = correlation_fit_loss(module, logits, labels, valid=valid)
    other = logits.clone()
    other[..., 2:] = torch.randn(1, C, 4, 2)                   # what the padding cells predict
    assert torch.equal(loss, correlation_fit_loss(module, other, labels, valid=valid))
    # Without the mask, padding cells are attended to and change the loss.
    everywhere = torch.ones_like(valid)
    assert not torch.equal(correlation_fit_loss(module, logits, labels, valid=everywhere),
                           correlation_fit_loss(module, other, labels, valid=everywhere))


def test_class_balanced_mean_weighs_each_present_class_once():
    values = torch.tensor([[[1.0, 1.0, 1.0, 4.0]]])
    labels = torch.tensor([[[0, 0, 0, 2]]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    assert class_balanced_mean(values, labels, mask, 3).item() == pytest.approx(2.5)     # (1 + 4) / 2, not 7 / 4
    assert class_balanced_mean(values, labels, torch.zeros_like(mask), 3).item() == 0.0


def test_fit_inputs_mask_blocks_and_draw_from_the_generator():
    c = CorrelationConfig(fit_perturbation=0.0, fit_mask_ratio=0.5, fit_mask_block=0.25)
    images = torch.ones(2, 3, 16, 16)
    out = FitInputs(c, (0.5,) * 3, (0.2,) * 3)(images, torch.Generator().manual_seed(0))
    blanked = (out == 0).all(dim=1).float().mean().item()
    assert 0.1 < blanked < 0.9
    again = FitInputs(c, (0.5,) * 3, (0.2,) * 3)(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    plain = FitInputs(CorrelationConfig(fit_perturbation=0.0), (0.5,) * 3, (0.2,) * 3)
    assert torch.equal(plain(images, torch.Generator()), images)


def test_a_sharpened_target_is_surer_and_keeps_its_argmax():
    q = probs()
    sharp = sharpen(q, 0.5)
    torch.testing.assert_close(sharp.sum(dim=1), torch.ones(2, 6, 9))
    assert torch.equal(sharp.argmax(dim=1), q.argmax(dim=1))
    assert (sharp.max(dim=1).values >= q.max(dim=1).values - 1e-6).all()
    # In the loss: the KL is taken towards the sharpened SA(p).
    module = CorrelationModule(C, dim=8)
    logits = torch.randn(1, C, 4, 4)
    with torch.no_grad():
        target = sharpen(module(torch.softmax(logits, dim=1)), 0.5)
    direct = (target * (target.clamp_min(1e-12).log() - torch.log_softmax(logits, dim=1))).sum(dim=1).mean()
    torch.testing.assert_close(correlation_transfer_loss(module, logits, target_temperature=0.5), direct, atol=1e-6, rtol=1e-5)


def test_the_module_fills_in_pseudo_labels_only_where_the_teacher_is_unsure():
    attended = torch.zeros(1, 3, 1, 3)
    attended[0, 2] = torch.tensor([[0.9, 0.9, 0.5]])         # module sure of class 2 on pixels 0 and 1
    attended[0, 0] = 1 - attended[0, 2]
    pseudo = torch.tensor([[[1, 1, 1]]])
    confidence = torch.tensor([[[0.99, 0.5, 0.5]]])
    new_pseudo, new_confidence = refine_pseudo_labels(attended, pseudo, confidence, threshold=0.968, module_threshold=0.8)
    assert new_pseudo.tolist() == [[[1, 2, 1]]]                  # sure teacher kept; unsure module ignored
    assert new_confidence.flatten().tolist() == pytest.approx([0.99, 0.968, 0.5])
    assert pseudo.tolist() == [[[1, 1, 1]]]                      # inputs untouched


def test_the_module_runs_at_a_stride_4_networks_resolution():
    # small_fine predicts at stride 4: the module attends over its 4x more cells and reads its
    # decoder's features, with no setting of its own.
    from uda_adapt.adapt.train.correlation_stage import module_fn

    torch.manual_seed(0)
    network = build_segmenter("small_fine", C).eval()
    module = build_correlation_module(CorrelationConfig(dim=8, window=9, query="both"), C, network).eval()
    images = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        out = module_fn(network, module)(images)
    assert out.shape == (1, C, 8, 16)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(1, 8, 16))
