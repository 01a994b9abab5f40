"""Re-running `train --out RUN` with other values: shown and refused unless --resume or --force."""

from __future__ import annotations

import pytest
import yaml

from uda_adapt.adapt.train.rerun import check_rerun, config_differences
from uda_adapt.cli.main import main
from uda_adapt.common.errors import UserError

STARTED = {"seed": 0, "data": {"crop_size": [32, 64], "num_workers": 0}, "logging": {"log_every": 1},
           "self_train": {"lambda_ct": 0.0}}


def _run(tmp_path, config=STARTED):
    run = tmp_path / "run"
    (run / "source").mkdir(parents=True)
    (run / "source" / "last.pt").write_bytes(b"weights")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_the_same_config_resumes_silently(tmp_path):
    run = _run(tmp_path)
    notes = []
    assert check_rerun({**STARTED, "data": {"crop_size": (32, 64), "num_workers": 0}}, run, log=notes.append) is None
    assert notes == []                                   # a tuple and a list of the same values are the same


def test_other_values_are_listed_and_refused(tmp_path):
    run = _run(tmp_path)
    changed = {**STARTED, "self_train": {"lambda_ct": 0.5}, "seed": 1}
    with pytest.raises(UserError) as raised:
        check_rerun(changed, run)
    message = str(raised.value)
    assert "seed 0 -> 1" in message and "self_train.lambda_ct 0.0 -> 0.5" in message
    assert "--resume" in message and "--force" in message
    assert (run / "source" / "last.pt").read_bytes() == b"weights"


def test_resume_continues_under_the_new_values_and_says_which(tmp_path):
    run = _run(tmp_path)
    notes = []
    assert check_rerun({**STARTED, "seed": 1}, run, resume=True, log=notes.append) is None
    assert notes == [f"resuming {run} under a changed config: seed 0 -> 1"]
    assert (run / "source" / "last.pt").is_file()


def test_force_starts_over_and_keeps_the_earlier_files(tmp_path):
    run = _run(tmp_path)
    aside = check_rerun({**STARTED, "seed": 1}, run, force=True, log=lambda line: None)
    assert aside.parent == run and aside.name.startswith("replaced-")
    assert sorted(p.name for p in run.iterdir()) == [aside.name]
    assert (aside / "source" / "last.pt").read_bytes() == b"weights" and (aside / "config.yaml").is_file()


def test_values_that_cannot_change_the_result_may_differ(tmp_path):
    run = _run(tmp_path)
    notes = []
    relaxed = {**STARTED, "data": {"crop_size": [32, 64], "num_workers": 4}, "logging": {"log_every": 10}}
    assert check_rerun(relaxed, run, log=notes.append) is None
    assert notes == ["note: data.num_workers 0 -> 4 (does not change the result)",
                     "note: logging.log_every 1 -> 10 (does not change the result)"]


def test_resume_and_force_together_are_refused(tmp_path):
    with pytest.raises(UserError, match="give one of them"):
        check_rerun(STARTED, _run(tmp_path), resume=True, force=True)


def test_config_differences_of_nested_and_missing_keys():
    assert config_differences({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == [("a.c", None, 2)]


def test_train_command_refuses_a_changed_rerun_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    from uda_adapt.adapt.config import load_config, to_dict
    from uda_adapt.adapt.train.config import TrainConfig

    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(TrainConfig, None, [])), sort_keys=False))
    status = main(["train", "--out", str(run), "--set", "seed=7"])
    err = capsys.readouterr().err
    assert status == 1 and "seed 0 -> 7" in err and err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_the_same_command_resumes_and_another_is_refused_through_the_cli(tmp_path, capsys):
    from tests.adapt.fixtures import make_folder_dataset

    source = make_folder_dataset(tmp_path / "source", num=2, size=(32, 64), seed=0)
    target = make_folder_dataset(tmp_path / "target", num=2, size=(32, 64), seed=1)
    run = tmp_path / "run"
    settings = [f"data.source.root={source}", f"data.target.root={target}", "data.crop_size=[32, 64]", "data.batch_size=2",
                "source.iterations=2", "logging.num_overlays=0"]
    args = ["train", "--stage", "source", "--out", str(run), *[a for s in settings for a in ("--set", s)]]
    assert main(args) == 0
    weights = (run / "source" / "last.pt").read_bytes()
    assert main(args) == 0                                   # the same command: finished, nothing retrained
    assert (run / "source" / "last.pt").read_bytes() == weights
    capsys.readouterr()
    assert main([*args, "--set", "source.iterations=3"]) == 1
    assert "source.iterations 2 -> 3" in capsys.readouterr().err
    assert (run / "source" / "last.pt").read_bytes() == weights
    assert main([*args, "--set", "source.iterations=3", "--resume"]) == 0
