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

Where images differ (augmentation, ignored pixels), a rank's BatchNorm and loss mean cover its
own part of the batch, which is exactly what one process computes for a micro-batch under
gradient accumulation: there 2 processes are compared with one process at `data.accumulate=2`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train
from uda_adapt.adapt.classes import CITYSCAPES_PALETTE, IGNORE_INDEX
from tests.adapt.fixtures import blocky_labels

ROOT = Path(__file__).resolve().parents[2]
RELATIVE_TOLERANCE = 1e-4   # |w_ddp - w_single| / |w_single|, per stage

SETTINGS = [
    "device=cpu", "data.crop_size=[32, 64]", "data.batch_size=4", "data.scale_range=[1.0, 1.0]", "data.flip=false",
    "data.jitter=0.0", "correlation.fit_perturbation=0.0",
    "source.optim.optimizer=sgd", "source.optim.lr=0.05", "correlation.optim.optimizer=sgd",
    "self_train.mean_teacher.optim.optimizer=sgd", "self_train.mean_teacher.optim.lr=0.05", "self_train.optim.optimizer=sgd",
    "self_train.mean_teacher.jitter_p=0.0", "self_train.mean_teacher.blur_p=0.0",
    # The teacher's own target statistics (the default) match one process to 1e-4 after 1 and 2
    # steps; at step 3 a pseudo label near its threshold flips and rounding grows to 4.5e-4, so
    # this fixture pins "running" and test_recipe checks that the statistics add over ranks.
    "self_train.mean_teacher.teacher_bn=running",
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
             init: Path | str = "", timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """2 processes under torchrun (tests/adapt/distributed_worker.py); `kill`: (stage, N-th last.pt, rank)."""
    kill_stage, after, rank = kill
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.adapt.distributed_worker", kill_stage, str(after), str(rank), str(run_dir), stage, str(init),
               *settings]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def single(run_dir: Path, settings: list[str], **kwargs) -> None:
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, settings), run_dir, **kwargs)


def weights(run: Path, stage: str, buffers: bool = True, part: str = "network") -> torch.Tensor:
    """A stage's saved tensors as one vector: the network's, or `part` "teacher" (the EMA teacher),
    "running_mean" (the network's BatchNorm means)."""
    ckpt = load_checkpoint(run / stage / "last.pt")
    state = ckpt.extra["correlation"]["state_dict"] if stage == "correlation" else ckpt.state_dict
    if part == "teacher":
        state = ckpt.extra["teacher"]
    if part == "running_mean":
        state = {k: v for k, v in state.items() if k.endswith("running_mean")}
    return torch.cat([v.double().flatten() for k, v in sorted(state.items())
                      if v.is_floating_point() and (buffers or "running_" not in k)])


def relative_difference(a: Path, b: Path, stage: str, part: str = "network") -> float:
    """Over the weights, not BatchNorm's running variance: a rank's unbiased variance divides by its
    own pixel count minus one, so it differs from the global batch's by design (not in training)."""
    wa, wb = weights(a, stage, buffers=part == "running_mean", part=part), weights(b, stage, buffers=part == "running_mean", part=part)
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


@pytest.mark.parametrize("part", ["teacher", "running_mean"])
def test_the_ema_teacher_and_batchnorm_statistics_match_one_process_too(twin, part):
    root, _, _ = twin
    if part == "running_mean":
        for stage in ("source", "self_train"):
            assert relative_difference(root / "ddp", root / "single", stage, part) < RELATIVE_TOLERANCE, stage
    else:
        assert relative_difference(root / "ddp", root / "single", "self_train", part) < RELATIVE_TOLERANCE


def test_mean_teacher_micro_steps_on_two_processes_train_as_on_one(twin, tmp_path):
    """data.accumulate=2: per optimizer step 2 micro-steps, ClassMix and augmentation drawn for each
    micro-step's images over all ranks, gradients averaged once (no_sync before), one EMA update."""
    root, settings, _ = twin
    accumulate = [*settings, "data.accumulate=2", "self_train.mean_teacher.iterations=2"]
    init = root / "single" / "correlation" / "last.pt"
    single(tmp_path / "single", accumulate, stage="self_train", init=init)
    ran = torchrun(tmp_path / "ddp", accumulate, stage="self_train", init=init)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for part in ("network", "teacher", "running_mean"):
        assert relative_difference(tmp_path / "ddp", tmp_path / "single", "self_train", part) < RELATIVE_TOLERANCE, part
    records = [json.loads(line) for line in (tmp_path / "ddp" / "self_train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]            # optimizer steps, not micro-steps


def test_iast_correlation_transfer_runs_in_fp32_under_mixed_precision(twin, tmp_path, monkeypatch):
    """As in the mean teacher: the module and the KL outside autocast (bf16 CPU autocast stands in for CUDA's)."""
    from uda_adapt.adapt.train import self_train_stage

    root, settings, _ = twin
    seen = []
    real = self_train_stage.correlation_transfer_loss

    def spy(module, logits, teacher_logits=None, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), logits.dtype, None if teacher_logits is None else teacher_logits.dtype))
        return real(module, logits, teacher_logits, **kwargs)
    monkeypatch.setattr(self_train_stage, "correlation_transfer_loss", spy)
    monkeypatch.setattr(self_train_stage, "autocast", lambda device, mode: torch.autocast("cpu", dtype=torch.bfloat16))
    iast = [*settings, "self_train.method=iast", "self_train.lambda_ct=0.1", "self_train.rounds=1", "self_train.iterations_per_round=1"]
    single(tmp_path / "iast", iast, stage="self_train", init=root / "single" / "correlation" / "last.pt")
    assert seen == [(False, torch.float32, torch.float32)]


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


