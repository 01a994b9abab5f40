"""Each label-free measure on hand-made probability maps and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uda_adapt.common import label_free as lf


def one_hot(masks: np.ndarray, num_classes: int, sure: float = 1.0) -> np.ndarray:
    """(N, h, w) ids -> (N, C, h, w) with `sure` on the id and the rest spread evenly."""
    rest = (1.0 - sure) / (num_classes - 1)
    probs = np.full((masks.shape[0], num_classes, *masks.shape[1:]), rest)
    np.put_along_axis(probs, masks[:, None], sure, axis=1)
    return probs


def test_max_prob_and_entropy_of_sure_and_uniform_maps():
    masks = np.zeros((2, 4, 4), np.int64)
    sure, uniform = one_hot(masks, 4, 1.0), np.full((2, 4, 4, 4), 0.25)
    assert lf.mean_max_prob(sure) == pytest.approx(1.0)
    assert lf.mean_max_prob(uniform) == pytest.approx(0.25)
    assert lf.mean_entropy(sure) == pytest.approx(0.0, abs=1e-9)
    assert lf.mean_entropy(uniform) == pytest.approx(1.0)
    half = one_hot(masks, 4, 0.7)
    assert 0.0 < lf.mean_entropy(half) < 1.0 and lf.mean_max_prob(half) == pytest.approx(0.7)


def test_class_share_and_its_distance():
    masks = np.array([[[0, 0], [1, 2]]])
    share = lf.class_share(masks, 3)
    assert share.tolist() == [0.5, 0.25, 0.25]
    assert lf.share_distance(share, share) == 0.0
    assert lf.share_distance(np.array([1.0, 0, 0]), np.array([0, 0, 1.0])) == pytest.approx(1.0)


def test_classmix_pastes_half_of_a_classes_and_labels_follow():
    rng = np.random.default_rng(0)
    mask_a = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    mask_b = np.full((2, 4), 5)
    image_a, image_b = np.full((2, 4, 3), 10, np.uint8), np.full((2, 4, 3), 200, np.uint8)
    image, label = lf.classmix(image_a, image_b, mask_a, mask_b, rng)
    pasted = label != 5
    assert len(np.unique(label[pasted])) == 2                # half of A's four classes
    assert (image[pasted] == 10).all() and (image[~pasted] == 200).all()
    assert (label[pasted] == mask_a[pasted]).all()


def _colour_predictor(num_classes: int = 4):
    """Class = brightness bucket of the red channel: a perfectly consistent 'model'."""
    def predict(images: np.ndarray) -> np.ndarray:
        return np.minimum(images[..., 0].astype(np.int64) * num_classes // 256, num_classes - 1)
    return predict


def test_consistent_model_scores_full_agreement_and_mix_accuracy():
    rng = np.random.default_rng(1)
    images = np.zeros((3, 8, 8, 3), np.uint8)
    images[..., 0] = np.kron(rng.integers(0, 4, (3, 2, 2)) * 64 + 32, np.ones((4, 4), np.int64))
    predict = _colour_predictor()
    # brightness/contrast move a bucket centre by < 32: the prediction survives the augmentation
    values = lf.measure_images(predict, images, num_classes=4)
    assert values["classmix_accuracy"] == pytest.approx(1.0)
    assert values["augment_agreement"] == pytest.approx(1.0)
    assert values["mean_max_prob"] is None and values["temporal_flicker"] is None


def test_noisy_model_scores_lower_than_consistent_one():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    consistent = _colour_predictor()

    def noisy(batch: np.ndarray) -> np.ndarray:
        return rng.integers(0, 4, batch.shape[:3])

    good = lf.measure_images(consistent, images, num_classes=4)
    bad = lf.measure_images(noisy, images, num_classes=4)
    assert bad["augment_agreement"] < good["augment_agreement"]
    assert bad["classmix_accuracy"] < good["classmix_accuracy"]


def test_augment_agreement_undoes_the_flip():
    masks = np.array([[[0, 1, 2]]])
    assert lf.augment_agreement_per_image(masks, masks[..., ::-1]).tolist() == [1.0]
    assert lf.augment_agreement_per_image(masks, masks).tolist() == pytest.approx([1 / 3])


def test_flicker_counts_only_still_pixels():
    still = np.full((2, 4, 4, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 4), np.int64)
    masks[1, 0, :] = 1                               # 4 of 16 still pixels change class
    assert lf.temporal_flicker(still, masks) == pytest.approx(0.25)
    moving = still.copy()
    moving[1, 0, :] = 250                            # ... but there the image changed too
    assert lf.temporal_flicker(moving, masks) == pytest.approx(0.0)
    moving[1] = 250
    assert lf.temporal_flicker(moving, masks) is None   # nothing still: undefined


def test_spearman_with_ties_and_constants():
    assert lf.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert lf.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert lf.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([0.5, 0.5, 2], [0, 1, 2])[0, 1])
    assert math.isnan(lf.spearman([1, 1, 1], [1, 2, 3]))


def test_oriented_makes_higher_better():
    assert lf.oriented("mean_entropy", 0.2) > lf.oriented("mean_entropy", 0.5)
    assert lf.oriented("augment_agreement", 0.9) > lf.oriented("augment_agreement", 0.5)
    assert lf.VALIDATED in lf.MEASURES


def test_importable_without_torch():
    import subprocess
    import sys

    code = "import sys, uda_adapt.common.label_free; assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
