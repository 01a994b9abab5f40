"""Mean-teacher pieces: ClassMix, strong augmentation, the EMA teacher, confidence weights, RCS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.data.rare_class import ClassStatistics, class_probabilities, rare_class_order
from uda_adapt.adapt.losses import weighted_segmentation_ce, segmentation_ce
from uda_adapt.adapt.mixing import StrongAugmentation, classmix_masks, gaussian_blur, kernel_sizes, mix
from uda_adapt.adapt.pseudo_labels import confidence_weight
from uda_adapt.adapt.teacher import ema_alpha, make_teacher, update_teacher
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm


def test_classmix_pastes_half_of_each_images_classes_and_moves_labels_with_pixels():
    source_labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, IGNORE_INDEX]],
                                  [[5, 5, 5, 5], [5, 5, 5, 5]]])
    masks = classmix_masks(source_labels, torch.Generator().manual_seed(0))
    first = torch.unique(source_labels[0][masks[0]])
    assert first.numel() == 2 and IGNORE_INDEX not in first.tolist()
    # A class is pasted whole or not at all, and ignore pixels never are.
    for c in range(4):
        pixels = masks[0][source_labels[0] == c]
        assert pixels.all() or not pixels.any()
    assert not masks[0][source_labels[0] == IGNORE_INDEX].any()
    assert masks[1].all()  # one class: half rounded up is that class

    source_images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    target_images = -torch.ones(2, 3, 2, 4)
    pseudo = torch.full((2, 2, 4), 9)
    images, labels = mix(masks, source_images, target_images), mix(masks, source_labels, pseudo)
    assert torch.equal(images[masks.unsqueeze(1).expand_as(images)], source_images[masks.unsqueeze(1).expand_as(images)])
    assert (images[~masks.unsqueeze(1).expand_as(images)] == -1).all()
    assert torch.equal(labels[masks], source_labels[masks]) and (labels[~masks] == 9).all()


def test_classmix_is_reproducible_from_the_generator_state():
    labels = torch.randint(0, 19, (4, 16, 16))
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    first = classmix_masks(labels, generator)
    generator.set_state(state)
    assert torch.equal(first, classmix_masks(labels, generator))


def test_strong_augmentation_keeps_shape_range_and_is_seeded():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    images = (torch.rand(3, 3, 20, 30) - 0.5) / 0.25
    augment = StrongAugmentation(mean, std, jitter_strength=0.4, jitter_p=1.0, blur_p=1.0)
    out = augment(images, torch.Generator().manual_seed(1))
    again = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and torch.equal(out, again)
    rgb = out * 0.25 + 0.5
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    assert not torch.allclose(out, images)
    off = StrongAugmentation(mean, std, jitter_p=0.0, blur_p=0.0)(images, torch.Generator().manual_seed(1))
    assert torch.allclose(off, images, atol=1e-5)


def test_gaussian_blur_preserves_constant_images_and_mass():
    flat = torch.full((3, 9, 13), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0, 5), flat)
    spike = torch.zeros(3, 21, 21)
    spike[:, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 1.0, 7)
    assert torch.allclose(blurred.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert blurred[0, 10, 10] < 1.0
    assert kernel_sizes((128, 256)) == (13, 25) and kernel_sizes((10, 10)) == (3, 3)


def test_ema_alpha_warms_up_then_caps():
    assert ema_alpha(0, 0.999) == 0.0
    assert ema_alpha(1, 0.999) == 0.5
    assert ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert ema_alpha(10_000, 0.999) == 0.999


def test_update_teacher_is_the_exact_ema_of_parameters_and_float_buffers():
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()
    student(torch.randn(2, 3, 8, 8))  # moves the running stats and the batch counter
    after_student = student.state_dict()
    update_teacher(teacher, student, 0.75)
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * before[key] + 0.25 * after_student[key]
            assert torch.allclose(value, expected, atol=1e-7), key
        else:
            assert torch.equal(value, after_student[key]), key


def test_confidence_weight_is_the_fraction_of_sure_valid_pixels():
    confidence = torch.tensor([[[0.99, 0.5], [0.97, 0.968]], [[0.1, 0.2], [0.3, 0.999]]])
    assert torch.allclose(confidence_weight(confidence, 0.968), torch.tensor([0.75, 0.25]))
    valid = torch.tensor([[[True, True], [False, False]], [[False, False], [False, True]]])
    assert torch.allclose(confidence_weight(confidence, 0.968, valid), torch.tensor([0.5, 1.0]))
    none_valid = torch.zeros_like(valid)
    assert torch.equal(confidence_weight(confidence, 0.968, none_valid), torch.zeros(2))


def test_weighted_ce_scales_each_pixel_and_reduces_to_plain_ce_at_weight_one():
    logits = torch.randn(2, 5, 4, 4)
    labels = torch.randint(0, 5, (2, 4, 4))
    labels[0, 0, 0] = IGNORE_INDEX
    ones = torch.ones(2, 4, 4)
    assert torch.allclose(weighted_segmentation_ce(logits, labels, ones), segmentation_ce(logits, labels))
    half = weighted_segmentation_ce(logits, labels, 0.5 * ones)
    assert torch.allclose(half, 0.5 * segmentation_ce(logits, labels))
    weights = torch.rand(2, 4, 4)
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    keep = labels != IGNORE_INDEX
    assert torch.allclose(weighted_segmentation_ce(logits, labels, weights), (per_pixel * weights)[keep].sum() / keep.sum())


def test_rare_class_sampling_favours_rare_classes_and_only_draws_images_that_have_them():
    stats = ClassStatistics(frequency=np.array([0.90, 0.09, 0.01, 0.0]), images_with=[[0, 1, 2, 3], [1, 2], [3], []])
    probabilities = class_probabilities(stats, temperature=0.01)
    assert probabilities[3] == 0 and probabilities[2] > probabilities[1] > probabilities[0]
    assert torch.isclose(probabilities.sum(), torch.tensor(1.0, dtype=torch.float64))
    order = rare_class_order(stats, 0.01)
    picks = order(torch.Generator().manual_seed(0), 400)
    drawn = [index for index, _ in picks]
    assert len(drawn) == 400 and set(drawn) <= {0, 1, 2, 3}
    assert all(index in stats.images_with[c] for index, c in picks)   # each image has the class it was drawn for
    assert drawn.count(3) > drawn.count(0)  # the image with the rarest class comes up most
    assert picks == order(torch.Generator().manual_seed(0), 400)


def test_rare_class_statistics_keep_only_images_with_enough_pixels_of_a_class():
    from uda_adapt.adapt.data.rare_class import class_statistics
    from tests.adapt.fixtures import LabelMaps as Labels

    few, many = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    few[0, :5] = 1          # 5 pixels of class 1
    many[:5, :] = 1         # 50
    stats = class_statistics(Labels([few, many]), 3, min_pixels=10)
    assert stats.images_with[1] == [1] and stats.images_with[0] == [0, 1] and stats.images_with[2] == []
    assert np.isclose(stats.frequency[1], 55 / 200)       # the frequency counts every pixel
    assert class_statistics(Labels([few, many]), 3).images_with[1] == [0, 1]
    with pytest.raises(UserError, match="rcs_min_pixels"):
        rare_class_order(class_statistics(Labels([few, many]), 3, min_pixels=1000), 0.01)


class RandomCrops(torch.utils.data.Dataset):
    """A 'crop' that shows class 1 (20 pixels) one time in five, as a random crop of a rare class would."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        label = torch.zeros(8, 8, dtype=torch.long)
        if torch.rand(()) < 0.2:
            label[:2, :] = 1
        return torch.rand(3, 8, 8), label


