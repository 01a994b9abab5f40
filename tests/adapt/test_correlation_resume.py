"""Correlation variants with new state survive SIGKILL: the early-stop record of the correlation
stage, the window's learned position bias (fitted in the stage, refitted live in self-training)
and a mean teacher that reads features at a finer stride and refines pseudo labels resume exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train
from tests.adapt.test_resume import KILLER, ROOT, data, final_state, overrides  # noqa: F401  (data is a fixture)

VARIANTS = [
    "self_train.method=mean_teacher", "self_train.lambda_ct=0.1",
    "correlation.query=both", "correlation.window=3", "correlation.early_stop_every=1", "correlation.early_stop_images=2",
    "correlation.fit_mask_ratio=0.5", "correlation.fit_bn=target", "correlation.fit_class_balanced=true",
    "self_train.ct_pseudo_threshold=0.2", "self_train.ct_target_temperature=0.5",
    "correlation.position_bias=true", "correlation.upsample=2", "self_train.correlation_refit.every=1",
]


@pytest.mark.parametrize("stage, after", [("correlation", 1), ("self_train", 1)])
def test_sigkill_then_resume_matches_an_uninterrupted_run_with_every_variant(stage, after, data, tmp_path):
    settings = overrides(data, *VARIANTS)
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, settings), tmp_path / "straight")

    resumed = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLER, stage, str(after), str(resumed), *settings],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = load_checkpoint(resumed / stage / "last.pt")
    assert not partial.extra["complete"]
    if stage == "correlation":
        assert partial.extra["early_stop"]["best_state"] is not None   # the state that has to survive
        assert partial.extra["correlation"]["upsample"] == 2
    module_state = partial.extra["correlation" if stage == "correlation" else "live_correlation"]["state_dict"]
    assert module_state["position_bias"].abs().max() > 0                  # fitted, so its resume is tested

    train(load_config(TrainConfig, None, settings), resumed)
    straight_weights, straight_summary = final_state(tmp_path / "straight")
    resumed_weights, resumed_summary = final_state(resumed)
    assert resumed_summary == straight_summary
    for stage_name, state in straight_weights.items():
        for key, value in state.items():
            assert torch.equal(value, resumed_weights[stage_name][key]), f"{stage_name}: {key}"
    straight_module = load_checkpoint(tmp_path / "straight" / "correlation" / "last.pt").extra
    resumed_module = load_checkpoint(resumed / "correlation" / "last.pt").extra
    assert straight_module["early_stop"]["best_step"] == resumed_module["early_stop"]["best_step"]
    for key, value in straight_module["correlation"]["state_dict"].items():
        assert torch.equal(value, resumed_module["correlation"]["state_dict"][key]), key
    straight_live = load_checkpoint(tmp_path / "straight" / "self_train" / "last.pt").extra["live_correlation"]
    resumed_live = load_checkpoint(resumed / "self_train" / "last.pt").extra["live_correlation"]
    for key, value in straight_live["state_dict"].items():
        assert torch.equal(value, resumed_live["state_dict"][key]), f"live module: {key}"
