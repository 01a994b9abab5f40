"""Data-parallel training (torchrun, 2 processes, gloo on the CPU) against a single process.

The equivalence runs train on a "twin" dataset: every image is the same picture and every
label map is different. PyTorch has no CPU SyncBatchNorm, so each CPU rank normalises over its
own half of the batch; with identical pictures that half has the global batch's statistics,
while the labels, and so the gradients, still differ from rank to rank: only a correct
all-reduce of the right shards gives the single-process result. The optimizer is SGD: Adam's
first steps move each weight by about lr whatever its gradient's size, so float noise in a
near-zero gradient would become a whole step. The stated tolerance covers float summation
order; a run on half the global batch, what a rank without gradient sync would train on,
misses it by orders of magnitude (checked too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from adapt.checkpoint import load_checkpoint
from adapt.config import load_config
from adapt.train.config import TrainConfig
from adapt.train.runner import train
from tests.adapt.fixtures import blocky_labels, make_folder_dataset

ROOT = Path(__file__).resolve().parents[2]
RELATIVE_TOLERANCE = 1e-4   # |w_ddp - w_single| / |w_single|, per stage

SETTINGS = [
    "device=cpu", "data.crop_size=[32, 64]", "data.batch_size=4", "data.scale_range=[1.0, 1.0]", "data.flip=false",
    "data.jitter=0.0", "correlation.fit_perturbation=0.0",
    "source.optim.optimizer=sgd", "source.optim.lr=0.05", "correlation.optim.optimizer=sgd",
    "self_train.mean_teacher.optim.optimizer=sgd", "self_train.mean_teacher.optim.lr=0.05", "self_train.optim.optimizer=sgd",
    "self_train.mean_teacher.jitter_p=0.0", "self_train.mean_teacher.blur_p=0.0",
    "source.iterations=3", "correlation.iterations=3", "self_train.mean_teacher.iterations=3",
    "self_train.rounds=2", "self_train.iterations_per_round=2",
    "logging.log_every=1", "logging.checkpoint_every=2", "logging.num_overlays=1",
]

def make_twin_dataset(root: Path, *, num: int, size: tuple[int, int], seed: int) -> Path:
    """ROOT/{train,val}/{images,labels}: one picture under `num` different labels (no ignored pixels)."""
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, size=(*size, 3)).astype(np.uint8)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for index in range(num):
            stem = f"{split}_{index:04d}"
            cv2.imwrite(str(root / split / "images" / f"{stem}.png"), picture)
            cv2.imwrite(str(root / split / "labels" / f"{stem}.png"), blocky_labels(rng, size, np.arange(19, dtype=np.uint8)))
    return root


def torchrun(run_dir: Path, settings: list[str], kill: tuple[str, int, int] = ("", 0, 0), stage: str = "",
             init: Path | str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    """2 processes under torchrun (tests/adapt/distributed_worker.py); `kill`: (stage, N-th last.pt, rank)."""
    kill_stage, after, rank = kill
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.adapt.distributed_worker", kill_stage, str(after), str(rank), str(run_dir), stage, str(init),
               *settings]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def single(run_dir: Path, settings: list[str], **kwargs) -> None:
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, settings), run_dir, **kwargs)


def weights(run: Path, stage: str, buffers: bool = True) -> torch.Tensor:
    ckpt = load_checkpoint(run / stage / "last.pt")
    state = ckpt.extra["correlation"]["state_dict"] if stage == "correlation" else ckpt.state_dict
    return torch.cat([v.double().flatten() for k, v in sorted(state.items())
                      if v.is_floating_point() and (buffers or "running_" not in k)])


def relative_difference(a: Path, b: Path, stage: str) -> float:
    """Over the weights, not BatchNorm's running variance: a rank's unbiased variance divides by its
    own pixel count minus one, so it differs from the global batch's by design (not in training)."""
    wa, wb = weights(a, stage, buffers=False), weights(b, stage, buffers=False)
    return float((wa - wb).norm() / wb.norm())


def losses(run: Path, stage: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / stage / "metrics.jsonl").read_text().splitlines() if "loss" in line]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    data = make_twin_dataset(root / "data", num=8, size=(32, 64), seed=0)
    settings = [f"data.source.root={data}", f"data.target.root={data}", "self_train.lambda_ct=0.1", *SETTINGS]
    single(root / "single", settings)
    ran = torchrun(root / "ddp", settings)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return root, settings, ran


