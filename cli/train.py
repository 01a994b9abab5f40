"""`uda-adapt train` and `uda-adapt eval`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from uda_adapt.cli.options import SIZE, require_training_stack

# adapt.checkpoint.STORED_NETWORKS, spelt out: the CLI imports no torch before a command runs.
STORED_NETWORKS = ("exported", "student", "teacher", "student-training-bn")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE|NAME",
              help="YAML config, or a built-in config's name (e.g. gta5_to_cityscapes_mean_teacher; an unknown name lists them).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set self_train.lambda_ct=0.5 (repeatable).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory; re-running resumes it.")
@click.option("--stage", type=click.Choice(["source", "correlation", "self_train"]), help="Run only this stage.")
@click.option("--init", "init", type=click.Path(dir_okay=False), help="Checkpoint the single --stage starts from (default: the previous stage in --out).")
def train(config_path: str | None, overrides: tuple[str, ...], run_dir: str, stage: str | None, init: str | None) -> None:
    """Adapt a segmenter: source -> correlation -> self_train (or one --stage)."""
    require_training_stack("train")
    from uda_adapt.adapt.config import load_config
    from uda_adapt.adapt.train.config import TrainConfig
    from uda_adapt.adapt.train.runner import train as run_training

    cfg = load_config(TrainConfig, config_path, overrides)
    final = run_training(cfg, run_dir, stage=stage, init=init)
    if os.environ.get("RANK", "0") == "0":   # under torchrun, one line for the whole job
        from uda_adapt.adapt.train.label_free_report import final_line

        line = final_line(run_dir)    # a target without labels: the validated label-free measure
        if line:
            click.echo(line)
        click.echo(f"done: {final}")


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_root", required=True, type=click.Path(), help="Dataset root (with labels, unless --no-labels).")
@click.option("--kind", default="folder", show_default=True, type=click.Choice(["folder", "gta5", "synthia", "cityscapes"]))
@click.option("--split", default="val", show_default=True)
@click.option("--size", type=SIZE, default=None, help="Network input size HxW (labels stay at full resolution).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Where to write the result (default: beside the checkpoint).")
@click.option("--network", default="exported", show_default=True, type=click.Choice(list(STORED_NETWORKS)),
              help="Which network of a finished mean-teacher checkpoint: the exported one, the student, the EMA teacher, "
                   "or the student with the BatchNorm statistics training left (before their re-estimation on the target).")
@click.option("--no-labels", is_flag=True, help="Score without labels: the label-free measures (the validated one marked).")
@click.option("--like", "source_root", type=click.Path(file_okay=False), default=None, metavar="SOURCE_ROOT",
              help="--no-labels: the labelled source dataset, for the class-share distance [default: the checkpoint's training source].")
def evaluate(checkpoint: str, data_root: str, kind: str, split: str, size, device: str, json_path: str | None,
             network: str, no_labels: bool, source_root: str | None) -> None:
    """Per-class IoU and mIoU (19/16/13 protocols) of CHECKPOINT on a labelled split.

    With --no-labels: label-free measures on the split's images (no labels read).
    """
    require_training_stack("eval")
    if no_labels and network != "exported":
        raise click.UsageError("--network scores against labels; drop --no-labels or --network")
    if no_labels:
        from uda_adapt.adapt.label_free_eval import measure_checkpoint
        from uda_adapt.common.label_free import format_measures

        values, out = measure_checkpoint(checkpoint, data_root, kind=kind, split=split, size=size, device=device,
                                         source_root=source_root, json_path=json_path)
        click.echo(format_measures(values))
        click.echo(f"(written to {Path(out)})")
        return
    from uda_adapt.adapt.eval_checkpoint import evaluate_checkpoint

    result, out = evaluate_checkpoint(checkpoint, data_root, kind=kind, split=split, size=size, device=device, json_path=json_path,
                                      network=network)
    click.echo(result.format_table())
    click.echo(f"mIoU {100 * result.miou:.2f}  (written to {Path(out)})")
