"""Every stage survives SIGKILL: killed right after a checkpoint, resumed, it ends as an uninterrupted run.

The killed run is a real process that dies by SIGKILL (no cleanup, no finally blocks) right
after its N-th checkpoint of a stage is on disk; the resumed run is the same command again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train
from tests.adapt.fixtures import make_folder_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.crop_size=[32, 64]", "data.batch_size=2", "data.scale_range=[0.7, 1.2]",
    "source.iterations=4", "correlation.iterations=4",
    "self_train.rounds=2", "self_train.iterations_per_round=4", "self_train.mean_teacher.iterations=4",
    "logging.log_every=1", "logging.checkpoint_every=2", "logging.num_overlays=0",
]

# Runs `train` and SIGKILLs itself right after the N-th checkpoint of STAGE is written.
KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.train import stage_io
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train

stage, after, run_dir, *overrides = sys.argv[1:]
real_save, count = stage_io.save_checkpoint, {"n": 0}

def save_then_die(path, ckpt):
    real_save(path, ckpt)
    if ckpt.stage == stage and path.name == "last.pt":
        count["n"] += 1
        if count["n"] == int(after):
            os.kill(os.getpid(), signal.SIGKILL)

stage_io.save_checkpoint = save_then_die
train(load_config(TrainConfig, None, overrides), run_dir)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return (make_folder_dataset(root / "source", num=4, size=(40, 80), seed=0),
            make_folder_dataset(root / "target", num=4, size=(40, 80), seed=1))


def overrides(data, *extra) -> list[str]:
    source, target = data
    return [f"data.source.root={source}", f"data.target.root={target}", *TINY, *extra]


def final_state(run: Path) -> tuple[dict, dict]:
    ran = [stage for stage in ("source", "correlation", "self_train") if (run / stage / "last.pt").exists()]   # no correlation at lambda_ct 0
    assert "self_train" in ran
    weights = {stage: load_checkpoint(run / stage / "last.pt").state_dict for stage in ran}
    return weights, json.loads((run / "summary.json").read_text())


CASES = {
    # name: (stage to kill, its N-th last.pt, extra config)
    "source mid-stage": ("source", 1, ["self_train.method=iast"]),
    "source mid-stage with rare-class sampling": ("source", 1, ["self_train.method=iast", "source.rare_class_sampling=true",
                                                                "source.rcs_min_pixels=20"]),
    "correlation mid-stage": ("correlation", 1, ["self_train.method=iast", "self_train.lambda_ct=0.1"]),
    "iast round 2 mid-round": ("self_train", 3, ["self_train.method=iast"]),
    "iast round 2 with a round teacher": ("self_train", 3, ["self_train.method=iast", "self_train.lambda_ct=0.1",
                                                            "self_train.ct_teacher=round"]),
    "mean teacher mid-stage": ("self_train", 1, ["self_train.method=mean_teacher", "self_train.lambda_ct=0.1",
                                                 "self_train.mean_teacher.rare_class_sampling=true",
                                                 "self_train.mean_teacher.rcs_min_pixels=20"]),   # crops redrawn for a class
    "mean teacher with MIC, a live module and the teacher exported": (
        "self_train", 1, ["self_train.method=mean_teacher", "self_train.lambda_ct=0.1",
                          "self_train.mean_teacher.mic.enabled=true", "self_train.correlation_refit.every=1",
                          "self_train.ct_input=masked", "self_train.export=teacher"]),
    "mean teacher with the reference options on the stride-4 model": (
        "self_train", 1, ["self_train.method=mean_teacher", "model.name=small_fine", "self_train.mean_teacher.ema_horizon=0.5",
                          "self_train.mean_teacher.pseudo_margins=[0.05, 0.12, 0.0, 0.0]", "self_train.mean_teacher.teacher_bn=batch",
                          "self_train.mean_teacher.teacher_bn_padding=excluded", "self_train.mean_teacher.mic.enabled=true",
                          "self_train.mean_teacher.mic.mode=separate"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_at_a_checkpoint_then_resume_matches_an_uninterrupted_run(case, data, tmp_path):
    stage, after, extra = CASES[case]
    settings = overrides(data, *extra)
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, settings), tmp_path / "straight")

    resumed = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLER, stage, str(after), str(resumed), *settings],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = load_checkpoint(resumed / stage / "last.pt")
    assert not partial.extra["complete"]

    train(load_config(TrainConfig, None, settings), resumed)
    straight_weights, straight_summary = final_state(tmp_path / "straight")
    resumed_weights, resumed_summary = final_state(resumed)
    assert resumed_summary == straight_summary
    assert resumed_weights.keys() == straight_weights.keys()
    for stage_name, state in straight_weights.items():
        for key, value in state.items():
            assert torch.equal(value, resumed_weights[stage_name][key]), f"{stage_name}: {key}"


def test_the_exported_network_is_the_chosen_one_with_target_batchnorm_statistics(data, tmp_path):
    """`self_train.export=teacher` saves the EMA teacher; its BatchNorm statistics are the target's."""
    from uda_adapt.adapt.data.transforms import EvalTransform
    from uda_adapt.adapt.models import build_segmenter
    from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
    from uda_adapt.adapt.train.datasets import unlabelled_train_set

    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, None, overrides(data, "self_train.method=mean_teacher", "self_train.lambda_ct=0",
                                                   "self_train.export=teacher"))
    train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "self_train" / "last.pt")
    assert ckpt.extra["exported"] == "teacher"
    teacher, student = ckpt.extra["teacher"], ckpt.extra["student"]
    differs = [k for k in teacher if teacher[k].is_floating_point() and not torch.equal(teacher[k], student[k])]
    assert differs, "teacher and student are identical: nothing distinguishes the choice"
    for key, value in ckpt.state_dict.items():
        assert torch.equal(value, teacher[key]), key
    # Re-estimating BatchNorm on the target train images again leaves the exported statistics as they are.
    network = build_segmenter(ckpt.model_name, len(ckpt.classes), None)
    network.load_state_dict(ckpt.state_dict)
    target = unlabelled_train_set(cfg.data.target, EvalTransform(size=cfg.data.target.base_size, mean=ckpt.mean, std=ckpt.std))
    before = {k: v.clone() for k, v in network.state_dict().items() if "running_mean" in k}
    assert before, "the network has no BatchNorm layer to check"
    reestimate_batchnorm(network, target, torch.device("cpu"), cfg.data.batch_size)
    for key, value in before.items():
        assert torch.allclose(network.state_dict()[key], value, atol=1e-5), key
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"mean_teacher", "student"} <= set(summary["self_train"])

    # The other networks stay scorable: the student (as the stage scored it) and the student with the
    # BatchNorm statistics training left, which differ from the re-estimated ones in buffers only.
    from uda_adapt.adapt.checkpoint import select_network
    from uda_adapt.adapt.eval_checkpoint import evaluate_checkpoint

    trained = select_network(ckpt, "student-training-bn").state_dict
    statistics = ckpt.extra["student_training_bn"]
    assert {k for k in statistics if "running_mean" in k} == set(before)
    assert all(torch.equal(trained[k], student[k]) for k in student if k not in statistics)
    assert any(not torch.equal(trained[k], student[k]) for k in before), "re-estimation changed nothing: nothing to choose"
    target_root = cfg.data.target.root
    scored = evaluate_checkpoint(tmp_path / "run" / "self_train" / "last.pt", target_root, device="cpu", network="student")[0]
    assert scored.miou == pytest.approx(summary["self_train"]["student"], abs=1e-9)
    assert (tmp_path / "run" / "self_train" / "last_student_eval_val.json").is_file()


def test_a_checkpoint_without_the_asked_network_says_so(data, tmp_path):
    from uda_adapt.adapt.checkpoint import select_network
    from uda_adapt.common.errors import UserError

    train(load_config(TrainConfig, None, overrides(data)), tmp_path / "run", stage="source")
    ckpt = load_checkpoint(tmp_path / "run" / "source" / "last.pt")
    assert select_network(ckpt, "exported") is ckpt
    with pytest.raises(UserError, match="holds no teacher network"):
        select_network(ckpt, "teacher")
    with pytest.raises(UserError, match="unknown network"):
        select_network(ckpt, "best")
