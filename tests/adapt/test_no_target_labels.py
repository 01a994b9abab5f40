"""Adaptation never reads the target's train labels: with them scrambled, or deleted, every stage
trains to the same weights, bit for bit (student, EMA teacher, BatchNorm buffers, module).

Target train labels exist on the built-in benchmark for the oracle row only; a run that used them,
for a crop, a pseudo label or a threshold, would train differently under scrambled labels.
"""

import shutil

import numpy as np
import pytest
import torch

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.images import read_label
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.runner import train
from tests.adapt.fixtures import make_folder_dataset
from tests.adapt.test_train import TINY

import cv2


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """(source, target with scrambled train labels, the same target with train/labels deleted)."""
    root = tmp_path_factory.mktemp("no_target_labels")
    source = make_folder_dataset(root / "source", num=4, size=(40, 80), seed=0)
    scrambled = make_folder_dataset(root / "scrambled", num=4, size=(40, 80), seed=1)
    rng = np.random.default_rng(7)
    for path in sorted((scrambled / "train" / "labels").glob("*.png")):
        label = read_label(path)
        noise = rng.choice(np.append(np.arange(19), IGNORE_INDEX).astype(np.uint8), size=label.shape)
        assert (noise != label).mean() > 0.5
        cv2.imwrite(str(path), noise)
    deleted = root / "deleted"
    shutil.copytree(scrambled, deleted)
    shutil.rmtree(deleted / "train" / "labels")
    # Preconditions: the scrambled labels are valid ones a run could read; the other target has none.
    assert open_dataset("folder", scrambled, "train", require_labels=True).has_labels
    assert not open_dataset("folder", deleted, "train", require_labels=False).has_labels
    return source, scrambled, deleted


def tensors(tree, prefix=""):
    """Every tensor in a nested dict/list (state dicts, the EMA teacher, the module, optimizer state)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    found = {}
    for key, value in items:
        found.update(tensors(value, f"{prefix}/{key}"))
    return found


def moved(after: dict, before: dict) -> bool:
    return any(not torch.equal(value, before[key]) for key, value in after.items()
               if key in before and value.is_floating_point())


def config(source, target, *settings):
    return load_config(TrainConfig, None, [f"data.source.root={source}", f"data.target.root={target}", *TINY, *settings])


def assert_same_tensors(path_a, path_b) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a.extra["complete"] and b.extra["complete"]
    for tree_a, tree_b in ((a.state_dict, b.state_dict), (a.extra, b.extra)):
        found_a, found_b = tensors(tree_a), tensors(tree_b)
        assert found_a and found_a.keys() == found_b.keys()
        for key in found_a:
            assert torch.equal(found_a[key], found_b[key]), (path_a, key)


@pytest.fixture(scope="module")
def correlation_runs(targets, tmp_path_factory):
    """The source and correlation stages, once per target: {name: run dir}."""
    source, scrambled, deleted = targets
    root = tmp_path_factory.mktemp("runs")
    for name, target in (("scrambled", scrambled), ("deleted", deleted)):
        cfg = config(source, target)
        train(cfg, root / name, stage="source")
        train(cfg, root / name, stage="correlation")
    return {"scrambled": root / "scrambled", "deleted": root / "deleted"}


def test_source_and_correlation_stages_do_not_depend_on_target_train_labels(correlation_runs):
    for stage in ("source", "correlation"):
        assert_same_tensors(correlation_runs["scrambled"] / stage / "last.pt", correlation_runs["deleted"] / stage / "last.pt")


@pytest.mark.parametrize("method", ["mean_teacher", "iast"])
def test_scrambled_and_deleted_target_train_labels_adapt_to_identical_weights(targets, correlation_runs, tmp_path, method):
    source, scrambled, deleted = targets
    runs = {}
    for name, target in (("scrambled", scrambled), ("deleted", deleted)):
        cfg = config(source, target, f"self_train.method={method}", "self_train.lambda_ct=0.1", "self_train.mean_teacher.iterations=3")
        train(cfg, tmp_path / name, stage="self_train", init=correlation_runs[name] / "correlation" / "last.pt")
        runs[name] = tmp_path / name
    assert_same_tensors(runs["scrambled"] / "self_train" / "last.pt", runs["deleted"] / "self_train" / "last.pt")

    # The comparison means something only if self-training changed the network it started from:
    # its weights, its BatchNorm buffers and, for the mean teacher, the EMA teacher.
    start = tensors(load_checkpoint(correlation_runs["deleted"] / "correlation" / "last.pt").state_dict)
    adapted = load_checkpoint(runs["deleted"] / "self_train" / "last.pt")
    assert moved(tensors(adapted.state_dict), start)
    running = {k: v for k, v in tensors(adapted.state_dict).items() if "running_mean" in k}
    assert running and moved(running, start)
    if method == "mean_teacher":
        teacher = tensors(adapted.extra["teacher"])
        assert teacher and moved(teacher, start)
    else:   # and the pseudo labels IAST trained on are the same pixels
        pseudo = sorted((runs["deleted"] / "self_train").glob("round*/pseudo/*.png"))
        assert pseudo
        for png in pseudo:
            twin = runs["scrambled"] / png.relative_to(runs["deleted"])
            np.testing.assert_array_equal(read_label(png), read_label(twin))
