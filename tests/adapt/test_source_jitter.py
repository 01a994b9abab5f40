"""`self_train.mean_teacher.source_jitter`: the source crops the mean teacher trains and mixes with
are jittered by the data pipeline ("pipeline") or left clean ("none", DAFormer: colour jitter only
in the strong augmentation of the mixed image)."""

from __future__ import annotations

import pytest
import torch

from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.train import mean_teacher_stage
from uda_adapt.adapt.train.batches import BatchStream
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.datasets import labelled_train_set, train_transform
from uda_adapt.adapt.train.runner import train
from tests.adapt.fixtures import make_folder_dataset


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """Data, and a finished source stage to start the mean teacher from."""
    root = tmp_path_factory.mktemp("jitter")
    source = make_folder_dataset(root / "source", num=4, size=(40, 80), seed=0)
    target = make_folder_dataset(root / "target", num=4, size=(40, 80), seed=1)
    base = [f"data.source.root={source}", f"data.target.root={target}", "data.crop_size=[32, 64]", "data.batch_size=2",
            "data.jitter=0.5", "data.val_limit=1", "source.iterations=1", "self_train.mean_teacher.iterations=1",
            "logging.num_overlays=0"]
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, base), root / "run", stage="source")
    return base, root / "run" / "source" / "last.pt"


def source_batches(source_run, tmp_path, monkeypatch, mode: str) -> tuple[tuple, tuple, tuple]:
    """The stage's first source batch, and the first batch of the same stream under pipeline jitter
    `data.jitter` and under none: (images, labels) each."""
    base, init = source_run
    cfg = load_config(TrainConfig, None, [*base, f"self_train.mean_teacher.source_jitter={mode}"])
    seen = {}
    real_step = mean_teacher_stage.mean_teacher_step

    def spy(state, cfg, step, device, *rest):
        if not seen:
            real_next = state.source.next
            state.source.next = lambda: seen.setdefault("batch", real_next())
            seen["seed"], seen["mean"], seen["std"] = state.source.seed, state.augment.mean, state.augment.std
        return real_step(state, cfg, step, device, *rest)

    monkeypatch.setattr(mean_teacher_stage, "mean_teacher_step", spy)
    train(cfg, tmp_path / mode, stage="self_train", init=init)

    def first_batch(jitter: float) -> tuple:
        transform = train_transform(cfg, cfg.data.source, seen["mean"], seen["std"], jitter=jitter)
        return BatchStream(labelled_train_set(cfg.data.source, transform), cfg.data.batch_size, seen["seed"]).next()

    return seen["batch"], first_batch(cfg.data.jitter), first_batch(0.0)


def same(a: tuple, b: tuple) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_no_source_jitter_feeds_the_clean_crops_to_the_source_loss_and_the_mix(source_run, tmp_path, monkeypatch):
    trained_on, jittered, clean = source_batches(source_run, tmp_path, monkeypatch, "none")
    assert not same(jittered, clean), "jitter changes nothing here: the test would say nothing"
    assert same(trained_on, clean)


def test_pipeline_source_jitter_is_todays_default_and_jitters_the_crops(source_run, tmp_path, monkeypatch):
    assert TrainConfig().self_train.mean_teacher.source_jitter == "pipeline"
    trained_on, jittered, clean = source_batches(source_run, tmp_path, monkeypatch, "pipeline")
    assert same(trained_on, jittered) and not same(trained_on, clean)


@pytest.mark.parametrize("name", ["gta5_to_cityscapes_mean_teacher", "synthia_to_cityscapes_mean_teacher"])
def test_the_daformer_samples_train_on_clean_source_crops(name):
    from pathlib import Path

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[2] / "samples" / "configs" / f"{name}.yaml", [])
    assert cfg.self_train.mean_teacher.source_jitter == "none" and cfg.data.jitter == 0.0
