"""The DACS/DAFormer strong augmentation as their code does it, MIC masking, online module fitting,
and the label-free drift signals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.masking import block_masks, block_size_for, mask_images
from uda_adapt.adapt.mixing import Jitter, StrongAugmentation, colour_jitter, hsv_to_rgb, kernel_sizes, rgb_to_hsv
from uda_adapt.adapt.pseudo_labels import pseudo_label_weight
from uda_adapt.adapt.train.config import MeanTeacherConfig, TrainConfig

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_defaults_are_the_dacs_recipe():
    mt = MeanTeacherConfig()
    # DAFormer: jitter when uniform(0, 1) > 0.2, i.e. with probability 0.8; blur when > 0.5.
    assert mt.jitter_p == 0.8 and mt.blur_p == 0.5 and mt.jitter_strength == 0.2
    assert mt.confidence_weight == "batch"
    assert StrongAugmentation(MEAN, STD).jitter_p == 0.8


def test_jitter_and_blur_are_decided_per_batch_with_the_configured_probability():
    augment = StrongAugmentation(MEAN, STD)
    generator = torch.Generator().manual_seed(0)
    batches = [augment.draw(4, generator) for _ in range(2000)]
    for plans in batches:   # one decision per batch: all images or none
        assert len({p.jitter is None for p in plans}) == 1 and len({p.blur_sigma is None for p in plans}) == 1
    jittered = sum(plans[0].jitter is not None for plans in batches) / len(batches)
    blurred = sum(plans[0].blur_sigma is not None for plans in batches) / len(batches)
    assert 0.77 < jittered < 0.83 and 0.46 < blurred < 0.54
    factors = [p.jitter for plans in batches for p in plans if p.jitter is not None]
    assert len({f.hue for f in factors[:4]}) == 4           # per-image factors
    hues = torch.tensor([f.hue for f in factors])
    brightness = torch.tensor([f.brightness for f in factors])
    # kornia's hue factor in [-s, s] is multiplied by 2 pi: a shift of up to s turns either way.
    assert hues.abs().max() <= 0.2 and hues.max() > 0.19 and hues.min() < -0.19
    assert brightness.abs().max() <= 0.2 and brightness.min() < -0.19
    assert {f.order for f in factors} > {(0, 1, 2, 3)}      # random order of the four
    sigmas = torch.tensor([p.blur_sigma for plans in batches for p in plans if p.blur_sigma is not None])
    assert sigmas.min() >= 0.15 and sigmas.max() <= 1.15


def test_colour_jitter_steps_are_kornia_05s():
    grey = torch.full((3, 4, 4), 0.4)
    brighter = colour_jitter(grey, Jitter(brightness=0.1, contrast=1.0, saturation=1.0, hue=0.0))
    assert torch.allclose(brighter, grey + 0.1)                       # additive brightness
    scaled = colour_jitter(grey, Jitter(brightness=0.0, contrast=1.5, saturation=1.0, hue=0.0))
    assert torch.allclose(scaled, grey * 1.5)                         # contrast scales, no mean subtraction
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    green = colour_jitter(red, Jitter(brightness=0.0, contrast=1.0, saturation=1.0, hue=1 / 3))
    assert torch.allclose(green[1], torch.ones(2, 2), atol=1e-5) and green[0].abs().max() < 1e-5
    pale = colour_jitter(torch.tensor([0.8, 0.4, 0.4]).view(3, 1, 1), Jitter(0.0, 1.0, 0.5, 0.0))
    assert torch.allclose(pale.flatten(), torch.tensor([0.8, 0.6, 0.6]), atol=1e-5)   # HSV saturation halved


def test_hsv_round_trip():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(image)), image, atol=1e-5)


def test_blur_kernels_follow_dacs_per_axis():
    # DACS: k = ceil(0.1 * side), then floor(k - 0.5 + k % 2): odd k kept, even k minus one.
    for height, width in ((128, 256), (512, 512), (33, 71)):
        expected = []
        for side in (height, width):
            k = math.ceil(0.1 * side)
            expected.append(max(3, int(math.floor(k - 0.5 + k % 2))))
        assert kernel_sizes((height, width)) == tuple(expected)


def test_batch_confidence_weight_is_one_scalar_for_the_batch():
    confidence = torch.tensor([[[0.99, 0.5], [0.97, 0.968]], [[0.1, 0.2], [0.3, 0.999]]])
    batch = pseudo_label_weight(confidence, 0.968, scope="batch")
    assert torch.allclose(batch, torch.tensor([0.5, 0.5]))            # 4 sure pixels of 8
    image = pseudo_label_weight(confidence, 0.968, scope="image")
    assert torch.allclose(image, torch.tensor([0.75, 0.25]))
    valid = torch.tensor([[[True, True], [False, False]], [[False, False], [False, True]]])
    assert torch.allclose(pseudo_label_weight(confidence, 0.968, valid, "batch"), torch.tensor([2 / 3, 2 / 3]))


def test_mic_masks_blank_whole_blocks_at_the_ratio():
    assert block_size_for((512, 512), 0.125) == 64 and block_size_for((128, 256), 0.125) == 16
    masks = block_masks(64, (64, 128), 0.7, 16, torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 64, 128) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert 0.25 < masks.mean().item() < 0.35                         # 30 % kept
    blocks = masks.view(64, 1, 4, 16, 8, 16)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))   # constant within each block
    images = torch.randn(64, 3, 64, 128)
    masked = mask_images(images, masks)
    assert torch.equal(masked[masks.expand_as(images) == 0], torch.zeros(int((masks == 0).sum()) * 3))
    assert torch.equal(masked[masks.expand_as(images) == 1], images[masks.expand_as(images) == 1])


class _Stream:
    def __init__(self, images, labels):
        self.images, self.labels, self.batch_size = images, labels, len(images)
        self.micro_batch_size, self.accumulate = len(images), 1      # no gradient accumulation

    def next(self):
        return self.images.clone(), self.labels.clone()


def _tiny_state(cfg: TrainConfig, module=None):
    from uda_adapt.adapt.teacher import make_teacher
    from uda_adapt.adapt.train.distributed import SINGLE_PROCESS
    from uda_adapt.adapt.train.mean_teacher_stage import MeanTeacherState

    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(2, 3, 32, 32, generator=generator)
    src_labels = torch.randint(0, 4, (2, 32, 32), generator=generator)
    tgt = torch.randn(2, 3, 32, 32, generator=generator)
    tgt_labels = torch.zeros(2, 32, 32, dtype=torch.long)   # the crop-validity map: no padding
    return MeanTeacherState(
        student=student, network=student, teacher=make_teacher(student),
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1), scaler=torch.amp.GradScaler("cpu", enabled=False),
        source=_Stream(src, src_labels), target=_Stream(tgt, tgt_labels), generator=torch.Generator().manual_seed(1),
        augment=StrongAugmentation(MEAN, STD), module=module, num_classes=4, dist=SINGLE_PROCESS)


def test_mic_loss_learns_the_masked_image_from_the_unmasked_teachers_labels(monkeypatch):
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    cfg.self_train.lambda_ct = 0.0
    cfg.self_train.mean_teacher.mic.enabled = True
    cfg.self_train.mean_teacher.confidence_threshold = 0.3
    state = _tiny_state(cfg)
    inputs, labels_seen = [], []
    state.student.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    real_ce = stage.weighted_segmentation_ce
    monkeypatch.setattr(stage, "weighted_segmentation_ce",
                        lambda logits, labels, weights: labels_seen.append(labels.clone()) or real_ce(logits, labels, weights))
    target_images = state.target.images.clone()
    with torch.no_grad():
        expected = state.teacher(target_images).argmax(1)
    record = stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    assert "masked_ce" in record and record["masked_ce"] > 0
    # Calls: the teacher is not hooked; the student sees source, mixed, masked.
    masked_input = inputs[2]
    blank = (masked_input == 0).all(dim=1)
    assert 0.3 < blank.float().mean() < 0.95 and not (target_images == 0).all(dim=1).any()
    assert len(labels_seen) == 2 and torch.equal(labels_seen[1], expected)   # the full image's teacher labels


def test_mic_off_adds_no_masked_pass():
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    cfg.self_train.lambda_ct = 0.0
    state = _tiny_state(cfg)
    calls = []
    state.student.register_forward_pre_hook(lambda _m, args: calls.append(1))
    record = stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    assert "masked_ce" not in record and len(calls) == 2


def test_online_module_fitting_uses_source_labels_only_and_moves_the_module():
    import uda_adapt.adapt.train.mean_teacher_stage as stage
    from uda_adapt.adapt.models.correlation import CorrelationModule
    from uda_adapt.adapt.train.correlation_refit import make_refit
    from uda_adapt.adapt.train.distributed import SINGLE_PROCESS

    cfg = TrainConfig()
    cfg.self_train.lambda_ct = 0.1
    cfg.self_train.correlation_refit.every = 1
    module = CorrelationModule(4, dim=8, value="learned", spatial="conv3x3").eval().requires_grad_(False)
    state = _tiny_state(cfg, module)
    state.refit = make_refit(module, cfg, MEAN, STD, torch.device("cpu"), SINGLE_PROCESS)
    # Target labels that are not a crop-validity map would be a leak: poison them to prove they are unused.
    before = {k: v.clone() for k, v in module.state_dict().items()}
    seen = []
    real_fit = stage.CorrelationRefit.step
    def spy(self, images, labels, *rest):
        seen.append(labels.clone())
        return real_fit(self, images, labels, *rest)
    stage.CorrelationRefit.step = spy
    try:
        record = stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    finally:
        stage.CorrelationRefit.step = real_fit
    assert "module_fit" in record and record["module_fit"] > 0
    assert len(seen) == 1 and torch.equal(seen[0], state.source.labels)   # fitted against source labels
    moved = [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]
    assert moved, "the module's weights did not change"
    assert not module.training   # back to eval for correlation transfer


def test_dead_options_are_refused():
    from uda_adapt.adapt.config import load_config
    from uda_adapt.common.errors import UserError

    for override, words in (
        ("self_train.optim.lr=0.0003", "self_train.lrs"),
        ("self_train.ct_teacher=online", "EMA teacher"),
        ("self_train.ct_input=masked", "mic.enabled"),
        ("self_train.ct_input=masked,self_train.mean_teacher.mic.enabled=true,self_train.mean_teacher.mic.mode=separate", "mic.mode"),
    ):
        with pytest.raises(UserError, match=words.replace(".", r"\.")):
            load_config(TrainConfig, None, override.split(","))


def test_drift_signals_flag_a_collapse_and_stay_quiet_when_stable():
    from uda_adapt.adapt.train.drift import DriftMonitor, drift_verdict

    monitor = DriftMonitor(3)
    source = torch.tensor([[[0, 1, 2, 2]]])
    good_logits = torch.nn.functional.one_hot(source, 3).permute(0, 3, 1, 2).float() * 5
    first = monitor.update(source.clone(), source, good_logits)
    assert first["source_acc"] == 1.0 and first["pred_tv"] == 0.0
    collapsed = torch.zeros_like(source)
    for _ in range(400):
        last = monitor.update(collapsed, source, -good_logits)
    assert monitor.vanished() == [1, 2]
    warnings = drift_verdict([{"stage": "s", **first}, {"stage": "s", **last}], ["sidewalk", "building"])
    assert len(warnings) == 3 and last["source_acc"] == 0.0 and last["pred_tv"] > 0.5
    assert drift_verdict([{"stage": "s", **first}, {"stage": "s", **first}], []) == []


def test_target_teacher_statistics_follow_the_batches_it_labels_after_labelling_them():
    from uda_adapt.adapt.teacher import make_teacher, update_teacher
    from uda_adapt.adapt.train.batchnorm import track_batch_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    images = 4.0 + 2.0 * torch.randn(8, 3, 6, 6)
    before = model[1].running_mean.clone(), model[1].running_var.clone()
    with torch.no_grad():
        plain = model(images)
        with track_batch_statistics(model, momentum=0.1):
            tracked = model(images)
    assert torch.equal(plain, tracked)        # this batch is labelled with the statistics before it
    features = model[0](images).detach()
    mean, var = features.mean(dim=(0, 2, 3)), features.var(dim=(0, 2, 3), unbiased=True)
    assert not torch.allclose(before[0], mean, atol=0.1)
    assert torch.allclose(model[1].running_mean, 0.9 * before[0] + 0.1 * mean, atol=1e-5)
    assert torch.allclose(model[1].running_var, 0.9 * before[1] + 0.1 * var, atol=1e-4)
    # The EMA update then leaves the teacher's own statistics alone.
    student = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    student.train()(torch.randn(4, 3, 6, 6))
    teacher = make_teacher(model)
    kept = teacher[1].running_mean.clone()
    update_teacher(teacher, student, 0.5, buffers=False)
    assert torch.equal(teacher[1].running_mean, kept) and not torch.equal(teacher[0].weight, model[0].weight)


def test_target_teacher_statistics_over_two_ranks_are_those_of_the_whole_batch(monkeypatch):
    """Each rank adds counts, sums and sums of squares: the global batch's mean and variance."""
    import uda_adapt.adapt.train.batchnorm as batchnorm
    from uda_adapt.adapt.train.distributed import Distributed

    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    images = torch.cat([1.0 + torch.randn(4, 3, 6, 6), 5.0 + 3.0 * torch.randn(4, 3, 6, 6)])   # halves differ
    whole = copy_of(base)
    with torch.no_grad(), batchnorm.track_batch_statistics(whole):
        whole(images)
    # Rank 1's contribution, then rank 0 with an all-reduce that adds it.
    sums = {}
    monkeypatch.setattr(batchnorm, "all_reduce_sum", lambda t, info: sums.setdefault("rank1", t.clone()) if "rank1" not in sums else t + sums["rank1"])
    rank1 = copy_of(base)
    with torch.no_grad(), batchnorm.track_batch_statistics(rank1, dist=Distributed(rank=1, world_size=2)):
        rank1(images[4:])
    rank0 = copy_of(base)
    with torch.no_grad(), batchnorm.track_batch_statistics(rank0, dist=Distributed(rank=0, world_size=2)):
        rank0(images[:4])
    assert not torch.allclose(rank1[1].running_mean, whole[1].running_mean, atol=1e-3)   # one half alone differs
    assert torch.allclose(rank0[1].running_mean, whole[1].running_mean, atol=1e-5)
    assert torch.allclose(rank0[1].running_var, whole[1].running_var, atol=1e-4)


