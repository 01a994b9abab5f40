"""Training and evaluation logs redirected to a file (a SLURM `.out`): plain progress lines, no bars."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adapt.fixtures import make_folder_dataset

REPO = Path(__file__).resolve().parents[2]
STEPS = ["data.crop_size=[32, 64]", "data.batch_size=2", "source.iterations=4", "logging.log_every=2",
         "logging.checkpoint_every=2", "logging.num_overlays=0"]


def _run_logged(args: list[str], log: Path, **env: str) -> int:
    """`python -m uda_adapt ARGS` with stdout and stderr appended to `log`, as `cmd > log 2>&1` does."""
    environment = {**os.environ, **env}
    environment.pop("UDA_ADAPT_QUIET", None) if "UDA_ADAPT_QUIET" not in env else None
    with open(log, "ab") as handle:
        return subprocess.run([sys.executable, "-m", "uda_adapt", *args], stdout=handle, stderr=handle,
                              cwd=REPO, env=environment, timeout=300).returncode


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_folder_dataset(root / "source", num=2, size=(32, 64), seed=0), make_folder_dataset(root / "target", num=2, size=(32, 64), seed=1)


def _train_args(data, run: Path, *extra: str) -> list[str]:
    source, target = data
    settings = [f"data.source.root={source}", f"data.target.root={target}", *STEPS]
    return ["train", "--stage", "source", "--out", str(run), *extra, *[a for s in settings for a in ("--set", s)]]


def test_a_redirected_training_and_evaluation_log_has_progress_lines_and_no_carriage_returns(data, tmp_path):
    log = tmp_path / "job.out"
    run = tmp_path / "run"
    assert _run_logged(_train_args(data, run), log) == 0
    assert _run_logged(["eval", str(run / "source" / "last.pt"), "--data", str(data[1]), "--size", "32x64"], log) == 0
    text = log.read_bytes().decode()
    assert text, "the job wrote nothing"
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "Iter [" in line]
    assert [re.search(r"Iter \[(\d+/\d+)\]", line).group(1) for line in lines] == ["2/4", "4/4"]
    assert all("loss" in line and "img/s" in line and "ETA" in line for line in lines)
    assert "mIoU" in text                  # the evaluation's table, with no bar before it


def test_quiet_training_prints_no_progress_lines(data, tmp_path):
    log = tmp_path / "quiet.out"
    assert _run_logged(_train_args(data, tmp_path / "run", "-q"), log) == 0
    text = log.read_text()
    assert "done:" in text                 # results still print
    assert "Iter [" not in text and "\r" not in text
