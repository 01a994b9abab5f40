"""The base recipe against its references (DACS, DAFormer, MIC): the EMA horizon, MIC's block size
and `separate` mode, padding-free teacher BatchNorm statistics and the pseudo-label margins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uda_adapt.adapt.masking import block_size_for
from uda_adapt.adapt.train.batchnorm import batch_statistics, track_batch_statistics
from uda_adapt.adapt.train.config import MeanTeacherConfig, TrainConfig
from uda_adapt.adapt.train.datasets import MARGIN, margin_map
from tests.adapt.test_recipe import _tiny_state


def _alphas_of_a_run(monkeypatch, iterations: int, **settings) -> list[float]:
    """The momentum of every teacher update a mean-teacher run of `iterations` steps makes."""
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    cfg.self_train.mean_teacher.iterations = iterations
    for key, value in settings.items():
        setattr(cfg.self_train.mean_teacher, key, value)
    state = _tiny_state(cfg)
    alphas: list[float] = []
    real_update = stage.update_teacher
    monkeypatch.setattr(stage, "update_teacher", lambda teacher, student, alpha, buffers: alphas.append(alpha) or real_update(teacher, student, alpha, buffers))
    for step in range(iterations):
        stage.mean_teacher_step(state, cfg, step, torch.device("cpu"))
    assert len(alphas) == iterations
    return alphas


def test_ema_horizon_scales_warm_up_and_window_to_the_schedule(monkeypatch):
    # A horizon of 0.25 of 40 iterations: warm-up over 10 updates (the running mean), then 1 - 1/10.
    alphas = _alphas_of_a_run(monkeypatch, 40, ema_horizon=0.25)
    assert alphas[:10] == pytest.approx([1 - 1 / (t + 1) for t in range(10)])
    assert alphas[9:] == pytest.approx([0.9] * 31)
    # DAFormer's schedule scaled: 0.999 on 40k iterations is a horizon of 1000 updates, 0.025.
    from uda_adapt.adapt.teacher import scheduled_alpha
    assert scheduled_alpha(0.5, 0.025, 40_000) == pytest.approx(0.999)
    assert scheduled_alpha(0.5, 0.025, 600) == pytest.approx(1 - 1 / 15)


def test_fixed_ema_alpha_on_a_short_run_is_the_running_average(monkeypatch):
    """The running average stays available: ema_horizon 0 and alpha 0.999 never leave the warm-up
    in fewer than 1000 updates, so every update is 1 - 1/(t + 1)."""
    assert MeanTeacherConfig().ema_horizon == 0.0
    alphas = _alphas_of_a_run(monkeypatch, 12, ema_alpha=0.999)
    assert alphas == pytest.approx([1 - 1 / (t + 1) for t in range(12)])


def test_mic_blocks_are_a_sixteenth_of_the_crop_as_mics():
    fraction = MeanTeacherConfig().mic.block_fraction
    assert block_size_for((1024, 1024), fraction) == 64 and block_size_for((512, 512), fraction) == 32
    assert block_size_for((128, 256), fraction) == 8


def test_mic_separate_masks_half_source_half_target_without_augmentation(monkeypatch):
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    mt = cfg.self_train.mean_teacher
    mt.mic.enabled, mt.mic.mode, mt.confidence_threshold = True, "separate", 0.3
    state = _tiny_state(cfg)
    inputs, seen = [], []
    state.student.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    real_ce = stage.weighted_segmentation_ce
    monkeypatch.setattr(stage, "weighted_segmentation_ce",
                        lambda logits, labels, weights: seen.append((labels.clone(), weights.clone())) or real_ce(logits, labels, weights))
    with torch.no_grad():
        teacher_labels = state.teacher(state.target.images).argmax(1)
    stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    masked_input = inputs[2]                                 # source, mixed, masked
    kept = (masked_input != 0).any(dim=1, keepdim=True)
    assert 0.05 < kept.float().mean() < 0.7
    expected = torch.cat([state.source.images[:1], state.target.images[:1]])
    # No strong augmentation: kept pixels are the plain source then target image.
    assert torch.equal(masked_input * kept, expected * kept)
    labels, weights = seen[-1]
    assert torch.equal(labels[0], state.source.labels[0]) and torch.equal(labels[1], teacher_labels[0])
    assert torch.all(weights[0] == 1) and torch.all(weights[1] < 1)


def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Images (4, 3, 8, 8) whose right half is padding (zeros) in two of them, and the validity map."""
    images = 3.0 + 2.0 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(4, 8, 8, dtype=torch.bool)
    valid[:2, :, 4:] = False
    return images.masked_fill(~valid.unsqueeze(1), 0.0), valid


def test_target_teacher_statistics_leave_padding_out():
    images, valid = _padded_batch()
    model = _conv_bn()
    before_mean, before_var = model[1].running_mean.clone(), model[1].running_var.clone()
    with torch.no_grad(), track_batch_statistics(model, momentum=0.5, valid=valid):
        model(images)
    features = model[0](images).detach().permute(1, 0, 2, 3)[:, valid]     # (C, valid pixels)
    assert features.shape[1] == 4 * 64 - 2 * 32
    assert torch.allclose(model[1].running_mean, 0.5 * before_mean + 0.5 * features.mean(dim=1), atol=1e-5)
    assert torch.allclose(model[1].running_var, 0.5 * before_var + 0.5 * features.var(dim=1), atol=1e-4)
    counted = _conv_bn()   # the precondition: counting the padding gives other statistics
    with torch.no_grad(), track_batch_statistics(counted, momentum=0.5):
        counted(images)
    assert not torch.allclose(counted[1].running_mean, model[1].running_mean, atol=1e-2)


