"""Confusion matrix, IoU conventions, SYNTHIA protocols, and the evaluate() loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, SYNTHIA13_CLASSES, SYNTHIA16_CLASSES
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.evaluation import ConfusionMatrix, EvalResult, evaluate
from tests.adapt.fixtures import make_folder_dataset


def test_hand_computed_example():
    target = np.array([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    # IoU = TP / (TP + FP + FN); the ignored pixel (predicted 2) counts nowhere
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)


def test_accumulates_over_the_split_not_per_image():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 0]))   # image 1: perfect on class 0
    cm.update(torch.tensor([1]), torch.tensor([0]))                     # image 2: one pixel wrong
    assert cm.iou()[0] == pytest.approx(4 / 5) and cm.iou()[1] == 0.0


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1, 3]), np.array([0, 1, 0, 1]))
    iou = cm.iou()
    assert math.isnan(iou[2])           # in neither labels nor predictions
    assert iou[3] == 0.0                # predicted but never in the labels: counts as 0
    assert cm.miou() == pytest.approx(np.mean([iou[0], iou[1], iou[3]]))


def test_matches_a_direct_per_class_count_on_random_data():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(3, 50, 70))
    target[rng.random(target.shape) < 0.1] = IGNORE_INDEX
    pred = rng.integers(0, 6, size=target.shape)
    cm = ConfusionMatrix(6)
    for p, t in zip(pred, target):
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    valid = target != IGNORE_INDEX
    for c in range(6):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c) & valid)
        fn = np.sum((pred != c) & (target == c))
        assert cm.iou()[c] == pytest.approx(tp / (tp + fp + fn))


def test_synthia_protocols_are_subsets_of_the_same_matrix():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 19, size=5000)
    pred = np.where(rng.random(5000) < 0.6, target, rng.integers(0, 19, size=5000))
    cm = ConfusionMatrix(19)
    cm.update(pred, target)
    iou = dict(zip(CITYSCAPES_CLASSES, cm.iou()))
    assert cm.miou(protocol="19") == pytest.approx(np.mean(list(iou.values())))
    assert cm.miou(protocol="16") == pytest.approx(np.mean([iou[c] for c in SYNTHIA16_CLASSES]))
    assert cm.miou(protocol="13") == pytest.approx(np.mean([iou[c] for c in SYNTHIA13_CLASSES]))
    # selection is by name: a reordered class list picks the same classes
    order = list(reversed(range(19)))
    reordered = ConfusionMatrix(19)
    reordered.update(np.array(order)[pred], np.array(order)[target])
    names = [CITYSCAPES_CLASSES[i] for i in order]
    assert reordered.miou(names, "13") == pytest.approx(cm.miou(protocol="13"))


def test_protocol_on_other_classes_is_a_user_error():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2]), np.array([0, 1, 2]))
    with pytest.raises(UserError, match="protocol 16 .* lacks road"):
        cm.miou(["a", "b", "c"], "16")
    with pytest.raises(UserError, match="valid protocols: 19, 16, 13"):
        cm.miou(["a", "b", "c"], "7")


def test_out_of_range_ids_are_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError):
        cm.update(np.array([0, 1]), np.array([0, 5]))


def one_hot_logits(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(1, H, W) ids -> (1, C, H, W) logits whose argmax is the label (ignored pixels -> class 0)."""
    ids = torch.where(label == IGNORE_INDEX, 0, label)
    return F.one_hot(ids, num_classes).permute(0, 3, 1, 2).float()


def test_evaluate_perfect_model_at_full_label_resolution(tmp_path):
    root = make_folder_dataset(tmp_path, num=3, size=(32, 48))
    ds = open_dataset("folder", root, "val", require_labels=True)
    labels = iter([torch.from_numpy(ds.load(i)[1]).long()[None] for i in range(len(ds))])
    seen_inputs = []

    def model_fn(image):
        seen_inputs.append(tuple(image.shape))
        # predict at half resolution (as a stride-2 network would); evaluate upsamples to the label
        full = one_hot_logits(next(labels), 19)
        return F.avg_pool2d(full, 2)

    ds.transform = EvalTransform(size=(16, 24))
    result = evaluate(model_fn, ds, progress=False)
    assert seen_inputs == [(1, 3, 16, 24)] * 3
    assert result.num_images == 3
    # labels are 8x8 blocks, so half-resolution logits upsampled back are exact
    assert result.miou == pytest.approx(1.0) and result.pixel_accuracy == pytest.approx(1.0)
    assert result.miou16 == pytest.approx(1.0) and result.miou13 == pytest.approx(1.0)


