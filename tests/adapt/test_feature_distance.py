"""DAFormer's ImageNet feature distance: labels on the feature grid, the masked distance, the frozen
ImageNet copy, the refusal without ImageNet weights, and the mean-teacher stage that uses it.

No ImageNet weights can be downloaded here: a torchvision MobileNetV3-Large classification
checkpoint (random, saved to a file) stands in for them, read through `model.pretrained` exactly
as the downloaded file would be.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.feature_distance import (ImagenetFeatureDistance, downscale_labels, feature_stride, imagenet_backbone,
                                              masked_feature_distance)
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.train.config import ImnetFeatureDistanceConfig, TrainConfig
from uda_adapt.adapt.train import mean_teacher_stage
from uda_adapt.adapt.train.runner import train
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import make_folder_dataset
from tests.adapt.test_resume import KILLER, ROOT

MODEL = "lraspp_mobilenet_v3_large"   # the smallest model with an ImageNet backbone
FD = "self_train.mean_teacher.imnet_feature_distance"


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> Path:
    """A torchvision classification checkpoint of MobileNetV3-Large: what `pretrained: imagenet` downloads."""
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_large.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        torch.save(torchvision.models.mobilenet_v3_large().state_dict(), path)
    return path


def test_labels_on_the_feature_grid_keep_a_cell_only_where_its_majority_is_large_enough():
    labels = torch.full((1, 16, 16), 3)
    labels[0, :8, 8:] = 5
    labels[0, :2, 8:] = 6                   # 25 % of the top-right cell
    labels[0, 8:, :4] = 1                   # 50 % of the bottom-left cell
    labels[0, 8:, 8:] = IGNORE_INDEX        # an all-ignore cell stays ignore
    cells = downscale_labels(labels, (2, 2), min_ratio=0.75, num_classes=19)
    assert cells.tolist() == [[[3, 5], [IGNORE_INDEX, IGNORE_INDEX]]]
    assert downscale_labels(labels, (2, 2), min_ratio=0.5, num_classes=19).tolist() == [[[3, 5], [1, IGNORE_INDEX]]]
    # A majority of ignore wins over a class (DAFormer counts ignore as a class of its own).
    labels[0, :5, :8] = IGNORE_INDEX
    assert downscale_labels(labels, (2, 2), min_ratio=0.0, num_classes=19)[0, 0, 0] == IGNORE_INDEX


def test_a_ragged_crop_is_padded_with_ignore_to_the_feature_grid():
    assert feature_stride((512, 512), (64, 64)) == 8
    assert feature_stride((40, 80), (3, 5)) == 16     # ceil(40 / 16) = 3, ceil(80 / 16) = 5
    assert feature_stride((16, 64), (1, 4)) == 16     # one row of cells: the width tells
    labels = torch.full((1, 22, 16), 2)               # stride 8: the last row of cells holds 6 image rows of 8
    assert downscale_labels(labels, (3, 2), min_ratio=0.75, num_classes=19).eq(2).all()
    cells = downscale_labels(labels, (3, 2), min_ratio=0.8, num_classes=19)
    assert cells[0, :2].eq(2).all() and cells[0, 2].eq(IGNORE_INDEX).all()


def test_the_distance_is_the_mean_l2_over_kept_cells_and_zero_without_any():
    features = torch.zeros(1, 2, 1, 2, requires_grad=True)
    reference = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])        # distances 5 and 1
    assert masked_feature_distance(features, reference, None).item() == pytest.approx(3.0)
    assert masked_feature_distance(features, reference, torch.tensor([[[True, False]]])).item() == pytest.approx(5.0)
    empty = masked_feature_distance(features, reference, torch.zeros(1, 1, 2, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(features.grad, torch.zeros_like(features))


def test_a_randomly_initialised_model_is_refused_in_one_line():
    with pytest.raises(UserError) as refused:
        load_config(TrainConfig, None, [f"{FD}.weight=0.005"])
    message = str(refused.value)
    assert "\n" not in message and "'small'" in message and "model.pretrained" in message and "random weights" in message
    load_config(TrainConfig, None, [f"{FD}.weight=0"])                          # off: nothing to refuse
    with pytest.raises(UserError, match="must be 0 or more"):
        load_config(TrainConfig, None, [f"{FD}.weight=-1", "model.pretrained=imagenet"])
    with pytest.raises(UserError, match="no ImageNet backbone"):                # a weight file on a model without one
        ImagenetFeatureDistance(build_segmenter("small", 19), torch.nn.Identity(), "small", ImnetFeatureDistanceConfig(0.005), 19)


def test_the_frozen_copy_is_the_pretrained_backbone_in_eval_mode_and_leaves_the_rng_alone(imagenet_file):
    expected = torch.load(imagenet_file)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    copy = imagenet_backbone(MODEL, 19, str(imagenet_file), torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())
    for key, value in copy.state_dict().items():
        assert torch.equal(value, expected[f"features.{key}"]), key
    with pytest.raises(UserError, match="random weights"):
        imagenet_backbone(MODEL, 19, None, torch.device("cpu"))


def test_the_loss_compares_the_students_last_source_forward_with_the_imagenet_copy(imagenet_file):
    student = build_segmenter(MODEL, 19, str(imagenet_file)).eval()
    copy = imagenet_backbone(MODEL, 19, str(imagenet_file), torch.device("cpu"))
    fd = ImagenetFeatureDistance(student, copy, MODEL, ImnetFeatureDistanceConfig(weight=0.5, classes=(), scale_min_ratio=0.75), 19)
    images, labels = torch.randn(2, 3, 32, 64), torch.randint(0, 19, (2, 32, 64))
    student(images)
    assert fd.loss(images, labels).item() == pytest.approx(0.0, abs=1e-6)     # the student is still ImageNet's
    with torch.no_grad():
        student.backbone["0"][0].weight.mul_(1.5)
    student(images)
    loss = fd.loss(images, labels)
    distance = torch.linalg.vector_norm(student.backbone(images)["high"] - copy(images)["high"], dim=1).mean()
    assert loss.item() == pytest.approx(0.5 * distance.item(), rel=1e-5) and loss.item() > 0
    loss.backward()
    assert student.backbone["0"][0].weight.grad.abs().sum() > 0 and student.classifier.cbr[0].weight.grad is None
    fd.close()
    student(images)
    with pytest.raises(RuntimeError, match="no student forward"):
        fd.loss(images, labels)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return (make_folder_dataset(root / "source", num=4, size=(40, 80), seed=0),
            make_folder_dataset(root / "target", num=4, size=(40, 80), seed=1))


def settings(data, imagenet_file, *extra) -> list[str]:
    source, target = data
    return [f"data.source.root={source}", f"data.target.root={target}", f"model.name={MODEL}", f"model.pretrained={imagenet_file}",
            "data.crop_size=[32, 64]", "data.batch_size=2", "data.scale_range=[0.7, 1.2]", "data.val_limit=1",
            "source.iterations=2", "self_train.method=mean_teacher", "self_train.mean_teacher.iterations=4",
            f"{FD}.weight=0.005", f"{FD}.scale_min_ratio=0.25",
            "logging.log_every=1", "logging.checkpoint_every=2", "logging.num_overlays=0", *extra]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run_and_saves_no_imagenet_copy(data, imagenet_file, tmp_path,
                                                                                              monkeypatch):
    config = settings(data, imagenet_file)
    torch.set_num_threads(1)
    train(load_config(TrainConfig, None, config), tmp_path / "source", stage="source")
    resumed = tmp_path / "resumed"
    for run in (tmp_path / "straight", resumed):   # both start from the same finished source stage
        shutil.copytree(tmp_path / "source" / "source", run / "source")
    built = []
    monkeypatch.setattr(mean_teacher_stage, "ImagenetFeatureDistance",
                        lambda *args: built.append(ImagenetFeatureDistance(*args)) or built[-1])
    train(load_config(TrainConfig, None, config), tmp_path / "straight")
    monkeypatch.undo()
    # The stage compares with the weights the network was initialised with, not the source-trained ones.
    assert len(built) == 1
    pretrained, trained = torch.load(imagenet_file), load_checkpoint(tmp_path / "source" / "source" / "last.pt").state_dict
    for key, value in built[0].imagenet.state_dict().items():
        assert torch.equal(value, pretrained[f"features.{key}"]), key
    assert any(not torch.equal(value, trained[f"backbone.{key}"]) for key, value in built[0].imagenet.state_dict().items())
    killed = subprocess.run([sys.executable, "-c", KILLER, "self_train", "1", str(resumed), *config],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not load_checkpoint(resumed / "self_train" / "last.pt").extra["complete"]
    train(load_config(TrainConfig, None, config), resumed)

    straight, again = (load_checkpoint(run / "self_train" / "last.pt") for run in (tmp_path / "straight", resumed))
    for key, value in straight.state_dict.items():
        assert torch.equal(value, again.state_dict[key]), key
    for key, value in straight.extra["student"].items():
        assert torch.equal(value, again.extra["student"][key]), key
    records = [json.loads(line) for line in (tmp_path / "straight" / "self_train" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("imnet_fd", 0) > 0 for r in records), "the feature distance never counted"
    # Checkpoint and export hold the network and its teacher only: no frozen ImageNet copy.
    network_keys = set(build_segmenter(MODEL, 19).state_dict())
    assert set(straight.state_dict) == network_keys == set(straight.extra["teacher"]) == set(straight.extra["student"])
    tensors = [k for k, v in straight.extra.items() if isinstance(v, dict) and v and all(torch.is_tensor(t) for t in v.values())]
    assert sorted(tensors) == ["student", "student_training_bn", "teacher"], tensors


@pytest.mark.parametrize("name", ["gta5_to_cityscapes_mean_teacher", "synthia_to_cityscapes_mean_teacher"])
def test_the_full_scale_daformer_samples_turn_it_on_as_daformer_on_an_imagenet_model(name):
    from uda_adapt.adapt.models.deeplabv2 import DeepLabV2ResNet101

    cfg = load_config(TrainConfig, ROOT / "samples" / "configs" / f"{name}.yaml", [])
    fd = cfg.self_train.mean_teacher.imnet_feature_distance
    assert (fd.weight, fd.classes, fd.scale_min_ratio) == (0.005, (6, 7, 11, 12, 13, 14, 15, 16, 17, 18), 0.75)
    assert cfg.model.name == "deeplabv2_resnet101" and cfg.model.pretrained == "imagenet"
    assert DeepLabV2ResNet101.imagenet_weights is not None
