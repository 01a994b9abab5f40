"""`uda-adapt train` and `uda-adapt eval`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from uda_adapt.cli.options import DEVICE_HELP, SIZE, device_option, quiet_option, require_training_stack

# adapt.checkpoint.STORED_NETWORKS, spelt out: the CLI imports no torch before a command runs.
STORED_NETWORKS = ("exported", "student", "teacher", "student-training-bn")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE|NAME",
              help="YAML config, or a built-in config's name (e.g. gta5_to_cityscapes_mean_teacher; an unknown name lists them).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set self_train.lambda_ct=0.5 (repeatable).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory; re-running the same command resumes it (other values: see --resume/--force).")
@click.option("--stage", type=click.Choice(["source", "correlation", "self_train"]), help="Run only this stage.")
@click.option("--init", "init", type=click.Path(dir_okay=False), help="Checkpoint the single --stage starts from (default: the previous stage in --out).")
@click.option("--resume", is_flag=True, help="RUN was started with other values: continue it under the new ones.")
@click.option("--force", is_flag=True, help="RUN was started with other values: start over (its files move to RUN/replaced-<time>/).")
@quiet_option
def train(config_path: str | None, overrides: tuple[str, ...], run_dir: str, stage: str | None, init: str | None,
          resume: bool, force: bool) -> None:
    """Adapt a segmenter: source -> correlation -> self_train (or one --stage).

    Re-running with the same config resumes RUN; with other values it lists them and stops
    unless --resume or --force says what to do.
    """
    require_training_stack("train")
    from uda_adapt.adapt.config import load_config, to_dict
    from uda_adapt.adapt.train.config import TrainConfig
    from uda_adapt.adapt.train.rerun import check_rerun
    from uda_adapt.adapt.train.runner import train as run_training

    cfg = load_config(TrainConfig, config_path, overrides)
    check_rerun(to_dict(cfg), run_dir, resume=resume, force=force, log=lambda line: click.echo(line, err=True))
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
@device_option(DEVICE_HELP)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Where to write the result (default: beside the checkpoint).")
@click.option("--network", default="exported", show_default=True, type=click.Choice(list(STORED_NETWORKS)),
              help="Which network of a finished mean-teacher checkpoint: the exported one, the student, the EMA teacher, "
                   "or the student with the BatchNorm statistics training left (before their re-estimation on the target).")
@click.option("--no-labels", is_flag=True, help="Score without labels: the label-free measures (the validated one marked).")
@click.option("--like", "source_root", type=click.Path(file_okay=False), default=None, metavar="SOURCE_ROOT",
              help="--no-labels: the labelled source dataset, for the class-share distance [default: the checkpoint's training source].")
@click.option("--save-predictions", "predictions_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also save each image's predicted class ids as a PNG in DIR, at label resolution, named after the image.")
@click.option("--mask-format", type=click.Choice(["id", "palette"]), default="id", show_default=True,
              help="--save-predictions: id: 8-bit grey class ids; palette: the same ids with the class colours.")
@click.option("--confusion-png", "confusion_png", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Where to draw the confusion matrix [default: beside the JSON, *_confusion.png].")
@quiet_option
def evaluate(checkpoint: str, data_root: str, kind: str, split: str, size, device: str, json_path: str | None,
             network: str, no_labels: bool, source_root: str | None, predictions_dir: str | None, mask_format: str,
             confusion_png: str | None) -> None:
    """Per-class IoU, accuracy and mIoU (19/16/13 protocols) of CHECKPOINT on a labelled split.

    The JSON holds the confusion matrix too (rows: labels, columns: predictions), drawn as a PNG.
    With --no-labels: label-free measures on the split's images (no labels read).
    """
    require_training_stack("eval")
    if no_labels and network != "exported":
        raise click.UsageError("--network scores against labels; drop --no-labels or --network")
    if no_labels and (predictions_dir or confusion_png):
        raise click.UsageError("--save-predictions and --confusion-png go with labelled evaluation; drop --no-labels or them")
    if no_labels:
        from uda_adapt.adapt.label_free_eval import measure_checkpoint
        from uda_adapt.common.label_free import format_measures

        values, out = measure_checkpoint(checkpoint, data_root, kind=kind, split=split, size=size, device=device,
                                         source_root=source_root, json_path=json_path)
        click.echo(format_measures(values))
        click.echo(f"(written to {Path(out)})")
        return
    from uda_adapt.adapt.eval_checkpoint import default_confusion_png, evaluate_checkpoint

    result, out = evaluate_checkpoint(checkpoint, data_root, kind=kind, split=split, size=size, device=device, json_path=json_path,
                                      network=network, predictions_dir=predictions_dir, mask_format=mask_format,
                                      confusion_png=confusion_png)
    click.echo(result.format_table())
    drawn = confusion_png or default_confusion_png(out)
    click.echo(f"mIoU {100 * result.miou:.2f}  (written to {Path(out)}; confusion matrix {drawn})")
    if predictions_dir:
        click.echo(f"predictions in {predictions_dir}")
