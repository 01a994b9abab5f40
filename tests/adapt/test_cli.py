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