def test_evaluate_counts_every_full_resolution_pixel(tmp_path, monkeypatch):
    root = make_folder_dataset(tmp_path, num=2, size=(32, 48), classes=3)
    ds = open_dataset("folder", root, "val", require_labels=True)
    shapes = []
    original = ConfusionMatrix.update

    def spy(self, pred, target):
        shapes.append(tuple(target.shape))
        original(self, pred, target)

    monkeypatch.setattr(ConfusionMatrix, "update", spy)
    # always class 0, at a tiny output size: evaluate must upsample to each full label
    result = evaluate(lambda image: torch.zeros(1, 3, 4, 6), ds, progress=False)
    assert shapes == [(1, 32, 48)] * 2
    assert result.miou16 is None and result.miou13 is None
    assert set(result.per_class_iou) == {"class0", "class1", "class2"}


def test_evaluate_refuses_unlabelled_data_and_wrong_class_count(tmp_path):
    root = make_folder_dataset(tmp_path, num=1, labelled_splits=("val",))
    with pytest.raises(UserError, match="needs labels"):
        evaluate(lambda x: x, open_dataset("folder", root, "train", require_labels=False), progress=False)
    ds = open_dataset("folder", root, "val", require_labels=True)
    with pytest.raises(UserError, match="19 classes"):
        evaluate(lambda x: torch.zeros(1, 5, 4, 4), ds, progress=False)


def test_result_json_and_table():
    cm = ConfusionMatrix(19)
    cm.update(np.arange(18), np.arange(18))   # 'bicycle' (18) absent: NaN
    result = EvalResult.from_confusion(cm, CITYSCAPES_CLASSES, num_images=1)
    data = json.loads(result.to_json())
    assert data["per_class_iou"]["bicycle"] is None and data["miou"] == pytest.approx(1.0)
    table = result.format_table()
    assert "bicycle" in table and "n/a" in table and "mIoU (SYNTHIA 13)" in table
    rows = [line for line in table.splitlines() if line.startswith(("road", "traffic light", "bicycle"))]
    assert len({len(r) for r in rows}) == 1   # values right-aligned in one column


def test_per_class_accuracy_and_the_confusion_matrix_reach_the_json():
    target = np.array([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    np.testing.assert_allclose(cm.class_accuracy(), [1 / 2, 3 / 3, 1 / 2])
    result = EvalResult.from_confusion(cm, ["a", "b", "c"], num_images=1)
    data = json.loads(result.to_json())
    assert data["confusion_matrix"] == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]    # rows: labels, columns: predictions
    assert data["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    assert "Acc %" in result.format_table()


def test_a_class_never_labelled_has_no_accuracy():
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 1]), np.array([0, 0]))
    accuracy = cm.class_accuracy()
    assert accuracy[0] == 0.0 and math.isnan(accuracy[1])
    assert json.loads(EvalResult.from_confusion(cm, ["a", "b"], 1).to_json())["per_class_accuracy"]["b"] is None


def test_eval_saves_predictions_named_after_the_images_and_draws_the_matrix(tmp_path):
    from PIL import Image

    from uda_adapt.adapt.eval_checkpoint import evaluate_checkpoint
    from tests.export.conftest import small_checkpoint

    root = make_folder_dataset(tmp_path / "data", num=2, size=(32, 48))
    ckpt = small_checkpoint(tmp_path / "small.pt")
    predictions = tmp_path / "predictions"
    result, out = evaluate_checkpoint(ckpt, root, size=(32, 48), device="cpu", predictions_dir=predictions,
                                      mask_format="palette")
    saved = sorted(predictions.iterdir())
    assert [p.name for p in saved] == ["val_0000.png", "val_0001.png"]          # the images' stems
    ids = [np.asarray(Image.open(p)) for p in saved]
    assert all(i.shape == (32, 48) for i in ids)
    # The saved ids are what was scored: the matrix rebuilt from them and the labels is the JSON's.
    ds = open_dataset("folder", root, "val", require_labels=True)
    rebuilt = ConfusionMatrix(19)
    for index, prediction in enumerate(ids):
        rebuilt.update(prediction.astype(np.int64), ds.load(index)[1])
    assert json.loads(out.read_text())["confusion_matrix"] == rebuilt.matrix.tolist()
    picture = out.with_name(f"{out.stem}_confusion.png")
    assert Image.open(picture).size[0] > 19 * 20
