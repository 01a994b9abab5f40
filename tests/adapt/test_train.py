"""Tiny end-to-end training on CPU: the schedule, resume, determinism and the failure modes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint, save_checkpoint
from uda_adapt.cli.main import main
from uda_adapt.adapt.config import load_config
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train import loop as loop_module
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train
from tests.adapt.fixtures import make_folder_dataset

TINY = [
    "data.crop_size=[32, 64]", "data.batch_size=2", "data.scale_range=[0.9, 1.1]",
    "source.iterations=4", "correlation.iterations=2",
    "self_train.rounds=2", "self_train.iterations_per_round=2", "self_train.mean_teacher.iterations=2",
    "logging.log_every=1", "logging.checkpoint_every=2", "logging.num_overlays=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    source = make_folder_dataset(root / "source", num=4, size=(40, 80), seed=0)
    target = make_folder_dataset(root / "target", num=4, size=(40, 80), seed=1)
    return source, target


def tiny_config(data, *extra):
    source, target = data
    return load_config(TrainConfig, None, [f"data.source.root={source}", f"data.target.root={target}", *TINY, *extra])


def weights(path):
    return load_checkpoint(path).state_dict


def test_schedule_then_eval_from_the_cli(data, tmp_path, capsys):
    source, target = data
    run = tmp_path / "run"
    settings = [f"data.source.root={source}", f"data.target.root={target}", *TINY, "self_train.lambda_ct=0.1"]
    args = ["train", "--out", str(run), *sum((["--set", s] for s in settings), [])]
    assert main(args) == 0
    for stage in ("source", "correlation", "self_train"):
        ckpt = load_checkpoint(run / stage / "last.pt")
        assert ckpt.stage == stage and ckpt.extra["complete"]
        assert ckpt.config["data"]["target"]["root"] == str(target)
        records = [json.loads(line) for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
        assert records and all("step" in r for r in records)
    assert (run / "self_train" / "eval_mean_teacher.json").is_file()  # the default method
    assert list((run / "self_train" / "overlays").glob("*.jpg"))
    assert "correlation" in load_checkpoint(run / "self_train" / "last.pt").extra
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"source", "correlation", "self_train"}

    assert main(["eval", str(run / "self_train" / "last.pt"), "--data", str(target)]) == 0
    result = json.loads((run / "self_train" / "last_eval_val.json").read_text())
    assert result["stage"] == "self_train" and 0.0 <= result["miou"] <= 1.0
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["iast", "mean_teacher"])
def test_without_correlation_transfer_the_module_is_not_fitted_and_nothing_else_changes(data, tmp_path, capsys, method):
    """lambda_ct 0 (the default) skips the correlation stage: the self-trained network is the one a
    run that fitted the module first gets (the stage leaves the network as it is)."""
    cfg = tiny_config(data, "self_train.rounds=1", f"self_train.method={method}")
    assert cfg.self_train.lambda_ct == 0
    train(cfg, tmp_path / "skipped")
    assert "correlation: skipped" in capsys.readouterr().out
    assert not (tmp_path / "skipped" / "correlation").exists()
    assert set(json.loads((tmp_path / "skipped" / "summary.json").read_text())) == {"source", "self_train"}
    for stage in ("source", "correlation", "self_train"):
        train(cfg, tmp_path / "fitted", stage=stage)
    assert (tmp_path / "fitted" / "correlation" / "last.pt").is_file()
    source = weights(tmp_path / "skipped" / "source" / "last.pt")
    skipped, fitted = weights(tmp_path / "skipped" / "self_train" / "last.pt"), weights(tmp_path / "fitted" / "self_train" / "last.pt")
    assert any(not torch.equal(skipped[k], source[k]) for k in source), "self-training did not move the network"
    for key, value in skipped.items():
        assert torch.equal(value, fitted[key]), key


@pytest.mark.parametrize("method", ["iast", "mean_teacher"])
def test_same_seed_same_weights_and_metrics(data, tmp_path, method):
    cfg = tiny_config(data, "self_train.rounds=1", f"self_train.method={method}", "self_train.lambda_ct=0.1")
    train(cfg, tmp_path / "a")
    if method == "iast":
        stats = json.loads((tmp_path / "a" / "self_train" / "round1" / "stats.json").read_text())
        assert 0.0 <= stats["labelled_fraction"] <= 1.0 and len(stats["per_class_pixels"]) == 19
    train(cfg, tmp_path / "b")
    for key, value in weights(tmp_path / "a" / "self_train" / "last.pt").items():
        assert torch.equal(value, weights(tmp_path / "b" / "self_train" / "last.pt")[key]), key
    assert json.loads((tmp_path / "a" / "summary.json").read_text()) == json.loads((tmp_path / "b" / "summary.json").read_text())


def test_interrupted_stage_resumes_where_it_stopped(data, tmp_path, monkeypatch):
    cfg = tiny_config(data)
    train(cfg, tmp_path / "straight", stage="source")

    real = loop_module.run_iterations

    def interrupted(**kwargs):
        step_fn = kwargs["step_fn"]

        def step(i):
            if i == 3:  # after the resume point written at iteration 2
                raise KeyboardInterrupt
            return step_fn(i)

        return real(**{**kwargs, "step_fn": step})

    monkeypatch.setattr("uda_adapt.adapt.train.source_stage.run_iterations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", stage="source")
    partial = load_checkpoint(tmp_path / "resumed" / "source" / "last.pt")
    assert partial.step == 2 and not partial.extra["complete"]
    monkeypatch.setattr("uda_adapt.adapt.train.source_stage.run_iterations", real)
    train(cfg, tmp_path / "resumed", stage="source")
    for key, value in weights(tmp_path / "straight" / "source" / "last.pt").items():
        assert torch.equal(value, weights(tmp_path / "resumed" / "source" / "last.pt")[key]), key


def test_source_stage_draws_by_rare_class_when_asked(data, tmp_path, monkeypatch):
    from uda_adapt.adapt.data import rare_class
    from uda_adapt.adapt.train import source_stage

    made = []

    def recording(*args):
        made.append(args[2:])
        order, pixels = rare_class.rare_class_stream(*args)
        drawn = []
        made.append(drawn)
        return (lambda generator, size: drawn.extend(order(generator, size)) or drawn[-size:]), pixels

    monkeypatch.setattr(source_stage, "rare_class_stream", recording)
    train(tiny_config(data), tmp_path / "plain", stage="source")
    assert not made                                   # off by default
    cfg = tiny_config(data, "source.rare_class_sampling=true", "source.rcs_min_pixels=20", "source.rcs_temperature=0.05")
    train(cfg, tmp_path / "rcs", stage="source")
    assert made[0] == (0.05, 20, 0.5)
    assert made[1] and all(isinstance(pick, tuple) for pick in made[1])   # (image, class) picks fed the batches
    assert load_checkpoint(tmp_path / "rcs" / "source" / "last.pt").extra["complete"]
    plain, rcs = weights(tmp_path / "plain" / "source" / "last.pt"), weights(tmp_path / "rcs" / "source" / "last.pt")
    assert any(not torch.equal(plain[k], rcs[k]) for k in plain)           # other batches, other weights


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_ce = __import__("uda_adapt.adapt.losses", fromlist=["segmentation_ce"]).segmentation_ce

    def flaky_ce(logits, labels, **kwargs):
        calls["n"] += 1
        loss = real_ce(logits, labels, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr("uda_adapt.adapt.train.source_stage.segmentation_ce", flaky_ce)
    with pytest.raises(UserError, match="became nan at iteration 3.*last good checkpoint"):
        train(tiny_config(data), tmp_path / "run", stage="source")
    good = load_checkpoint(tmp_path / "run" / "source" / "last.pt")
    assert good.step == 2
    assert all(torch.isfinite(v).all() for v in good.state_dict.values() if v.is_floating_point())


@pytest.mark.parametrize("method", ["iast", "mean_teacher"])
def test_self_train_without_correlation_checkpoint_is_refused(data, tmp_path, method):
    with pytest.raises(UserError, match="correlation"):
        train(tiny_config(data, "self_train.lambda_ct=0.1", f"self_train.method={method}"), tmp_path / "run", stage="self_train")


def test_checkpoint_of_another_architecture_is_refused(data, tmp_path, capsys):
    cfg = tiny_config(data)
    train(cfg, tmp_path / "run", stage="source")
    capsys.readouterr()
    ckpt = load_checkpoint(tmp_path / "run" / "source" / "last.pt")
    ckpt.model_name = "lraspp_mobilenet_v3_large"
    save_checkpoint(tmp_path / "foreign.pt", ckpt)
    assert main(["eval", str(tmp_path / "foreign.pt"), "--data", str(data[1])]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("uda-adapt: error:") and "another architecture" in err


def test_unknown_model_and_mismatched_classes(data, tmp_path):
    with pytest.raises(UserError, match="unknown model 'resnet9000'"):
        train(tiny_config(data, "model.name=resnet9000"), tmp_path / "run")
    three = make_folder_dataset(tmp_path / "three", num=2, size=(40, 80), classes=3)
    with pytest.raises(UserError, match="different class sets"):
        train(tiny_config(data, f"data.target.root={three}"), tmp_path / "run2")


def test_source_stage_weighs_its_loss_by_class_when_asked(data, tmp_path, monkeypatch, capsys):
    from uda_adapt.adapt.class_weights import source_class_weights
    from uda_adapt.adapt.train import source_stage
    from uda_adapt.adapt.train.datasets import labelled_train_set

    passed = []
    real_ce = source_stage.segmentation_ce
    monkeypatch.setattr(source_stage, "segmentation_ce", lambda logits, labels, **kw: passed.append(kw.get("class_weight")) or real_ce(logits, labels, **kw))
    train(tiny_config(data), tmp_path / "plain", stage="source")
    assert passed and all(w is None for w in passed)                     # off by default
    passed.clear()
    cfg = tiny_config(data, "source.class_weights=enet")
    train(cfg, tmp_path / "enet", stage="source")
    expected = source_class_weights(labelled_train_set(cfg.data.source, None), 19, "enet", cfg.source.rcs_min_pixels)
    assert passed and all(np.array_equal(w.numpy(), expected) for w in passed)
    assert len(set(expected[expected > 0].round(4).tolist())) > 1       # the precondition: unequal weights
    assert "source: class weights: heaviest" in capsys.readouterr().out
    plain, enet = weights(tmp_path / "plain" / "source" / "last.pt"), weights(tmp_path / "enet" / "source" / "last.pt")
    assert any(not torch.equal(plain[k], enet[k]) for k in plain)       # another loss, other weights
