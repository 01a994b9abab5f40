"""The label-free benchmark's runs: every run that starts from another's correlation checkpoint
starts from one that fits the module (at lambda_ct 0 the correlation stage is skipped)."""

from benchmarks.label_free_runs import RUNS, starts_without_a_module


def test_every_start_fits_the_module():
    assert any(start is not None for _, _, start in RUNS.values())   # the check has something to check
    assert starts_without_a_module(RUNS) == []


def test_a_start_without_correlation_transfer_is_found():
    runs = {"plain": (1, ["self_train.lambda_ct=0"], None), "follows": (1, ["self_train.lambda_ct=0.1"], "plain")}
    assert starts_without_a_module(runs) == ["follows"]
