import pytest

from uda_adapt.common import __version__
from uda_adapt.cli.main import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("data", "train", "eval"):
        assert command in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_user_error_is_one_line_exit_1(tmp_path, capsys):
    rc = main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("uda-adapt: error:") and err.count("\n") == 1
    assert "missing.yaml" in err and "Traceback" not in err


def test_unknown_config_key_from_cli(tmp_path, capsys):
    rc = main(["train", "--set", "model.nmae=small", "--out", str(tmp_path / "run")])
    assert rc == 1
    assert "model.nmae" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    from uda_adapt.common.errors import UserError

    with pytest.raises(UserError):
        main(["--debug", "train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")])


def test_eval_unreadable_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = main(["eval", str(bad), "--data", str(tmp_path)])
    assert rc == 1
    assert "bad.pt" in capsys.readouterr().err


def test_eval_offers_exactly_the_networks_a_checkpoint_stores():
    from uda_adapt.adapt.checkpoint import STORED_NETWORKS
    from uda_adapt.cli import train as train_commands

    assert train_commands.STORED_NETWORKS == STORED_NETWORKS


def test_eval_network_needs_labels(tmp_path, capsys):
    rc = main(["eval", str(tmp_path / "last.pt"), "--data", str(tmp_path), "--no-labels", "--network", "teacher"])
    assert rc == 2
    assert "--network" in capsys.readouterr().err


@pytest.mark.parametrize("given, canonical", [("auto", "auto"), ("CPU", "cpu"), ("0", "cuda:0"), ("cuda:1", "cuda:1"),
                                              ("cuda", "cuda:0"), (" 2 ", "cuda:2")])
def test_one_device_spelling_for_every_command(given, canonical):
    from uda_adapt.cli.options import DEVICE, gpu_index

    assert DEVICE.convert(given, None, None) == canonical
    if canonical != "cpu":
        assert gpu_index(canonical, "run") == (0 if canonical == "auto" else int(canonical[5:]))


@pytest.mark.parametrize("command", [["eval", "ckpt.pt", "--data", "d"], ["run", "model.onnx"], ["bench", "model.onnx"],
                                     ["build", "."], ["check", "."]])
def test_a_nonsense_device_is_a_usage_error_that_shows_both_spellings(command, capsys):
    assert main([*command, "--device", "gpu0"]) == 2
    err = capsys.readouterr().err
    assert "'gpu0' is not a device" in err and "0, or cuda:0" in err


def test_cpu_where_tensorrt_needs_a_gpu_is_one_line(capsys):
    assert main(["check", ".", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT needs a GPU" in err and err.count("\n") == 1


def test_shell_completion_offers_the_choices(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "_UDA_ADAPT_COMPLETE": "bash_complete", "COMP_WORDS": "uda-adapt export x --data-kind c",
           "COMP_CWORD": "4"}
    done = subprocess.run([sys.executable, "-m", "uda_adapt"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["plain,cityscapes"]
