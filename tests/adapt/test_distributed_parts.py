"""The pieces data-parallel training is built from, one process at a time (no process group).

Every rank must see exactly its part of what one process would: its slice of each global
batch, the global batch's ClassMix and augmentation choices, and SyncBatchNorm must come off
again before AdaBN and saving. The 2-process runs are in test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapt.config import load_config
from adapt.mixing import StrongAugmentation, choose_classes, class_presence, classmix_masks, paste_masks
from adapt.train.batches import BatchStream
from adapt.train.config import TrainConfig
from adapt.train.distributed import Distributed, is_lost_peer, revert_sync_batchnorm
from adapt.train.environment import amp_dtype, autocast, make_grad_scaler, training_network
from common.errors import UserError


class Numbers(torch.utils.data.Dataset):
    """Item i is (tensor [i, random draw], i): what a sample's augmentation drew shows in the batch."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        return torch.tensor([float(index), torch.rand(()).item()]), index


def take(stream: BatchStream, batches: int) -> list[torch.Tensor]:
    return [stream.next()[0] for _ in range(batches)]


def test_ranks_load_disjoint_slices_that_make_up_the_single_process_batches():
    one = take(BatchStream(Numbers(), 4, seed=3), 7)     # crosses two epochs (2 full batches each)
    parts = [take(BatchStream(Numbers(), 4, seed=3, shard=Distributed(rank, 2)), 7) for rank in (0, 1)]
    for step, batch in enumerate(one):
        assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), batch)    # same images, same augmentation
    assert BatchStream(Numbers(), 4, seed=3, shard=Distributed(1, 2)).local_batch_size == 2


def test_a_global_batch_the_ranks_cannot_split_is_refused_with_a_fix():
    with pytest.raises(UserError, match=r"data.batch_size=6 is the global batch .* 4 training processes; use e.g. --set data.batch_size=4"):
        BatchStream(Numbers(), 6, seed=0, shard=Distributed(0, 4))


def test_local_slices_are_contiguous_in_rank_order():
    assert [Distributed(rank, 4).local_slice(8) for rank in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]


def test_classmix_drawn_for_the_global_batch_gives_each_rank_the_single_process_masks():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (4, 8, 8))
    labels[2] = 255                                                   # an image with nothing to paste
    one = classmix_masks(labels, torch.Generator().manual_seed(7))
    presence = class_presence(labels, num_classes=19)
    for rank in (0, 1):
        mine = Distributed(rank, 2).local_slice(4)
        chosen = choose_classes(presence, torch.Generator().manual_seed(7))[mine]
        assert torch.equal(paste_masks(labels[mine], chosen), one[mine])


def test_augmentation_plans_drawn_for_the_global_batch_match_augmenting_it_whole():
    augment = StrongAugmentation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), jitter_strength=0.4, jitter_p=0.5, blur_p=0.5)
    images = torch.randn(4, 3, 12, 12)
    whole = augment(images, torch.Generator().manual_seed(1))
    plans = augment.draw(4, torch.Generator().manual_seed(1))
    assert {plan.jitter is None for plan in plans} == {True, False} or {plan.blur_sigma is None for plan in plans} == {True, False}
    for rank in (0, 1):
        mine = Distributed(rank, 2).local_slice(4)
        assert torch.allclose(augment.apply(images[mine], plans[mine]), whole[mine], atol=1e-6)


def test_reverting_sync_batchnorm_keeps_the_same_weights_buffers_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    synced[1][0].eval()
    weight, mean = synced[1][0].weight, synced[1][0].running_mean
    plain = revert_sync_batchnorm(synced)
    layer = plain[1][0]
    assert type(layer) is nn.BatchNorm2d and not layer.training
    assert layer.weight is weight and layer.running_mean is mean
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in plain.modules())


def test_mixed_precision_is_off_on_the_cpu_whatever_the_setting():
    cpu = torch.device("cpu")
    for mode in ("auto", "bf16", "fp16", "fp32"):
        assert amp_dtype(cpu, mode) is None
        assert not make_grad_scaler(cpu, mode).is_enabled()
        with autocast(cpu, mode):
            assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_training_network_on_one_cpu_process_is_the_model_itself():
    cfg = load_config(TrainConfig, None, ["channels_last=true", "compile=false"])
    model = nn.Conv2d(3, 4, 3)
    assert training_network(model, cfg, torch.device("cpu"), Distributed()) is model
    assert model.weight.is_contiguous()                     # channels_last is for CUDA only


@pytest.mark.parametrize("value", ["true", "off", "fp8"])
def test_amp_accepts_only_its_modes(value):
    with pytest.raises(UserError, match="amp"):
        load_config(TrainConfig, None, [f"amp={value}"])


def test_distributed_settings_are_checked():
    with pytest.raises(UserError, match="distributed.timeout_minutes"):
        load_config(TrainConfig, None, ["distributed.timeout_minutes=0"])


def test_lost_peer_errors_are_told_apart_from_bugs():
    assert is_lost_peer(RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:8917"))
    assert is_lost_peer(torch.distributed.DistBackendError("NCCL error: remote process exited"))
    assert not is_lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