@pytest.mark.parametrize("stage", ["source", "correlation", "self_train"])
def test_two_processes_train_as_one_on_the_same_global_batch(twin, stage):
    root, _, _ = twin
    assert relative_difference(root / "ddp", root / "single", stage) < RELATIVE_TOLERANCE
    assert losses(root / "ddp", stage) == pytest.approx(losses(root / "single", stage), rel=1e-4)


def test_the_tolerance_separates_a_rank_training_alone(twin):
    """Half the global batch (a rank whose gradients are not averaged) is far outside the tolerance."""
    root, settings, _ = twin
    single(root / "half", [*settings, "data.batch_size=2", "correlation.iterations=1", "self_train.mean_teacher.iterations=1"],
           stage="source")
    assert relative_difference(root / "half", root / "single", "source") > 100 * RELATIVE_TOLERANCE


def test_rank_zero_alone_writes_and_evaluation_covers_every_image(twin):
    root, _, ran = twin
    ddp, one = root / "ddp", root / "single"
    ddp_summary, one_summary = (json.loads((run / "summary.json").read_text()) for run in (ddp, one))
    assert ddp_summary.keys() == one_summary.keys()
    for stage, scores in one_summary.items():
        assert ddp_summary[stage] == pytest.approx(scores, abs=1e-3), stage
    evaluation = json.loads((ddp / "source" / "eval_source.json").read_text())
    assert evaluation["num_images"] == 8
    records = [json.loads(line) for line in (ddp / "source" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]          # one writer, not two
    assert not list(ddp.glob(".rank0-*"))                                   # the shared-directory probe cleans up
    assert ran.stdout.count("run directory") == 1


def test_iast_pseudo_labels_sharded_over_ranks_match_one_process(twin, tmp_path):
    """Rank r labels images r, r + 2, ...; thresholds pass from rank to rank in dataset order."""
    root, settings, _ = twin
    source = make_folder_dataset(tmp_path / "source", num=4, size=(40, 80), seed=0)
    target = make_folder_dataset(tmp_path / "target", num=7, size=(40, 80), seed=1)   # odd: the last group is short
    iast = [*settings, f"data.source.root={source}", f"data.target.root={target}", "self_train.method=iast",
            "self_train.lambda_ct=0.0", "self_train.rounds=2", "self_train.iterations_per_round=1"]   # round 2: DDP again
    init = root / "single" / "correlation" / "last.pt"
    single(tmp_path / "single", iast, stage="self_train", init=init)
    ran = torchrun(tmp_path / "ddp", iast, stage="self_train", init=init)
    assert ran.returncode == 0, ran.stderr[-3000:]
    one, two = (json.loads((run / "self_train" / "round1" / "stats.json").read_text()) for run in (tmp_path / "single", tmp_path / "ddp"))
    assert two["thresholds"] == pytest.approx(one["thresholds"], abs=1e-5)
    assert two["per_class_pixels"] == one["per_class_pixels"]
    assert (tmp_path / "ddp" / "self_train" / "round2" / "stats.json").is_file()
    for label in sorted((tmp_path / "single" / "self_train" / "round1" / "pseudo").glob("*.png")):
        other = tmp_path / "ddp" / "self_train" / "round1" / "pseudo" / label.name
        assert np.array_equal(cv2.imread(str(label), cv2.IMREAD_UNCHANGED), cv2.imread(str(other), cv2.IMREAD_UNCHANGED)), label.name


def test_a_killed_rank_stops_the_job_with_a_clear_error_and_the_rerun_resumes(twin, tmp_path):
    root, settings, _ = twin
    run = tmp_path / "killed"
    died = torchrun(run, settings, kill=("self_train", 1, 1))
    assert died.returncode != 0
    output = died.stdout + died.stderr
    assert "Signal 9 (SIGKILL)" in output and "rank      : 1" in output                      # torchrun names the rank
    assert "rank 0 of 2" in died.stderr and "rerun the same command to resume" in died.stderr     # the survivor says why it stops
    partial = load_checkpoint(run / "self_train" / "last.pt")
    assert not partial.extra["complete"] and partial.step == 2
    shutil.copytree(run, tmp_path / "on_one_process")
    resumed = torchrun(run, settings)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming mean teacher at iteration 2" in resumed.stdout
    for stage in ("source", "correlation", "self_train"):
        assert torch.equal(weights(run, stage), weights(root / "ddp", stage)), stage
    # The global batch does not depend on the process count: the same run resumes on one process.
    single(tmp_path / "on_one_process", settings)
    assert relative_difference(tmp_path / "on_one_process", root / "single", "self_train") < RELATIVE_TOLERANCE