def test_rare_class_crops_are_redrawn_until_they_show_the_class():
    from uda_adapt.adapt.train.batches import SeededSamples

    keys = [(0, position, position % 4, 1) for position in range(300)]
    plain, seeking = SeededSamples(RandomCrops(), seed=0), SeededSamples(RandomCrops(), seed=0, min_class_pixels=10)
    shown = lambda samples: sum(int((samples[key][1] == 1).sum() > 10) for key in keys) / len(keys)
    assert shown(plain) < 0.35              # the precondition: most first draws miss the class
    assert shown(seeking) > 0.85            # 1 - 0.8^11 of them find it
    for key in keys[:50]:
        first, again = plain[key], seeking[key]
        if int((first[1] == 1).sum()) > 10:   # a first draw that shows the class is kept as it is
            assert torch.equal(first[0], again[0])
        assert torch.equal(seeking[key][0], again[0])   # redraws are seeded: resume gives the same crop
    # Without a class in the key nothing is redrawn: the stream of a run without RCS is unchanged.
    assert all(torch.equal(plain[key[:3]][0], seeking[key[:3]][0]) for key in keys[:20])


def test_reestimate_batchnorm_uses_the_data_statistics_and_touches_no_weight():
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2, 3).view(2, 3, 1, 1))
    weights = {k: v.clone() for k, v in model.named_parameters()}
    images = 3.0 + 2.0 * torch.randn(16, 3, 8, 8)
    dataset = [(image, 0) for image in images]
    assert reestimate_batchnorm(model, dataset, torch.device("cpu"), batch_size=4) == 1
    bn = model[1]
    assert torch.allclose(bn.running_mean, images[:, :2].mean(dim=(0, 2, 3)), atol=1e-4)
    assert not model.training and bn.momentum == 0.1
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key])


