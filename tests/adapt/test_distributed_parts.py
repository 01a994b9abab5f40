"""The pieces data-parallel training is built from, one process at a time (no process group).

Every rank must see exactly its part of what one process would: its slice of each global
batch, the global batch's ClassMix and augmentation choices, and SyncBatchNorm must come off
again before AdaBN and saving. The 2-process runs are in test_distributed.py.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.mixing import StrongAugmentation, choose_classes, class_presence, classmix_masks, paste_masks
from uda_adapt.adapt.train import distributed
from uda_adapt.adapt.train.batches import BatchStream, StreamState
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.distributed import Distributed, gpu_index, is_lost_peer, revert_sync_batchnorm, wrap_for_training
from uda_adapt.adapt.train.environment import amp_dtype, autocast, make_grad_scaler, restore_rng, rng_state, training_network
from uda_adapt.adapt.train.launch import Launch, detect_launch
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import optimizer_step, run_iterations
from uda_adapt.adapt.train.preemption import Preempted, handle_signals
from uda_adapt.common.errors import UserError


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
    augment = StrongAugmentation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), jitter_strength=0.4, jitter_p=1.0, blur_p=1.0)
    images = torch.randn(4, 3, 12, 12)
    whole = augment(images, torch.Generator().manual_seed(1))
    plans = augment.draw(4, torch.Generator().manual_seed(1))
    assert len({plan.blur_sigma for plan in plans}) == 4 and len({plan.jitter for plan in plans}) == 4   # per-image choices
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
    assert is_lost_peer(torch.distributed.DistNetworkError("failed to recv, got 0 bytes"))
    assert is_lost_peer(RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv operation"))
    assert not is_lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    # "timeout" and "socket" alone are not a lost rank: a DataLoader or a file system says them too.
    assert not is_lost_peer(RuntimeError("DataLoader timed out after 60 seconds"))
    assert not is_lost_peer(RuntimeError("Timeout while reading /data/gta5/images/00001.png"))
    assert not is_lost_peer(RuntimeError("unable to open shared memory object via socket </torch_123>"))


# --- DDP across the declared torch range ----------------------------------------------------------

class OldDistributedDataParallel(nn.Module):
    """torch 2.4-2.12's DDP signature: no `forward_sync_buffers`; records how it was built."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False, delay_all_reduce_named_params=None,
                 param_to_hook_all_reduce=None, mixed_precision=None, device_mesh=None):
        super().__init__()
        self.module, self.broadcast_buffers = module, broadcast_buffers


def test_ddp_is_built_with_the_keyword_the_installed_torch_has(monkeypatch):
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", OldDistributedDataParallel)
    monkeypatch.setattr(distributed, "broadcast_buffers", lambda module, info: None)   # no process group here
    wrapped = wrap_for_training(nn.Conv2d(3, 4, 3), Distributed(0, 2), torch.device("cpu"), sync_batchnorm=True)
    assert isinstance(wrapped, OldDistributedDataParallel) and wrapped.broadcast_buffers is False
    current = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    expected = {"forward_sync_buffers": False} if "forward_sync_buffers" in current else {"broadcast_buffers": False}
    assert distributed.no_buffer_sync_in_forward(torch.nn.parallel.DistributedDataParallel) == expected


# --- precision and RNG on GPUs this machine may not have --------------------------------------------

@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_precision_picks_bf16_only_from_ampere_on(monkeypatch, capability, expected):
    # torch.cuda.is_bf16_supported() says True on a V100 or T4 (emulated); cuDNN has no bf16 convolutions there.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    gpu = torch.device("cuda", 0)
    assert amp_dtype(gpu, "auto") == expected
    if expected == torch.float16:
        with pytest.raises(UserError, match=r"compute capability 7\.\d.*--set amp=fp16"):
            amp_dtype(gpu, "bf16")


class FakeGpus:
    """torch.cuda's RNG functions for a node with `count` GPUs; setting more states than GPUs fails."""

    def __init__(self, count: int) -> None:
        self.count, self.set_states = count, []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((8,), 7, dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((8,), g, dtype=torch.uint8) for g in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set_states.append(state.clone()))

        def set_all(states):
            if len(states) > self.count:
                raise RuntimeError(f"CUDA error: invalid device ordinal {len(states) - 1}")
            self.set_states.extend(states)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_a_checkpoint_from_a_node_with_more_gpus_resumes_on_one(monkeypatch):
    saved_on_four = FakeGpus(4)
    saved_on_four.install(monkeypatch)
    state = rng_state()
    assert "cuda" not in state and state["cuda_device"].tolist() == [7] * 8      # this process's GPU only
    one = FakeGpus(1)
    one.install(monkeypatch)
    restore_rng(state)
    assert [s.tolist() for s in one.set_states] == [[7] * 8]
    # A checkpoint written before: every GPU's state of the saving node; rank 0's (the first) is restored.
    older = {**state, "cuda": [torch.full((8,), g, dtype=torch.uint8) for g in range(4)]}
    del older["cuda_device"]
    one.set_states.clear()
    restore_rng(older)
    assert [s.tolist() for s in one.set_states] == [[0] * 8]


