import numpy as np
import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.pseudo_labels import (
    ThresholdState,
    class_balanced_pseudo_labels,
    select_pseudo_labels,
    update_thresholds,
)

C = 3


def probs_with_confidences(confidences: dict[int, torch.Tensor]) -> torch.Tensor:
    """(1, C, 1, N) probabilities whose pixels predict class c with the given max probabilities."""
    columns = []
    for c, conf in confidences.items():
        p = ((1 - conf) / (C - 1))[None, :].repeat(C, 1)
        p[c] = conf
        columns.append(p)
    return torch.cat(columns, dim=1)[None, :, None, :]


def random_probs(seed, shape=(2, C, 6, 8), sharpness=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(shape, generator=g), dim=1)


def test_update_follows_iast_formula():
    state = ThresholdState.initial(C)
    probs = random_probs(0)
    new = update_thresholds(state, probs, alpha=0.2, beta=0.9, gamma=8.0)
    conf, pred = probs.max(dim=1)
    for c in range(C):
        values = np.concatenate([[0.9], conf[pred == c].numpy()])
        pct = np.percentile(values, 100 * (1 - 0.2 * 0.9**8))
        assert abs(new.thresholds[c].item() - (0.9 * 0.9 + 0.1 * pct)) < 1e-6


def test_thresholds_stay_in_unit_interval():
    state = ThresholdState.initial(C)
    certain = torch.zeros(1, C, 4, 4)
    certain[:, 0] = 1.0
    for _ in range(100):
        state = update_thresholds(state, certain, beta=0.0)
    assert abs(state.thresholds[0].item() - 0.999) < 1e-6  # reached 1, put back as in IAST
    for seed in range(50):
        state = update_thresholds(state, random_probs(seed, sharpness=0.1))
        assert ((state.thresholds > 0) & (state.thresholds <= 1)).all()


def test_absent_class_keeps_its_threshold():
    probs = probs_with_confidences({0: torch.linspace(0.5, 1.0, 20)})
    state = update_thresholds(ThresholdState(torch.tensor([0.9, 0.7, 0.8])), probs)
    torch.testing.assert_close(state.thresholds[1:], torch.tensor([0.7, 0.8]))


def test_higher_thresholds_ignore_more_pixels():
    probs = random_probs(1)
    ignored = [(select_pseudo_labels(probs, t) == IGNORE_INDEX).sum().item() for t in (0.0, 0.4, 0.6, 0.8, 1.0)]
    assert ignored == sorted(ignored)
    assert ignored[0] == 0 and ignored[-1] > ignored[1]


def test_labels_come_from_the_argmax_only():
    probs = random_probs(2)
    labels = select_pseudo_labels(probs, torch.tensor([0.5, 0.6, 0.7]))
    kept = labels != IGNORE_INDEX
    assert torch.equal(labels[kept], probs.argmax(dim=1)[kept])
    conf = probs.max(dim=1).values
    assert (conf[kept] >= torch.tensor([0.5, 0.6, 0.7])[labels[kept]]).all()
    assert labels.dtype == torch.long and labels.shape == (2, 6, 8)


def test_rare_low_confidence_class_still_gets_pixels():
    # Class 0 is frequent and confident, class 1 rare and never above 0.85: a single global
    # threshold of 0.9 never labels it, the class-balanced thresholds do after a few batches.
    probs = probs_with_confidences({0: torch.linspace(0.9, 1.0, 200), 1: torch.linspace(0.5, 0.85, 20)})
    assert not (select_pseudo_labels(probs, 0.9) == 1).any()
    state = ThresholdState.initial(C)
    for _ in range(30):
        labels, state = class_balanced_pseudo_labels(probs, state)
    assert (labels == 1).sum().item() > 0
    assert state.thresholds[1] < state.thresholds[0]


def test_pseudo_labels_are_deterministic():
    runs = []
    for _ in range(2):
        state = ThresholdState.initial(C)
        for seed in range(5):
            labels, state = class_balanced_pseudo_labels(random_probs(seed), state)
        runs.append((labels, state.thresholds))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
