"""Training on CUDA: mixed precision, channels-last, torch.compile, NCCL data-parallel with
SyncBatchNorm, AMP and compile under DDP, and resuming on fewer GPUs than the run was saved on.
Run only where an NVIDIA GPU is present (`pytest -m gpu`); skipped elsewhere, and the DDP tests
where the machine has fewer than 2 GPUs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint, save_checkpoint
from uda_adapt.adapt.train import source_stage
from uda_adapt.adapt.train.preemption import Preempted
from tests.adapt.fixtures import make_folder_dataset
from tests.adapt.test_distributed import (RELATIVE_TOLERANCE, ROOT, SETTINGS, losses, make_twin_dataset, relative_difference,
                                          single, torchrun)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")

GPU = [s for s in SETTINGS if not s.startswith("device=")] + ["device=cuda"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    return (make_folder_dataset(root / "source", num=8, size=(64, 128), seed=0),
            make_folder_dataset(root / "target", num=8, size=(64, 128), seed=1))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_twin")
    return make_twin_dataset(root / "twin", num=8, size=(32, 64), seed=0)


def stop_after(monkeypatch, iteration: int) -> None:
    """Send this process SIGUSR1 during source iteration `iteration` (0-based), as SLURM would."""
    real = source_stage.run_iterations

    def run_iterations(*, step_fn, **kwargs):
        def step(i):
            if i == iteration:
                os.kill(os.getpid(), signal.SIGUSR1)
            return step_fn(i)
        return real(step_fn=step, **kwargs)
    monkeypatch.setattr(source_stage, "run_iterations", run_iterations)


@pytest.mark.parametrize("amp", ["auto", "fp16", "fp32"])
def test_each_precision_trains_every_stage_and_saves_fp32_weights(data, tmp_path, amp):
    source, target = data
    single(tmp_path / amp, [*GPU, f"data.source.root={source}", f"data.target.root={target}", f"amp={amp}",
                            "self_train.lambda_ct=0.1"])
    for stage in ("source", "correlation", "self_train"):
        assert all(math.isfinite(v) for v in losses(tmp_path / amp, stage)), stage
        state = load_checkpoint(tmp_path / amp / stage / "last.pt").state_dict
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    records = (tmp_path / amp / "source" / "metrics.jsonl").read_text()
    assert "peak_memory_mib" in records and "images_per_second_per_gpu" in records


def test_auto_precision_matches_the_gpu_generation():
    major, _ = torch.cuda.get_device_capability()
    from uda_adapt.adapt.train.environment import amp_dtype
    assert amp_dtype(torch.device("cuda", 0), "auto") == (torch.bfloat16 if major >= 8 else torch.float16)


def test_an_fp16_run_resumes_with_its_loss_scaler(data, tmp_path, monkeypatch):
    source, target = data
    settings = [*GPU, f"data.source.root={source}", f"data.target.root={target}", "amp=fp16", "source.iterations=6"]
    single(tmp_path / "whole", settings, stage="source")
    stop_after(monkeypatch, 2)
    with pytest.raises(Preempted, match="after iteration 3"):
        single(tmp_path / "resumed", settings, stage="source")
    monkeypatch.undo()
    single(tmp_path / "resumed", settings, stage="source")
    whole, resumed = (load_checkpoint(run / "source" / "last.pt").extra["scaler"] for run in (tmp_path / "whole", tmp_path / "resumed"))
    assert resumed == whole and whole["_growth_tracker"] == 6


def test_the_mean_teacher_runs_its_ema_teacher_in_the_training_layout(data, tmp_path, monkeypatch):
    from uda_adapt.adapt.train import mean_teacher_stage

    seen = []
    real = mean_teacher_stage.update_teacher

    def update_teacher(teacher, student, alpha):
        seen.append(next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
            memory_format=torch.channels_last))
        return real(teacher, student, alpha)
    monkeypatch.setattr(mean_teacher_stage, "update_teacher", update_teacher)
    source, target = data
    single(tmp_path / "mt", [*GPU, f"data.source.root={source}", f"data.target.root={target}", "amp=auto",
                             "channels_last=true", "self_train.lambda_ct=0.0"])
    assert seen and all(seen)


def test_compiled_training_matches_eager(data, tmp_path):
    source, target = data
    common = [*GPU, f"data.source.root={source}", f"data.target.root={target}", "amp=fp32"]
    single(tmp_path / "eager", common, stage="source")
    single(tmp_path / "compiled", [*common, "compile=true"], stage="source")
    assert relative_difference(tmp_path / "compiled", tmp_path / "eager", "source") < 1e-3


def test_a_checkpoint_from_a_node_with_more_gpus_resumes_here(data, tmp_path):
    """The RNG states of a checkpoint written before one-GPU states: one per GPU of a larger node."""
    source, target = data
    settings = [*GPU, f"data.source.root={source}", f"data.target.root={target}", "source.iterations=4"]
    single(tmp_path / "run", settings, stage="source")
    path = tmp_path / "run" / "source" / "last.pt"
    ckpt = load_checkpoint(path)
    rng = dict(ckpt.extra["rng"])
    rng["cuda"] = [rng.pop("cuda_device")] * (torch.cuda.device_count() + 3)
    ckpt.extra.update(rng=rng, complete=False)
    ckpt.step = 2
    save_checkpoint(path, ckpt)
    single(tmp_path / "run", settings, stage="source")
    assert load_checkpoint(path).extra["complete"]


@two_gpus
def test_two_gpus_with_sync_batchnorm_train_as_one(twin, tmp_path):
    """NCCL, one GPU per process, SyncBatchNorm; fp32 for a tight comparison (cuDNN's own
    nondeterminism is inside the looser tolerance)."""
    settings = [*GPU, f"data.source.root={twin}", f"data.target.root={twin}", "amp=fp32", "self_train.lambda_ct=0.1",
                "distributed.sync_batchnorm=true"]
    single(tmp_path / "single", settings)
    ran = torchrun(tmp_path / "ddp", settings)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for stage in ("source", "correlation", "self_train"):
        assert relative_difference(tmp_path / "ddp", tmp_path / "single", stage) < 10 * RELATIVE_TOLERANCE, stage


@two_gpus
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_ddp_with_mixed_precision_trains_every_stage(twin, tmp_path, amp):
    settings = [*GPU, f"data.source.root={twin}", f"data.target.root={twin}", f"amp={amp}", "self_train.lambda_ct=0.1",
                "data.accumulate=2"]
    ran = torchrun(tmp_path / "ddp", settings)
    assert ran.returncode == 0, ran.stderr[-3000:]
    single(tmp_path / "single", [*settings, "amp=fp32"])
    for stage in ("source", "correlation", "self_train"):
        assert all(math.isfinite(v) for v in losses(tmp_path / "ddp", stage)), stage
        assert relative_difference(tmp_path / "ddp", tmp_path / "single", stage) < 0.05, stage   # half precision's reach


@two_gpus
def test_ddp_with_compile_matches_one_eager_process(twin, tmp_path):
    settings = [*GPU, f"data.source.root={twin}", f"data.target.root={twin}", "amp=fp32", "distributed.sync_batchnorm=true"]
    single(tmp_path / "eager", settings, stage="source")
    ran = torchrun(tmp_path / "compiled", [*settings, "compile=true"], stage="source")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert relative_difference(tmp_path / "compiled", tmp_path / "eager", "source") < 1e-3


@two_gpus
def test_a_run_saved_on_two_gpus_resumes_on_one(twin, tmp_path):
    settings = [*GPU, f"data.source.root={twin}", f"data.target.root={twin}", "amp=fp32"]
    died = torchrun(tmp_path / "run", settings, kill=("self_train", 1, 1))
    assert died.returncode != 0
    assert not load_checkpoint(tmp_path / "run" / "self_train" / "last.pt").extra["complete"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "0"}     # a node with one GPU
    command = [sys.executable, "-m", "uda_adapt", "train", "--out", str(tmp_path / "run"),
               *[arg for setting in settings for arg in ("--set", setting)]]
    resumed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming mean teacher at iteration 2" in resumed.stdout
    assert load_checkpoint(tmp_path / "run" / "self_train" / "last.pt").extra["complete"]