# --- launchers -------------------------------------------------------------------------------------

SRUN_TASK = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NODELIST": "gpu[07-08]"}


def test_an_srun_task_joins_the_job_with_its_slurm_rank():
    launch = detect_launch(SRUN_TASK, hostnames=lambda nodelist: {"gpu[07-08]": ["gpu07", "gpu08"]}[nodelist])
    assert launch == Launch("slurm", rank=5, world_size=8, local_rank=1, init_method="tcp://gpu07:24242")
    custom = detect_launch({**SRUN_TASK, "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29400"}, hostnames=None)
    assert custom.init_method == "tcp://10.0.0.7:29400"


def test_torchrun_takes_precedence_and_a_batch_shell_is_one_process():
    torchrun_in_srun = {**SRUN_TASK, "RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}   # srun ... torchrun ...
    assert detect_launch(torchrun_in_srun) == Launch("torchrun", 3, 16, 3)
    batch_shell = {k: v for k, v in SRUN_TASK.items() if not k.startswith("SLURM_STEP")}   # no srun
    assert detect_launch(batch_shell) == Launch()
    assert detect_launch({**SRUN_TASK, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}) == Launch()
    assert detect_launch({}) == Launch()


def test_an_srun_task_without_a_way_to_find_the_master_is_refused_with_the_torchrun_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")                       # no scontrol
    with pytest.raises(UserError, match=r"scontrol show hostnames.*MASTER_ADDR.*srun --ntasks-per-node=1 torchrun --nnodes") as caught:
        detect_launch(SRUN_TASK)
    assert "\n" not in str(caught.value)


def test_a_task_bound_to_one_gpu_uses_it_and_too_many_tasks_per_node_are_refused():
    assert gpu_index(Launch("slurm", 5, 8, local_rank=1), visible=1) == 0        # srun --gpus-per-task=1
    assert gpu_index(Launch("slurm", 5, 8, local_rank=1), visible=4) == 1
    with pytest.raises(UserError, match="local rank 4 has no GPU: this node has 4"):
        gpu_index(Launch("torchrun", 4, 8, local_rank=4), visible=4)


# --- gradient accumulation -------------------------------------------------------------------------

def test_micro_batches_of_one_process_are_the_ranks_parts_of_each_global_batch():
    """accumulate=2 on one process loads, micro-step by micro-step, what 2 ranks load at once."""
    one = take(BatchStream(Numbers(), 4, seed=3, accumulate=2), 8)        # 4 optimizer steps
    ranks = [take(BatchStream(Numbers(), 4, seed=3, shard=Distributed(rank, 2)), 4) for rank in (0, 1)]
    for step in range(4):
        assert torch.equal(one[2 * step], ranks[0][step]) and torch.equal(one[2 * step + 1], ranks[1][step])
    both = [take(BatchStream(Numbers(), 4, seed=3, shard=Distributed(rank, 2), accumulate=2), 8) for rank in (0, 1)]
    whole = take(BatchStream(Numbers(), 4, seed=3), 4)
    for step in range(4):   # rank r, micro-step m: images [2m + r] of the global batch
        assert torch.equal(torch.cat([both[0][2 * step], both[1][2 * step], both[0][2 * step + 1], both[1][2 * step + 1]]), whole[step])


def test_the_stream_state_counts_global_batches_whatever_the_accumulation():
    stream = BatchStream(Numbers(), 4, seed=3, accumulate=2)
    take(stream, 3)
    assert vars(stream.state) == {"epoch": 0, "batches_done": 1}          # mid-step: the step is not done
    take(stream, 3)
    assert vars(stream.state) == {"epoch": 1, "batches_done": 1}          # 2 batches per epoch of 10
    resumed = BatchStream(Numbers(), 4, seed=3)                             # resumed without accumulation
    resumed.state = StreamState(1, 1)
    assert torch.equal(take(resumed, 1)[0], take(BatchStream(Numbers(), 4, seed=3), 4)[3])


def test_a_global_batch_smaller_than_processes_times_micro_steps_is_refused():
    with pytest.raises(UserError, match=r"data.batch_size=2 .* 4 training processes; use fewer processes, or --set data.batch_size=4"):
        Distributed(0, 4).local_batch_size(2)
    with pytest.raises(UserError, match=r"2 training processes x data.accumulate=2; use e.g. --set data.batch_size=4"):
        Distributed(0, 2).local_batch_size(6, accumulate=2)


class CountingDdp(nn.Module):
    """A module with DDP's `no_sync`, counting the micro-steps that ran inside it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.unsynced = module, 0

    def forward(self, x):
        return self.module(x)

    @contextlib.contextmanager
    def no_sync(self):
        self.unsynced += 1
        yield


def test_accumulated_micro_steps_give_the_full_batch_gradient_and_sync_once():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    full, accumulated = nn.Linear(3, 1), nn.Linear(3, 1)
    accumulated.load_state_dict(full.state_dict())
    network = CountingDdp(accumulated)
    parts = iter(zip(x.chunk(4), y.chunk(4)))

    def micro_loss():
        xb, yb = next(parts)
        loss = (network(xb) - yb).pow(2).mean()
        return loss, {"loss": loss}

    logged = optimizer_step(micro_loss, network=network, optimizer=torch.optim.SGD(accumulated.parameters(), lr=0.1), micro_steps=4)
    loss = (full(x) - y).pow(2).mean()
    loss.backward()
    torch.optim.SGD(full.parameters(), lr=0.1).step()
    assert network.unsynced == 3                                     # every micro-step but the last
    assert torch.allclose(accumulated.weight, full.weight, atol=1e-6) and logged["loss"] == pytest.approx(loss.item(), rel=1e-5)


# --- the loop: preemption and what it logs ---------------------------------------------------------

def test_a_signal_inside_the_loop_saves_after_that_iteration_and_says_to_rerun(tmp_path):
    saved = []

    def step(i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGUSR1)          # SLURM's warning before the time limit
        return {"loss": 1.0}

    log = Logbook(tmp_path, None, tag="source")
    with handle_signals(), pytest.raises(Preempted, match=r"source stopped by SIGUSR1 after iteration 2, saved in .*last.pt"):
        run_iterations(start=0, total=10, step_fn=step, save_fn=saved.append, log=log, log_every=5, checkpoint_every=100,
                       description="source", last_good=tmp_path / "last.pt")
    assert saved == [2]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]


def test_outside_the_loop_a_signal_stops_at_once():
    with handle_signals(), pytest.raises(Preempted, match="stopped by SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_log_records_carry_step_and_data_time_and_per_process_throughput(tmp_path):
    stream = BatchStream(Numbers(), 4, seed=0, accumulate=2)
    log = Logbook(tmp_path, None, tag="source")
    run_iterations(start=0, total=4, step_fn=lambda i: {"loss": float(take(stream, 2)[0].sum())}, save_fn=lambda done: None,
                   log=log, log_every=2, checkpoint_every=100, description="source", last_good=tmp_path / "last.pt",
                   images_per_step=4, dist=Distributed(0, 1), data_clock=stream.clock)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert 0 < record["data_seconds"] <= record["step_seconds"]
        assert record["images_per_second_per_gpu"] == pytest.approx(record["images_per_second"])
        assert "peak_memory_mib" not in record                       # CUDA only


# --- docs/distributed.md's launch examples and samples/slurm.sbatch -----------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def launch_examples() -> list[tuple[int, str, list[str]]]:
    """(processes, config, --set overrides) of each `uda-adapt train` command in docs/distributed.md."""
    section = (ROOT / "docs" / "distributed.md").read_text()
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    examples = []
    for line in block.splitlines():
        words = line.split("#", 1)[0].split()
        if "train" not in words or "--config" not in words:
            continue
        value = lambda flag, default: words[words.index(flag) + 1] if flag in words else default   # noqa: E731
        processes = int(value("--nproc_per_node", "1")) * int(value("--nnodes", "1"))
        overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set" and "root=" not in words[i + 1]]
        examples.append((processes, value("--config", ""), overrides))
    return examples


def test_the_readme_launch_examples_split_their_global_batch():
    examples = launch_examples()
    assert {processes for processes, _, _ in examples} >= {1, 2, 4, 8}
    for processes, config, overrides in examples:
        cfg = load_config(TrainConfig, ROOT / config, overrides)
        Distributed(0, processes).local_batch_size(cfg.data.batch_size, cfg.data.accumulate)   # raises if it cannot


def test_the_slurm_sample_fits_its_default_config_on_one_and_two_nodes():
    script = (ROOT / "samples" / "slurm.sbatch").read_text()
    per_node = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", script)[1])
    config = re.search(r"CONFIG=\$\{CONFIG:-(\S+)\}", script)[1]
    assert "srun" in script and "uda-adapt train" in script and "--signal=USR1@" in script
    cfg = load_config(TrainConfig, ROOT / config, [])
    for nodes in (1, 2):
        Distributed(0, nodes * per_node).local_batch_size(cfg.data.batch_size, cfg.data.accumulate)


# --- resume state: the loss scaler; cached rare-class statistics ------------------------------------

def test_a_resumed_run_continues_with_the_saved_loss_scaler(tmp_path, monkeypatch):
    """fp16's loss scaler (its scale and growth tracker) resumes with the run; a CPU scaler stands in for CUDA's."""
    from uda_adapt.adapt.train import source_stage
    from uda_adapt.adapt.train.runner import train
    from tests.adapt.fixtures import make_folder_dataset

    data = make_folder_dataset(tmp_path / "data", num=4, size=(32, 64), seed=0)
    cfg = load_config(TrainConfig, None, ["device=cpu", "data.crop_size=[32, 64]", "data.batch_size=2", f"data.source.root={data}",
                                          f"data.target.root={data}", "source.iterations=4", "logging.num_overlays=0"])
    monkeypatch.setattr(source_stage, "make_grad_scaler",
                        lambda device, mode: torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3))
    train(cfg, tmp_path / "whole", stage="source")
    real = source_stage.run_iterations

    def stopped_at_two(*, step_fn, **kwargs):
        return real(step_fn=lambda i: (os.kill(os.getpid(), signal.SIGTERM) if i == 1 else None) or step_fn(i), **kwargs)
    monkeypatch.setattr(source_stage, "run_iterations", stopped_at_two)
    with pytest.raises(Preempted, match="after iteration 2"):
        train(cfg, tmp_path / "resumed", stage="source")
    monkeypatch.setattr(source_stage, "run_iterations", real)
    train(cfg, tmp_path / "resumed", stage="source")
    from uda_adapt.adapt.checkpoint import load_checkpoint
    whole, resumed = (load_checkpoint(run / "source" / "last.pt").extra["scaler"] for run in (tmp_path / "whole", tmp_path / "resumed"))
    assert whole["scale"] == 2.0**11 and resumed == whole                 # grew once, after 3 steps: not reset at 2


def test_rare_class_statistics_are_read_once_and_cached_beside_the_labels(tmp_path):
    from uda_adapt.adapt.data import open_dataset
    from uda_adapt.adapt.data.rare_class import CACHE_PREFIX, class_statistics
    from tests.adapt.fixtures import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", num=5, size=(16, 16), seed=0)
    reads = []

    def counting(dataset):
        real = dataset.load_label
        dataset.load_label = lambda index: reads.append(index) or real(index)
        return dataset
    first = class_statistics(counting(open_dataset("folder", root, "train", require_labels=True)), 19)
    assert len(reads) == 5 and len(list((root / "train" / "labels").glob(f"{CACHE_PREFIX}*.json"))) == 1
    again = class_statistics(counting(open_dataset("folder", root, "train", require_labels=True)), 19)   # another start, or another rank
    assert len(reads) == 5
    assert np.array_equal(again.frequency, first.frequency) and again.images_with == first.images_with
    label = root / "train" / "labels" / "train_0000.png"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))   # a label changed
    class_statistics(counting(open_dataset("folder", root, "train", require_labels=True)), 19)
    assert len(reads) == 10


def test_real_ddp_averages_gradients_once_per_accumulated_step(tmp_path):
    """A one-process gloo group is enough for DDP to run its reducer: its all-reduce hook fires once
    for 3 micro-steps."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        network = nn.parallel.DistributedDataParallel(nn.Linear(3, 1))
        reductions = []

        def count(state, bucket):
            reductions.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future
        network.register_comm_hook(None, count)
        batches = iter(torch.randn(3, 2, 3))

        def micro_loss():
            loss = network(next(batches)).square().mean()
            return loss, {"loss": loss}
        optimizer_step(micro_loss, network=network, optimizer=torch.optim.SGD(network.parameters(), lr=0.1), micro_steps=3)
        assert len(reductions) == 1
    finally:
        dist.destroy_process_group()


def test_evaluation_every_n_iterations_leaves_last_pt_the_reported_model(tmp_path):
    from uda_adapt.adapt.checkpoint import load_checkpoint
    from uda_adapt.adapt.train.runner import train
    from tests.adapt.fixtures import make_folder_dataset

    data = make_folder_dataset(tmp_path / "data", num=4, size=(32, 64), seed=0)
    cfg = load_config(TrainConfig, None, ["device=cpu", "data.crop_size=[32, 64]", "data.batch_size=2", f"data.source.root={data}",
                                          f"data.target.root={data}", "source.iterations=4", "logging.num_overlays=0",
                                          "logging.eval_interval=2", "logging.log_every=1"])
    train(cfg, tmp_path / "run", stage="source")
    stage = tmp_path / "run" / "source"
    assert json.loads((stage / "eval_source_iter2.json").read_text())["step"] == 2
    assert not (stage / "eval_source_iter4.json").exists()                 # the end of the stage is the usual evaluation
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "miou" in r] == [2, 4]
    assert load_checkpoint(stage / "last.pt").step == 4
    assert list(json.loads((tmp_path / "run" / "summary.json").read_text())["source"]) == ["source_iter2", "source"]
