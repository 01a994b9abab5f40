"""Training on a target with no labels at all (a captured set): every stage runs, label-free measures instead of mIoU."""

import json

import pytest

from uda_adapt.adapt.checkpoint import load_checkpoint
from uda_adapt.cli.main import main
from uda_adapt.common import label_free
from tests.adapt.fixtures import make_folder_dataset
from tests.adapt.test_train import TINY


@pytest.mark.parametrize("with_val", [True, False])
def test_unlabelled_target_runs_every_stage_and_reports_label_free(tmp_path, capsys, with_val):
    source = make_folder_dataset(tmp_path / "source", num=4, size=(40, 80), seed=0)
    target = make_folder_dataset(tmp_path / "target", num=4, size=(40, 80), seed=1, labelled_splits=())
    if not with_val:                                  # `data capture` without --val-fraction
        for path in sorted((target / "val").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (target / "val").rmdir()
    assert not list(target.rglob("labels"))
    run = tmp_path / "run"
    overrides = [f"data.source.root={source}", f"data.target.root={target}", *TINY, "self_train.lambda_ct=0.1"]   # all three stages
    assert main(["train", "--out", str(run), *sum((["--set", s] for s in overrides), [])]) == 0
    out = capsys.readouterr().out
    for stage in ("source", "correlation", "self_train"):
        assert load_checkpoint(run / stage / "last.pt").extra["complete"]
        assert not list((run / stage).glob("eval_*.json"))          # no mIoU without labels
        assert not (run / stage / "best.pt").exists()
    report = json.loads((run / "self_train" / "label_free_mean_teacher.json").read_text())
    assert report["split"] == ("val" if with_val else "train")
    assert 0.0 <= report["measures"][label_free.VALIDATED] <= 1.0
    assert (run / "source" / "label_free_source.json").is_file()
    records = [json.loads(line) for line in (run / "self_train" / "metrics.jsonl").read_text().splitlines()]
    assert any(f"label_free_{label_free.VALIDATED}" in r for r in records)
    assert f"target has no labels: label-free {label_free.VALIDATED} source only" in out

    assert main(["eval", str(run / "self_train" / "last.pt"), "--data", str(target), "--no-labels",
                 "--split", "val" if with_val else "train", "--like", str(source)]) == 0
    out = capsys.readouterr().out
    assert "<- validated quality score" in out and "class_share_distance" in out
    written = json.loads((run / "self_train" / f"last_label_free_{'val' if with_val else 'train'}.json").read_text())
    assert written["measures"]["class_share_distance"] is not None
