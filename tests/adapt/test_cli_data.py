"""`uda-adapt data`: thin commands over adapt.data.synth, with one-line errors."""

from __future__ import annotations

import json

from uda_adapt.cli.main import main


def test_data_help_lists_the_commands(capsys):
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    for command in ("synth", "benchmark", "video"):
        assert command in out
    assert main(["data", "synth", "--help"]) == 0
    assert "--domain [sim|real|night]" in capsys.readouterr().out


def test_cli_choices_match_the_generator():
    from uda_adapt.cli import data as data_command
    from uda_adapt.adapt.data.synth import DOMAINS, SPLITS, TARGET_STYLES

    assert data_command._DOMAINS == DOMAINS and data_command._SPLITS == SPLITS
    assert data_command._TARGET_STYLES == TARGET_STYLES


def test_synth_writes_a_split(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path), "--domain", "real", "--split", "val", "--num", "2",
               "--size", "32x64", "--seed", "3"])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "val" / "images").glob("*.png"))) == 2
    assert json.loads((tmp_path / "synth.json").read_text())["size"] == [32, 64]


def test_benchmark_writes_source_and_target(tmp_path, capsys):
    rc = main(["data", "benchmark", "--out", str(tmp_path), "--size", "32x64", "--num-train", "1", "--num-val", "1"])
    assert rc == 0, capsys.readouterr().err
    for root in ("source", "target"):
        for split in ("train", "val"):
            assert len(list((tmp_path / root / split / "labels").glob("*.png"))) == 1


def test_benchmark_target_style_night_and_an_unknown_style(tmp_path, capsys):
    rc = main(["data", "benchmark", "--out", str(tmp_path), "--size", "32x64", "--num-train", "1", "--num-val", "1",
               "--target-style", "night"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "target" / "synth.json").read_text())["domain"] == "night"
    capsys.readouterr()
    rc = main(["data", "benchmark", "--out", str(tmp_path / "fog"), "--target-style", "fog"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "fog" in line]
    assert rc == 2 and len(errors) == 1, errors
    assert "'real'" in errors[0] and "'night'" in errors[0]
    assert not (tmp_path / "fog").exists()


def test_bad_size_is_a_usage_error(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path), "--domain", "sim", "--size", "64by128"])
    assert rc == 2
    assert "64by128" in capsys.readouterr().err


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for argv in (["data", "synth", "--out", str(blocker / "ds"), "--domain", "sim", "--num", "1", "--size", "32x64"],
                 ["data", "video", "--out", str(blocker / "clip.mp4"), "--frames", "1", "--size", "32x64"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("uda-adapt: error: ") and err.count("\n") == 1, err


def test_video_writes_an_mp4(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["data", "video", "--out", str(out), "--domain", "sim", "--frames", "3", "--size", "32x64", "--fps", "5"])
    assert rc == 0, capsys.readouterr().err
    assert out.stat().st_size > 0
