"""Training on CUDA: mixed precision, channels-last, torch.compile, and NCCL data-parallel with
SyncBatchNorm. Run only where an NVIDIA GPU is present (`pytest -m gpu`); skipped elsewhere."""

from __future__ import annotations

import math

import pytest
import torch

from adapt.checkpoint import load_checkpoint
from tests.adapt.fixtures import make_folder_dataset
from tests.adapt.test_distributed import RELATIVE_TOLERANCE, SETTINGS, losses, make_twin_dataset, relative_difference, single, torchrun

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]

GPU = [s for s in SETTINGS if not s.startswith("device=")] + ["device=cuda"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    return (make_folder_dataset(root / "source", num=8, size=(64, 128), seed=0),
            make_folder_dataset(root / "target", num=8, size=(64, 128), seed=1))


@pytest.mark.parametrize("amp", ["auto", "fp16", "fp32"])
def test_each_precision_trains_every_stage_and_saves_fp32_weights(data, tmp_path, amp):
    source, target = data
    single(tmp_path / amp, [*GPU, f"data.source.root={source}", f"data.target.root={target}", f"amp={amp}",
                            "self_train.lambda_ct=0.1"])
    for stage in ("source", "correlation", "self_train"):
        assert all(math.isfinite(v) for v in losses(tmp_path / amp, stage)), stage
        state = load_checkpoint(tmp_path / amp / stage / "last.pt").state_dict
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_compiled_training_matches_eager(data, tmp_path):
    source, target = data
    common = [*GPU, f"data.source.root={source}", f"data.target.root={target}", "amp=fp32"]
    single(tmp_path / "eager", common, stage="source")
    single(tmp_path / "compiled", [*common, "compile=true"], stage="source")
    assert relative_difference(tmp_path / "compiled", tmp_path / "eager", "source") < 1e-3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_with_sync_batchnorm_train_as_one(tmp_path):
    """NCCL, one GPU per process, SyncBatchNorm; fp32 for a tight comparison (cuDNN's own
    nondeterminism is inside the looser tolerance)."""
    twin = make_twin_dataset(tmp_path / "twin", num=8, size=(32, 64), seed=0)
    settings = [*GPU, f"data.source.root={twin}", f"data.target.root={twin}", "amp=fp32", "self_train.lambda_ct=0.1",
                "distributed.sync_batchnorm=true"]
    single(tmp_path / "single", settings)
    ran = torchrun(tmp_path / "ddp", settings)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for stage in ("source", "correlation", "self_train"):
        assert relative_difference(tmp_path / "ddp", tmp_path / "single", stage) < 10 * RELATIVE_TOLERANCE, stage

