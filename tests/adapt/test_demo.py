"""The main job, end to end at smoke-test size: data -> train -> eval -> export -> video -> run."""

import json
import re

import cv2

from uda_adapt.cli.main import main


def test_demo_quick_runs_the_whole_chain(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--quick", "--frames", "24",
               "--set", "source.iterations=6", "--set", "self_train.iterations_per_round=4",
               "--set", "self_train.mean_teacher.iterations=4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    out = tmp_path / "demo" / "quick"     # a smoke test never mixes with a full demo on the same --out
    assert (out / "run" / "self_train" / "last.pt").is_file()
    # The demo ends by saying what adaptation bought for free (target BatchNorm statistics) and
    # what training added, from the three evaluations it wrote.
    source = 100 * json.loads((out / "run" / "source" / "eval_source.json").read_text())["miou"]
    target_bn = json.loads((out / "run" / "eval_target_bn.json").read_text())
    adapted = json.loads((out / "run" / "eval_adapted.json").read_text())
    assert target_bn["checkpoint"] == str(out / "run" / "source" / "last.pt")
    assert adapted["checkpoint"] == str(out / "run" / "self_train" / "last.pt")
    bn, after = 100 * target_bn["miou"], 100 * adapted["miou"]
    assert (f"source only {source:.2f} -> target BatchNorm only {bn:.2f} -> adapted {after:.2f} "
            f"(BatchNorm {bn - source:+.2f} points, training {after - bn:+.2f})") in captured.out
    # The demo's shorter schedule is on the printed command line, and the user's --set still wins.
    assert "--set self_train.mean_teacher.iterations=400" in captured.out
    assert "mean_teacher:\n    iterations: 4\n" in (out / "run" / "config.yaml").read_text()
    # Each step says how long it took, and so does the whole chain (the 10-minute budget is checkable).
    for command in ("data", "train", "eval", "export", "run"):
        assert re.search(rf"\(uda-adapt {command} took \d+:\d\d\)", captured.out), command
    assert re.search(r"^demo took \d+:\d\d", captured.out, re.MULTILINE)
    parity = json.loads((out / "export" / "report" / "parity.json").read_text())
    assert parity["passed"] is True
    manifest = json.loads((out / "export" / "model.json").read_text())
    assert len(manifest["classes"]) == 19
    video = cv2.VideoCapture(str(out / "video" / "overlay.mp4"))
    try:
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    finally:
        video.release()
    assert cv2.imread(str(out / "video" / "overlay_frame.png")) is not None
    report = json.loads((out / "video" / "run_report.json").read_text())
    assert report["frames"] == 24


def test_durations_read_as_minutes_and_seconds():
    from uda_adapt.cli.demo import minutes

    assert minutes(425.3) == "7:05"
    assert minutes(59.6) == "1:00"
    assert minutes(0.2) == "0:00"
