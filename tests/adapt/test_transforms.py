"""Paired transforms: shapes, label integrity, padding, alignment, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize_image
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import make_folder_dataset


def sample(size=(40, 60), seed=0):
    """An image whose red channel encodes its label (10 * id), so alignment can be checked."""
    rng = np.random.default_rng(seed)
    label = np.kron(rng.integers(0, 19, size=(size[0] // 4, size[1] // 4)), np.ones((4, 4), np.int64)).astype(np.uint8)
    image = np.stack([label * 10, rng.integers(0, 256, size), np.zeros(size, np.int64)], -1).astype(np.uint8)
    return image, label


def denormalize(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255).round().permute(1, 2, 0).numpy()


def test_train_transform_outputs_crop_sized_tensors_with_only_known_ids():
    image, label = sample()
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=(24, 32), scale_range=(0.5, 2.0), jitter=0.3)
    for _ in range(10):
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 24, 32) and out_image.dtype == torch.float32
        assert out_label.shape == (24, 32) and out_label.dtype == torch.int64
        # NEAREST only: no blended ids can appear, just the originals and padding
        assert set(out_label.unique().tolist()) <= set(np.unique(label).tolist()) | {IGNORE_INDEX}


def test_crop_larger_than_image_pads_label_with_ignore_and_image_with_mean():
    image, label = sample(size=(8, 12))
    out_image, out_label = TrainTransform(crop_size=(16, 20), scale_range=(1.0, 1.0), flip=False)(image, label)
    assert bool((out_label[8:] == IGNORE_INDEX).all()) and bool((out_label[:, 12:] == IGNORE_INDEX).all())
    np.testing.assert_array_equal(out_label[:8, :12].numpy(), label)
    assert bool((out_image[:, 8:] == 0).all()) and bool((out_image[:, :, 12:] == 0).all())


def test_image_and_label_stay_aligned_through_crop_and_flip():
    image, label = sample()
    transform = TrainTransform(crop_size=(20, 28), scale_range=(1.0, 1.0), flip=True)
    flipped = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        np.testing.assert_allclose(denormalize(out_image)[..., 0], out_label.numpy() * 10.0, atol=1)
        # find where the crop came from, and whether it was mirrored
        flipped.add(not _occurs_in(out_label.numpy(), label))
    assert flipped == {True, False}


def _occurs_in(patch: np.ndarray, label: np.ndarray) -> bool:
    h, w = patch.shape
    return any(np.array_equal(label[y:y + h, x:x + w], patch)
               for y in range(label.shape[0] - h + 1) for x in range(label.shape[1] - w + 1))


def test_base_size_then_scale():
    image, label = sample(size=(40, 60))
    _, out_label = TrainTransform(crop_size=(100, 100), base_size=(20, 30), scale_range=(1.0, 1.0), flip=False)(image, label)
    assert bool((out_label[:20, :30] != IGNORE_INDEX).all()) and bool((out_label[20:] == IGNORE_INDEX).all())


def test_same_seed_same_augmentation_different_seed_different():
    image, label = sample()
    transform = TrainTransform(crop_size=(16, 16), jitter=0.4)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(transform(image, label))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_dataloader_workers_are_deterministic_under_manual_seed(tmp_path):
    root = make_folder_dataset(tmp_path, num=4, size=(24, 32))
    ds = open_dataset("folder", root, "train", require_labels=True, transform=TrainTransform(crop_size=(12, 12)))

    def first_batch():
        torch.manual_seed(7)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
        return next(iter(loader))

    a, b = first_batch(), first_batch()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_jitter_changes_colours_but_not_labels():
    image, label = sample()
    plain = TrainTransform(crop_size=(40, 60), scale_range=(1.0, 1.0), flip=False)
    jittered = TrainTransform(crop_size=(40, 60), scale_range=(1.0, 1.0), flip=False, jitter=0.5)
    torch.manual_seed(3)
    image_a, label_a = plain(image, label)
    torch.manual_seed(3)
    image_b, label_b = jittered(image, label)
    assert torch.equal(label_a, label_b) and not torch.allclose(image_a, image_b)
    pixels = denormalize(image_b)
    assert pixels.min() >= -0.5 and pixels.max() <= 255.5


def test_eval_transform_resizes_the_image_only():
    image, label = sample(size=(40, 60))
    out_image, out_label = EvalTransform(size=(20, 30))(image, label)
    assert out_image.shape == (3, 20, 30)
    np.testing.assert_array_equal(out_label.numpy(), label)
    assert EvalTransform()(image, label)[0].shape == (3, 40, 60)


def test_normalize_image():
    image = np.full((2, 3, 3), 255, np.uint8)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    out = normalize_image(image)
    assert out.shape == (3, 2, 3)
    torch.testing.assert_close(out[:, 0, 0], expected)


@pytest.mark.parametrize("kwargs, key", [
    ({"crop_size": (0, 10)}, "crop_size"),
    ({"crop_size": (8, 8), "scale_range": (1.5, 0.5)}, "scale_range"),
    ({"crop_size": (8, 8), "jitter": 1.5}, "jitter"),
])
def test_invalid_settings_are_user_errors(kwargs, key):
    with pytest.raises(UserError, match=key):
        TrainTransform(**kwargs)