AUGMENTED = [   # per-sample random scale, crop, flip and colour jitter; labels with ignored pixels
    "device=cpu", "data.crop_size=[32, 48]", "data.batch_size=4", "data.scale_range=[0.75, 1.25]", "data.flip=true",
    "data.jitter=0.2", "logging.log_every=1", "logging.checkpoint_every=100", "logging.num_overlays=0",
]


def make_learnable_dataset(root: Path, *, num: int, size: tuple[int, int], seed: int) -> Path:
    """ROOT/{train,val}/{images,labels}: 16-pixel blocks of 5 classes and ignored pixels, each class its
    Cityscapes colour plus noise: a small network is confident on it after a few dozen steps."""
    rng = np.random.default_rng(seed)
    palette = np.asarray(CITYSCAPES_PALETTE, np.int16)
    values = np.array([0, 2, 8, 10, 13, IGNORE_INDEX], np.uint8)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for index in range(num):
            label = blocky_labels(rng, size, values, block=16)
            colours = np.where(label[..., None] == IGNORE_INDEX, 128, palette[np.minimum(label, len(palette) - 1)])
            image = np.clip(colours + rng.integers(-20, 21, size=(*size, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / split / "images" / f"{split}_{index:04d}.png"), image[..., ::-1])
            cv2.imwrite(str(root / split / "labels" / f"{split}_{index:04d}.png"), label)
    return root


@pytest.fixture(scope="module")
def trained_source(tmp_path_factory):
    """A source network that has learned the fixture's colour-coded classes (one process), and a target to label."""
    root = tmp_path_factory.mktemp("trained")
    source = make_learnable_dataset(root / "source", num=12, size=(32, 64), seed=0)
    target = make_learnable_dataset(root / "target", num=7, size=(32, 64), seed=1)   # odd: the last group of 2 is short
    settings = [*AUGMENTED, f"data.source.root={source}", f"data.target.root={target}", "source.iterations=40",
                "source.optim.lr=0.01"]
    single(root / "run", settings, stage="source")
    return root / "run" / "source" / "last.pt", settings


def test_iast_from_a_trained_network_labels_as_one_process_and_trains_as_its_micro_steps(trained_source, tmp_path):
    """IAST on 2 processes against one process with data.accumulate=2 (each micro-step one rank's part):
    pseudo labels pixel for pixel with a real share of pixels labelled, thresholds, then weights and
    BatchNorm buffers after training on augmented crops with ignored pixels."""
    init, settings = trained_source
    iast = [*settings, "self_train.method=iast", "self_train.lambda_ct=0.0", "self_train.rounds=2",
            "self_train.iterations_per_round=2", "self_train.optim.optimizer=sgd", "self_train.lrs=[0.05]"]
    single(tmp_path / "single", [*iast, "data.accumulate=2"], stage="self_train", init=init)
    ran = torchrun(tmp_path / "ddp", iast, stage="self_train", init=init)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for round_name in ("round1", "round2"):                                # round 2: DDP built again
        one, two = (json.loads((run / "self_train" / round_name / "stats.json").read_text())
                    for run in (tmp_path / "single", tmp_path / "ddp"))
        assert one["labelled_fraction"] > 0.2, one                           # the comparison is about real labels
        assert two["thresholds"] == pytest.approx(one["thresholds"], abs=1e-5)
        assert two["per_class_pixels"] == one["per_class_pixels"]
        labels = sorted((tmp_path / "single" / "self_train" / round_name / "pseudo").glob("*.png"))
        assert len(labels) == 7
        for label in labels:
            other = tmp_path / "ddp" / "self_train" / round_name / "pseudo" / label.name
            assert np.array_equal(cv2.imread(str(label), cv2.IMREAD_UNCHANGED), cv2.imread(str(other), cv2.IMREAD_UNCHANGED)), label.name
    assert relative_difference(tmp_path / "ddp", tmp_path / "single", "self_train") < RELATIVE_TOLERANCE
    assert relative_difference(tmp_path / "ddp", tmp_path / "single", "self_train", "running_mean") < RELATIVE_TOLERANCE
    assert losses(tmp_path / "ddp", "self_train") == pytest.approx(losses(tmp_path / "single", "self_train"), rel=1e-4)


def test_source_training_on_augmented_images_with_ignored_pixels_matches_one_process_with_micro_steps(trained_source, tmp_path):
    _, settings = trained_source
    source = [*settings, "source.iterations=3", "source.optim.optimizer=sgd", "source.optim.lr=0.05"]
    single(tmp_path / "single", [*source, "data.accumulate=2"], stage="source")
    ran = torchrun(tmp_path / "ddp", source, stage="source")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert relative_difference(tmp_path / "ddp", tmp_path / "single", "source") < RELATIVE_TOLERANCE
    # Without micro-steps the one process normalises over all 4 images: visibly another training.
    single(tmp_path / "whole", source, stage="source")
    assert relative_difference(tmp_path / "whole", tmp_path / "single", "source") > 10 * RELATIVE_TOLERANCE


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
    # Rank 1 resumes with a stale view of the shared directory (no checkpoints, as an NFS client
    # may see them): what runs next is rank 0's decision, so it follows anyway.
    resumed = torchrun(run, [*settings, "distributed.timeout_minutes=1"], env={"STALE_FILES_ON_RANK": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming mean teacher at iteration 2" in resumed.stdout
    for stage in ("source", "correlation", "self_train"):
        assert torch.equal(weights(run, stage), weights(root / "ddp", stage)), stage
    # The global batch does not depend on the process count: the same run resumes on one process.
    single(tmp_path / "on_one_process", settings)
    assert relative_difference(tmp_path / "on_one_process", root / "single", "self_train") < RELATIVE_TOLERANCE


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_iteration_and_the_rerun_resumes(twin, tmp_path):
    root, settings, _ = twin
    run = tmp_path / "run"
    stopped = torchrun(run, settings, stage="source", env={"SIGNAL_AT": "source:1:1"})
    assert stopped.returncode != 0
    assert "rank 1 of 2 source stopped by SIGUSR1 after iteration 1" in stopped.stderr
    assert "rank 0 of 2 source stopped by a signal to another training process after iteration 1" in stopped.stderr
    assert "rerun the same command to resume" in stopped.stderr
    saved = load_checkpoint(run / "source" / "last.pt")
    assert saved.step == 1 and not saved.extra["complete"]
    resumed = torchrun(run, settings, stage="source")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "source: resuming at iteration 1" in resumed.stdout
    assert torch.equal(weights(run, "source"), weights(root / "ddp", "source"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SLURM_TASK = """
import sys, torch, torch.distributed as dist
from uda_adapt.adapt.train import distributed
with distributed.session("cpu", 1.0) as (info, device):
    total = torch.tensor([info.rank + 1.0])
    dist.all_reduce(total)
    print(info.rank, info.world_size, int(total.item()))
"""


def test_srun_tasks_form_one_job_from_slurm_variables_alone():
    """What `srun -n 2 uda-adapt train` starts: 2 processes with SLURM's variables and none of torchrun's."""
    port = free_port()
    tasks = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0",
                    "SLURM_NTASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                    "SLURM_STEP_NODELIST": "localhost", "MASTER_PORT": str(port)})
        tasks.append(subprocess.Popen([sys.executable, "-c", SLURM_TASK], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [task.communicate(timeout=120) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    assert [out.split() for out, _ in outputs] == [["0", "2", "3"], ["1", "2", "3"]]     # one job of 2, not 2 jobs of 1


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes_to_the_uninterrupted_result(twin, tmp_path):
    """A real `uda-adapt train` sent SIGTERM (scancel, a SLURM time limit) mid-stage."""
    _, settings, _ = twin
    source = [*settings, "source.iterations=12", "logging.checkpoint_every=100"]
    command = [sys.executable, "-m", "uda_adapt", "train", "--out", str(tmp_path / "run"), "--stage", "source",
               *[arg for setting in source for arg in ("--set", setting)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "source" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "stopped by SIGTERM after iteration" in stderr and "rerun the same command to resume" in stderr
    saved = load_checkpoint(tmp_path / "run" / "source" / "last.pt")
    assert 3 <= saved.step < 12 and not saved.extra["complete"]
    assert f"after iteration {saved.step}," in stderr
    resumed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at iteration {saved.step}" in resumed.stdout
    single(tmp_path / "uninterrupted", source, stage="source")
    assert relative_difference(tmp_path / "run", tmp_path / "uninterrupted", "source") < 1e-6