def test_poly_lr_warms_up_linearly_then_decays():
    from uda_adapt.adapt.train.optim import poly_lr

    assert poly_lr(1.0, 0, 100, 1.0, warmup=10) == pytest.approx(1e-6)
    assert poly_lr(1.0, 5, 100, 1.0, warmup=10) == pytest.approx(0.5, rel=1e-5)
    assert poly_lr(1.0, 10, 100, 1.0, warmup=10) == pytest.approx(0.9)
    assert poly_lr(1.0, 50, 100, 0.0) == 1.0


def test_correlation_attention_ignores_masked_keys():
    from uda_adapt.adapt.models.correlation import CorrelationModule, attention, naive_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 12, 5), torch.randn(2, 12, 5), torch.randn(2, 12, 3)
    keep = torch.rand(2, 1, 12) > 0.3
    keep[..., 0] = True
    assert torch.allclose(attention(q, k, v, 0.5, key_mask=keep), naive_attention(q, k, v, 0.5, key_mask=keep), atol=1e-5)
    # Changing what a masked key holds changes nothing.
    v2 = v.clone()
    v2[~keep.squeeze(1)] = 100.0
    assert torch.allclose(attention(q, k, v, 0.5, key_mask=keep), attention(q, k, v2, 0.5, key_mask=keep), atol=1e-5)
    module = CorrelationModule(4, dim=8, value="learned", spatial="none")
    with torch.no_grad():
        module.gamma.fill_(1.0)
    p = torch.softmax(torch.randn(1, 4, 3, 4), dim=1)
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    valid[:, :, 3] = False
    noisy = p.clone()
    noisy[:, :, :, 3] = torch.softmax(torch.randn(1, 4, 3), dim=1)
    # What lies under the padding (column 3) reaches no valid pixel once it is masked.
    out, out_noisy = module(p, valid)[..., :3], module(noisy, valid)[..., :3]
    assert not torch.allclose(module(p)[..., :3], module(noisy)[..., :3])
    assert torch.allclose(out, out_noisy, atol=1e-6)


def test_correlation_transfer_loss_counts_only_masked_valid_pixels():
    from uda_adapt.adapt.losses import correlation_transfer_loss, valid_mask_at
    from uda_adapt.adapt.models.correlation import CorrelationModule

    module = CorrelationModule(3, dim=8, value="learned", spatial="none").eval()
    logits, teacher = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    valid = torch.tensor([[[True, True], [True, False]]])
    region = torch.tensor([[[True, False], [True, True]]])
    loss = correlation_transfer_loss(module, logits, teacher, valid=valid, mask=region)
    target = module(torch.softmax(teacher, 1), valid=valid)
    kl = (target * (torch.log(target) - torch.log_softmax(logits, 1))).sum(1)
    assert torch.allclose(loss, kl[0][(valid & region)[0]].mean(), atol=1e-6)
    pixels = torch.ones(1, 8, 8, dtype=torch.bool)
    pixels[0, 7, 7] = False  # one padded pixel invalidates its 4x4 cell, no other
    assert valid_mask_at(pixels, (2, 2)).tolist() == [[[True, True], [True, False]]]


def test_batch_statistics_normalises_by_the_batch_and_leaves_running_stats_alone():
    from uda_adapt.adapt.train.batchnorm import batch_statistics

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = 5.0 + 3.0 * torch.randn(4, 3, 6, 6)
    with torch.no_grad(), batch_statistics(model):
        out = model(images)
        assert not model[2].training  # only BatchNorm switches mode
    features = model[0](images)
    expected = torch.nn.functional.batch_norm(features, None, None, model[1].weight, model[1].bias, training=True)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not model.training and not model[1].training and model[1].momentum == 0.1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
