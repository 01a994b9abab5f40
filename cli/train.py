"""`uda-adapt train` and `uda-adapt eval`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.options import SIZE, require_training_stack


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (see samples/configs/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set self_train.lambda_ct=0.5 (repeatable).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory; re-running resumes it.")
@click.option("--stage", type=click.Choice(["source", "correlation", "self_train"]), help="Run only this stage.")
@click.option("--init", "init", type=click.Path(dir_okay=False), help="Checkpoint the single --stage starts from (default: the previous stage in --out).")
def train(config_path: str | None, overrides: tuple[str, ...], run_dir: str, stage: str | None, init: str | None) -> None:
    """Adapt a segmenter: source -> correlation -> self_train (or one --stage)."""
    require_training_stack("train")
    from adapt.config import load_config
    from adapt.train.config import TrainConfig
    from adapt.train.runner import train as run_training

    cfg = load_config(TrainConfig, config_path, overrides)
    final = run_training(cfg, run_dir, stage=stage, init=init)
    if os.environ.get("RANK", "0") == "0":   # under torchrun, one line for the whole job
        click.echo(f"done: {final}")


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_root", required=True, type=click.Path(), help="Dataset root with labels.")
@click.option("--kind", default="folder", show_default=True, type=click.Choice(["folder", "gta5", "synthia", "cityscapes"]))
@click.option("--split", default="val", show_default=True)
@click.option("--size", type=SIZE, default=None, help="Network input size HxW (labels stay at full resolution).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Where to write the result (default: beside the checkpoint).")
def evaluate(checkpoint: str, data_root: str, kind: str, split: str, size, device: str, json_path: str | None) -> None:
    """Per-class IoU and mIoU (19/16/13 protocols) of CHECKPOINT on a labelled split."""
    require_training_stack("eval")
    from adapt.eval_checkpoint import evaluate_checkpoint

    result, out = evaluate_checkpoint(checkpoint, data_root, kind=kind, split=split, size=size, device=device, json_path=json_path)
    click.echo(result.format_table())
    click.echo(f"mIoU {100 * result.miou:.2f}  (written to {Path(out)})")
