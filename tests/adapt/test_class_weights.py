"""Class-weighted source loss (`source.class_weights`, `self_train.mean_teacher.source_class_weights`):
ENet's weights from the source labels' class shares, in the source stage and for the mean
teacher's source pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uda_adapt.adapt.class_weights import class_weights, describe, source_class_weights
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.losses import segmentation_ce
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import LabelMaps
from tests.adapt.test_recipe import _tiny_state


def test_enet_weights_follow_the_formula_and_average_one_per_pixel():
    share = np.array([0.6, 0.3, 0.099, 0.001, 0.0])
    weights = class_weights(share, "enet")
    raw = [1 / math.log(1.02 + p) for p in share[:4]]
    scale = sum(p * w for p, w in zip(share[:4], raw))
    assert weights == pytest.approx([w / scale for w in raw] + [0.0], rel=1e-5)
    assert float((share * weights).sum()) == pytest.approx(1.0, rel=1e-5)      # a source pixel weighs 1 on average
    assert list(np.argsort(weights[:4])) == [0, 1, 2, 3]                     # rarer is heavier
    assert weights[3] / weights[0] <= 1 / math.log(1.02) / 1.0               # bounded, as ENet's c = 1.02 makes it
    assert class_weights(share, "none") is None
    assert class_weights(share * 7, "enet") == pytest.approx(weights)        # counts or shares alike
    milder = class_weights(share, "enet_sqrt")
    assert milder == pytest.approx([w / sum(p * w for p, w in zip(share[:4], np.sqrt(raw))) for w in np.sqrt(raw)] + [0.0], rel=1e-5)
    assert float((share * milder).sum()) == pytest.approx(1.0, rel=1e-5)
    assert 1 < milder[3] / milder[0] < weights[3] / weights[0]               # the same order, a smaller spread


@pytest.mark.parametrize("bad", [np.zeros(3), np.array([0.5, -0.1, 0.6]), np.array([np.nan, 1.0]), np.ones((2, 2))])
def test_weights_refuse_what_is_not_a_class_share(bad):
    with pytest.raises(ValueError):
        class_weights(bad, "enet")


def test_weighted_ce_scales_each_pixel_by_its_label():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    labels[0, 0, :] = 255
    assert (labels == 2).any() and (labels == 255).any()                     # the precondition: both matter
    plain = segmentation_ce(logits, labels)
    assert segmentation_ce(logits, labels, class_weight=np.ones(3, np.float32)) == pytest.approx(float(plain), rel=1e-6)
    weight = torch.tensor([1.0, 1.0, 3.0])
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    expected = (per_pixel * weight[labels.clamp(max=2)] * (labels != 255)).sum() / (labels != 255).sum()
    got = segmentation_ce(logits, labels, class_weight=weight)
    assert float(got) == pytest.approx(float(expected), rel=1e-6) and float(got) != pytest.approx(float(plain))


def test_bad_weighting_is_refused_when_the_config_loads():
    with pytest.raises(UserError, match="class_weights"):
        load_config(TrainConfig, None, ["source.class_weights=median"])
    cfg = load_config(TrainConfig, None, ["source.class_weights=enet", "self_train.mean_teacher.source_class_weights=enet"])
    assert cfg.source.class_weights == "enet" and cfg.self_train.mean_teacher.source_class_weights == "enet"
    assert TrainConfig().source.class_weights == "none" == TrainConfig().self_train.mean_teacher.source_class_weights


def test_source_weights_come_from_the_labels_shares():
    labels = [np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, 0, 2, 255]], np.uint8)]
    weights = source_class_weights(LabelMaps(labels), 4, "enet")
    assert weights == pytest.approx(class_weights(np.array([5, 1, 1, 0]) / 7, "enet"))
    assert weights[3] == 0 and source_class_weights(LabelMaps(labels), 4, "none") is None
    assert describe(weights, ["a", "b", "c", "d"]).startswith("class weights: heaviest ")


def _one_weighted_step(monkeypatch, pasted_class_weights: bool):
    """One mean-teacher step with class weights on its source pixels: the weights, the kwargs the
    source crops' loss got, the mix's labels and pixel weights, and the paste mask."""
    import uda_adapt.adapt.train.mean_teacher_stage as stage

    cfg = TrainConfig()
    cfg.self_train.mean_teacher.confidence_threshold = 0.3
    cfg.self_train.mean_teacher.pasted_class_weights = pasted_class_weights
    state = _tiny_state(cfg)
    state.source_class_weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    seen: dict[str, list] = {"plain": [], "mixed": [], "paste": []}
    real_ce, real_weighted, real_paste = stage.segmentation_ce, stage.weighted_segmentation_ce, stage.paste_masks
    monkeypatch.setattr(stage, "segmentation_ce", lambda logits, labels, **kw: seen["plain"].append(kw) or real_ce(logits, labels, **kw))
    monkeypatch.setattr(stage, "weighted_segmentation_ce",
                        lambda logits, labels, weights: seen["mixed"].append((labels.clone(), weights.clone())) or real_weighted(logits, labels, weights))
    monkeypatch.setattr(stage, "paste_masks", lambda *a: seen["paste"].append(real_paste(*a)) or seen["paste"][-1])
    stage.mean_teacher_step(state, cfg, 0, torch.device("cpu"))
    labels, weights = seen["mixed"][0]
    return state.source_class_weight, seen["plain"][0], labels, weights, seen["paste"][0]


def test_mean_teacher_weighs_source_pixels_by_class_in_both_losses(monkeypatch):
    class_weight, crops, labels, weights, pasted = _one_weighted_step(monkeypatch, pasted_class_weights=True)
    assert torch.equal(crops["class_weight"], class_weight)
    assert pasted.any() and (~pasted).any()          # the precondition: both kinds of pixel in the mix
    assert torch.equal(weights[pasted], class_weight[labels[pasted]])
    assert len(set(weights[pasted].tolist())) > 1    # more than one class pasted, each at its own weight
    assert len(set(weights[~pasted].tolist())) == 1  # target pixels keep the teacher's one confidence weight


def test_pasted_pixels_can_keep_weight_one_while_the_source_crops_are_weighted(monkeypatch):
    class_weight, crops, _, weights, pasted = _one_weighted_step(monkeypatch, pasted_class_weights=False)
    assert torch.equal(crops["class_weight"], class_weight)   # the crops are still weighted
    assert pasted.any() and torch.all(weights[pasted] == 1)