def test_batch_teacher_statistics_are_train_mode_batchnorm_over_image_pixels_only():
    images, valid = _padded_batch()
    model = _conv_bn()
    with torch.no_grad():
        reference = model.train()(images)          # train-mode BatchNorm counts the padding
        model.eval()
        kept = model[1].running_mean.clone()
        with batch_statistics(model, valid=torch.ones_like(valid)):
            same = model(images)
        with batch_statistics(model, valid=valid):
            masked = model(images)
    assert torch.allclose(same, reference, atol=1e-5)                 # all valid: exactly train-mode BatchNorm
    features = model[0](images).detach()
    pixels = features.permute(1, 0, 2, 3)[:, valid]
    mean, var = pixels.mean(dim=1), pixels.var(dim=1, unbiased=False)
    expected = (features - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + model[1].eps)
    expected = expected * model[1].weight.view(1, -1, 1, 1) + model[1].bias.view(1, -1, 1, 1)
    assert torch.allclose(masked, expected, atol=1e-4) and not torch.allclose(masked, reference, atol=1e-2)
    assert not model[1].training and torch.equal(model[1].running_mean, kept)


def test_padding_is_left_out_at_strided_layers_too():
    """A stride-2 layer's cell counts only if all of its input pixels are image."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)).eval()
    images, valid = _padded_batch()
    with torch.no_grad(), track_batch_statistics(model, momentum=1.0, valid=valid):
        model(images)
    features = model[0](images).detach()                      # (4, 4, 4, 4): padding in columns 2-3 of images 0-1
    cells = torch.ones(4, 4, 4, dtype=torch.bool)
    cells[:2, :, 2:] = False
    assert torch.allclose(model[1].running_mean, features.permute(1, 0, 2, 3)[:, cells].mean(dim=1), atol=1e-5)


def test_a_batchnorm_layer_the_forward_never_reaches_is_named_in_a_warning():
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.used(x)

    model = Skips().eval()
    for context in (lambda: track_batch_statistics(model), lambda: batch_statistics(model)):
        with pytest.warns(RuntimeWarning, match=r"1 of 2 layers were never reached.*unused"):
            with torch.no_grad(), context():
                model(torch.randn(2, 3, 4, 4))
    moved = model.used.running_mean.clone()
    assert not torch.equal(moved, torch.zeros(3)) and torch.equal(model.unused.running_mean, torch.zeros(3))


def test_margin_map_marks_the_shares_of_the_image():
    label = margin_map((100, 200), (0.03, 0.12, 0.0, 0.05))
    assert (label[:3] == MARGIN).all() and (label[3:88, :190] == 0).all()
    assert (label[88:] == MARGIN).all() and (label[:, 190:] == MARGIN).all()
    assert not margin_map((100, 200), (0.0, 0.0, 0.0, 0.0)).any()


def test_margins_move_with_the_crop_and_only_at_the_image_border(tmp_path):
    """Marked before the transform: a crop from the top of a rescaled image has the top margin,
    one from its middle has none (MIC's crop_pseudo_margins, unlike a fixed band of every crop)."""
    from uda_adapt.adapt.data.transforms import TrainTransform
    from uda_adapt.adapt.train.datasets import _ValidPixels
    from uda_adapt.adapt.classes import IGNORE_INDEX

    class Images:
        def __len__(self):
            return 1

        def load_image(self, index):
            return np.zeros((40, 80, 3), np.uint8)

    tops = set()
    torch.manual_seed(0)
    np.random.seed(0)
    transform = TrainTransform(crop_size=(20, 40), scale_range=(2.0, 2.0), flip=False)
    dataset = _ValidPixels(Images(), transform, (0.1, 0.25, 0.0, 0.0))
    for _ in range(60):
        _, label = dataset[0]
        assert not (label == IGNORE_INDEX).any()
        rows = (label == MARGIN).all(dim=1)
        tops.add((bool(rows[0]), bool(rows[-1])))
        assert (label == MARGIN).any(dim=1).equal(rows)       # whole rows only
    assert (False, False) in tops and (True, False) in tops and (False, True) in tops


def test_pseudo_labels_in_the_margins_weigh_nothing_but_count_in_the_confidence(monkeypatch):
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    cfg.self_train.mean_teacher.confidence_threshold = 0.3
    state = _tiny_state(cfg)
    state.target.labels[:, -8:] = MARGIN            # the bottom quarter of each crop: the ego hood
    seen = []
    real_ce = stage.weighted_segmentation_ce
    monkeypatch.setattr(stage, "weighted_segmentation_ce",
                        lambda logits, labels, weights: seen.append(weights.clone()) or real_ce(logits, labels, weights))
    paste_seen = []
    real_paste = stage.paste_masks
    monkeypatch.setattr(stage, "paste_masks", lambda *a: paste_seen.append(real_paste(*a)) or paste_seen[-1])
    record = stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    weights, paste = seen[0], paste_seen[0]
    assert record["pseudo_weight"] > 0
    hood = torch.zeros_like(paste)
    hood[:, -8:] = True
    assert torch.all(weights[hood & ~paste] == 0) and torch.all(weights[hood & paste] == 1)
    assert torch.allclose(weights[~hood & ~paste], torch.tensor(record["pseudo_weight"]))


def test_recipe_option_ranges_are_checked():
    from uda_adapt.adapt.train.config_checks import check_train_config
    from uda_adapt.common.errors import UserError

    for key, value, words in (("ema_horizon", 1.5, "ema_horizon"), ("pseudo_margins", (0.0, 0.6, 0.0, 0.0), "pseudo_margins")):
        cfg = TrainConfig()
        setattr(cfg.self_train.mean_teacher, key, value)
        with pytest.raises(UserError, match=words):
            check_train_config(cfg)