def copy_of(model):
    import copy

    return copy.deepcopy(model)


@pytest.mark.parametrize("name", ["gta5_to_cityscapes_mean_teacher", "synthia_to_cityscapes_mean_teacher"])
def test_full_scale_mean_teacher_samples_keep_the_dacs_augmentation(name):
    """A sample that names DAFormer's recipe must not override it (one shipped jitter at p 0.2)."""
    from pathlib import Path

    from uda_adapt.adapt.config import load_config

    path = Path(__file__).resolve().parents[2] / "samples" / "configs" / f"{name}.yaml"
    mt = load_config(TrainConfig, path, []).self_train.mean_teacher
    default = MeanTeacherConfig()
    assert (mt.jitter_p, mt.blur_p, mt.jitter_strength) == (default.jitter_p, default.blur_p, default.jitter_strength)
    assert mt.rare_class_sampling and (mt.rcs_temperature, mt.rcs_min_pixels, mt.rcs_min_crop_ratio) == (0.01, 3000, 0.5)
    # DAFormer's pseudo-label margins (15 top, 120 bottom rows of 512) and its train-mode teacher.
    assert [round(512 * share) for share in mt.pseudo_margins] == [15, 120, 0, 0]
    assert mt.teacher_bn == "batch" and mt.ema_alpha == 0.999 and mt.ema_horizon == 0.0
