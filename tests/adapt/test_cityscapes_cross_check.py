"""Our label table and mIoU against the Cityscapes team's own code (cityscapesScripts 2.3.0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from uda_adapt.adapt.evaluation import evaluate
from tests.adapt.fixtures import make_cityscapes_tree

labels_module = pytest.importorskip("cityscapesscripts.helpers.labels")

# Runs in a fresh interpreter: evalPixelLevelSemanticLabeling reads the environment and builds a
# global `args` at import time, which must not leak into (or from) other tests.
OFFICIAL_EVAL = r"""
import json, sys
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
predictions, ground_truths = json.loads(sys.stdin.read())
official.args.evalInstLevelScore = False   # its instance part calls np.in1d, gone in numpy 2.4
official.args.JSONOutput = False
official.args.quiet = True
result = official.evaluateImgLists(predictions, ground_truths, official.args)
print(json.dumps({"miou": result["averageScoreClasses"], "iou": result["classScores"]}))
"""


def test_label_id_table_matches_cityscapesscripts():
    official = {label.id: label.trainId for label in labels_module.labels
                if label.id >= 0 and label.trainId not in (255, -1)}
    assert LABEL_ID_TO_TRAIN_ID == official
    assert [labels_module.trainId2label[i].name for i in range(19)] == list(CITYSCAPES_CLASSES)


@pytest.mark.parametrize("scenario", ["all 19 classes", "train absent, truck only predicted"])
def test_miou_matches_the_official_evaluator(tmp_path, scenario):
    tree = make_cityscapes_tree(tmp_path / "cityscapes", splits=("val",), per_city=2, size=(64, 128), seed=3)
    ds = open_dataset("cityscapes", tmp_path / "cityscapes", "val", require_labels=True)
    rng = np.random.default_rng(0)
    train_id_to_label_id = np.zeros(256, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        train_id_to_label_id[train_id] = label_id

    predictions: dict[str, np.ndarray] = {}
    prediction_files, ground_truth_files = [], []
    for index, stem in enumerate(ds.stems):
        gt_file = ds.samples[index].label
        if scenario != "all 19 classes":   # take 'train' (31) and 'truck' (27) out of the ground truth
            raw = tree.raw_labels["val"][stem]
            cv2.imwrite(str(gt_file), np.where(np.isin(raw, (27, 31)), 0, raw).astype(np.uint8))
        gt = ds.load(index)[1]
        noise = rng.integers(0, 19, size=gt.shape)
        pred = np.where((gt != IGNORE_INDEX) & (rng.random(gt.shape) < 0.7), gt, noise).astype(np.uint8)
        if scenario != "all 19 classes":
            pred[pred == 16] = 0          # nobody predicts 'train': NaN in both evaluators
            pred[:2, :5] = 14             # 'truck' is predicted but never labelled: IoU 0
        predictions[stem] = pred
        prediction_file = tmp_path / "results" / f"{stem}_pred.png"
        prediction_file.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(prediction_file), train_id_to_label_id[pred])   # it reads label ids
        prediction_files.append(str(prediction_file))
        ground_truth_files.append(str(gt_file))

    order = iter(ds.stems)

    def model_fn(image: torch.Tensor) -> torch.Tensor:
        pred = torch.from_numpy(predictions[next(order)]).long()
        return F.one_hot(pred, 19).permute(2, 0, 1)[None].float()

    ours = evaluate(model_fn, ds, progress=False)

    env = dict(os.environ, CITYSCAPES_DATASET=str(tmp_path / "cityscapes"), CITYSCAPES_RESULTS=str(tmp_path / "results"))
    done = subprocess.run([sys.executable, "-c", OFFICIAL_EVAL], input=json.dumps([prediction_files, ground_truth_files]),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])

    assert abs(ours.miou - theirs["miou"]) < 1e-6
    for name in CITYSCAPES_CLASSES:
        mine, official = ours.per_class_iou[name], theirs["iou"][name]
        assert (np.isnan(mine) and np.isnan(official)) or abs(mine - official) < 1e-6, name
    if scenario == "all 19 classes":
        assert not any(np.isnan(v) for v in ours.per_class_iou.values())
    else:
        assert np.isnan(ours.per_class_iou["train"]) and ours.per_class_iou["truck"] == 0.0
