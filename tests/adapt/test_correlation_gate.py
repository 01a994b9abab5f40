"""The correlation gate (benchmarks/correlation_gate.py): its verdict, its precision curve, and a
whole run on a tiny model and tiny data that writes both reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import correlation_gate as gate
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform, TrainTransform
from uda_adapt.adapt.models import build_segmenter
from tests.adapt.fixtures import make_folder_dataset

CLASSES = ["road", "car", "pole"]


def test_verdict_passes_a_module_that_beats_the_teacher_everywhere():
    teacher = {"road": 0.80, "car": 0.50, "pole": 0.10}
    module = {"road": 0.82, "car": 0.51, "pole": 0.10}
    verdict = gate.gate_verdict(teacher, module, [0.9, 0.8], [0.92, 0.81])
    assert verdict["passed"], verdict["reasons"]
    assert verdict["tune_miou_delta"] == pytest.approx(0.01)


def test_verdict_fails_a_class_that_loses_more_than_two_points_even_when_the_mean_rises():
    teacher = {"road": 0.60, "car": 0.50, "pole": 0.10}
    module = {"road": 0.75, "car": 0.50, "pole": 0.07}           # mean +4 points, pole -3
    verdict = gate.gate_verdict(teacher, module, [0.9], [0.95])
    assert verdict["tune_miou_delta"] > 0
    assert not verdict["passed"]
    assert verdict["worst_class"] == "pole"
    assert any("pole loses 3.0 points" in reason for reason in verdict["reasons"])
    # 2 points exactly is allowed
    assert gate.gate_verdict(teacher, {**module, "pole": 0.08}, [0.9], [0.95])["passed"]


def test_verdict_fails_without_a_better_precision_curve_or_a_better_miou():
    teacher = {"road": 0.6, "car": None}
    better = {"road": 0.7, "car": 0.4}                            # car: unscored in the teacher, skipped
    assert gate.per_class_delta(teacher, better) == {"road": pytest.approx(0.1)}
    assert not gate.gate_verdict(teacher, better, [0.9, 0.8], [0.9, 0.8])["passed"]        # (iii) level
    assert not gate.gate_verdict(teacher, {"road": 0.6}, [0.9], [0.95])["passed"]          # (ii) level


def test_precision_at_coverage_matches_a_sort_of_the_pixels():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 4000)
    correct = rng.uniform(0, 1, 4000) < confidence               # sure pixels are right more often
    bins = 1000
    index = (confidence * bins).astype(int)
    total = np.bincount(index, minlength=bins)
    right = np.bincount(index, weights=correct, minlength=bins)
    curve = gate.precision_at_coverages(total, right, (0.1, 0.5, 1.0))
    ordered = correct[np.argsort(-confidence)]
    expected = [ordered[: int(c * 4000)].mean() for c in (0.1, 0.5, 1.0)]
    np.testing.assert_allclose(curve, expected, atol=0.01)
    assert curve[0] > curve[1] > curve[2]
    assert all(math.isnan(x) for x in gate.precision_at_coverages(np.zeros(5), np.zeros(5), (0.5,)))


def test_precision_inside_a_bin_is_that_bins_own():
    # Two bins: 2 unsure wrong pixels, 2 sure right ones. The top 75 % takes both sure pixels and
    # half of the unsure bin at its precision 0: 2 right of 3.
    curve = gate.precision_at_coverages(np.array([2, 2]), np.array([0, 2]), (0.25, 0.5, 0.75, 1.0))
    assert curve == pytest.approx([1.0, 1.0, 2 / 3, 0.5])


def test_precision_coverage_counts_only_labelled_pixels():
    counter = gate.PrecisionCoverage(bins=10)
    probs = torch.tensor([[[0.95, 0.55]], [[0.05, 0.45]]])      # (C=2, 1, 2): argmax 0 twice
    counter.update(probs, torch.tensor([[0, 255]]))
    assert counter.total.sum() == 1 and counter.correct.sum() == 1
    assert counter.total[9] == 1


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    classes = len(CLASSES)
    source = make_folder_dataset(root / "source", num=4, size=(32, 64), classes=classes, seed=0)
    tune = make_folder_dataset(root / "tune", num=3, size=(32, 64), classes=classes, seed=1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    evaluation = EvalTransform(mean=mean, std=std)
    torch.manual_seed(0)
    network = build_segmenter("small", classes).eval().requires_grad_(False)
    teacher = build_segmenter("small", classes).eval().requires_grad_(False)
    return gate.GateInputs(
        source_network=network, target_bn_source=network, teacher=teacher,
        source_train=open_dataset("folder", source, "train", require_labels=True,
                                  transform=TrainTransform(crop_size=(32, 64), scale_range=(0.7, 1.2), mean=mean, std=std)),
        source_val=open_dataset("folder", source, "val", require_labels=True, transform=evaluation),
        tune=open_dataset("folder", tune, "val", require_labels=True, transform=evaluation),
        classes=open_dataset("folder", source, "val", require_labels=True).classes, mean=mean, std=std,
    )


def test_a_gate_run_on_a_tiny_model_writes_a_verdict_per_variant(tiny_inputs, tmp_path):
    out = tmp_path / "gate"
    variants = ["default", "window 9, query p+features", "early stop on source val"]
    report = gate.run_gate(tiny_inputs, variants, out, iterations=2, batch_size=2, seed=0)
    assert list(report["variants"]) == variants
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["variants"].keys() == report["variants"].keys()
    for name, row in saved["variants"].items():
        verdict = row["verdict"]
        # The verdict is recomputed from the saved numbers: the report's logic, not a copy.
        again = gate.gate_verdict(saved["baseline"]["tune"]["per_class"], row["tune"]["per_class"],
                                  saved["baseline"]["tune_precision_coverage"], row["tune_precision_coverage"])
        assert again == verdict
        assert len(row["tune_precision_coverage"]) == len(gate.COVERAGES)
    table = out.with_suffix(".md").read_text()
    assert table.count("| default |") == 3                          # the summary and both per-class tables
    assert "PASS" in table or "fail:" in table
    # --resume keeps what was measured and adds only the missing variant.
    again = gate.run_gate(tiny_inputs, [*variants, "fit class-balanced"], out, iterations=2, batch_size=2, resume=True,
                          command="second call")
    assert again["variants"]["default"] == saved["variants"]["default"]
    assert "fit class-balanced" in again["variants"]
    assert "Command: `second call`" in out.with_suffix(".md").read_text()   # both calls are listed


def test_the_position_bias_and_finer_stride_variants_run(tiny_inputs, tmp_path):
    variants = ["window 9, p+features, position bias", "window 9, p+features, upsample 2",
                "window 9, p+features, position bias, on the teacher, early stop",
                "window 9, p+features, upsample 2, on the teacher, early stop"]
    assert set(variants) <= set(gate.VARIANTS)
    # The biased teacher variant is the passing "on the teacher, early stop" one plus the bias.
    passing, _ = gate.VARIANTS["window 9, p+features, on the teacher, early stop"]
    assert gate.VARIANTS[variants[2]] == ({**passing, "position_bias": True}, "teacher")
    assert gate.VARIANTS[variants[3]] == ({**passing, "upsample": 2}, "teacher")
    report = gate.run_gate(tiny_inputs, variants, tmp_path / "gate", iterations=2, batch_size=2, seed=0)
    assert list(report["variants"]) == variants
    assert all(isinstance(row["verdict"]["passed"], bool) for row in report["variants"].values())
    c = gate.variant_config(gate.VARIANTS[variants[0]][0])
    module, _ = gate.fit_module(c, "source", tiny_inputs, iterations=2, batch_size=2)
    assert module.position_bias is not None and module.position_bias.detach().abs().max() > 0   # fitted, not left at 0


def test_an_unknown_variant_is_a_user_error(capsys):
    code = gate.main(["--source", "a", "--teacher", "b", "--data", "c", "--tune", "d", "--out", "e", "--variants", "nope"])
    assert code == 2
    assert "unknown gate variant 'nope'" in capsys.readouterr().err


def test_every_variant_is_a_valid_config():
    for name, (overrides, fit_on) in gate.VARIANTS.items():
        c = gate.variant_config(overrides)
        assert fit_on in ("source", "teacher"), name
        for key, value in overrides.items():
            assert (c.optim.lr if key == "optim.lr" else getattr(c, key)) == value, (name, key)


def test_an_identity_module_scores_exactly_the_teacher(tiny_inputs):
    # value "learned" starts as the identity (gamma 0): (ii) and (iii) must both be level, or the
    # gate compares two ways of reading a map instead of two maps.
    from uda_adapt.adapt.models.correlation import CorrelationModule
    from uda_adapt.adapt.train.correlation_stage import module_fn

    module = CorrelationModule(len(CLASSES), dim=8, value="learned").eval()
    assert module.gamma.item() == 0.0
    base = gate.baselines(tiny_inputs)
    result, curve = gate.split_scores(module_fn(tiny_inputs.teacher, module), tiny_inputs.tune)
    verdict = gate.gate_verdict(base["tune"]["per_class"], result.per_class_iou, base["tune_precision_coverage"], curve)
    assert verdict["tune_miou_delta"] == pytest.approx(0.0, abs=1e-9)
    assert verdict["precision_coverage_delta"] == pytest.approx(0.0, abs=1e-6)
    assert not verdict["passed"]                                     # level is not better
