"""`uda-adapt demo`: the main job on the embedded benchmark, as the commands a user would type.

data benchmark -> train -> eval -> export (ONNX + parity gate) -> data video -> run
Each step is printed as its `uda-adapt ...` command line, so the demo doubles as a tutorial.
Re-running it on the same --out reuses what is already there (training resumes); with other --set
values, --resume or --force says what to do with the earlier run (the train command's rule).

It ends by separating what adaptation bought for free from what training added:
`source only X -> target BatchNorm only Y -> adapted Z`, where Y is the source network with its
BatchNorm statistics re-estimated on the unlabelled target train images (AdaBN, no training).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click

from uda_adapt.cli.options import require_training_stack

# The built-in schedule with 400 mean-teacher steps, not 600, so that the whole chain fits 10 minutes
# on 2 CPU cores. Its learning rate is constant, so these are the first 400 steps of the 600-step
# run, and on the embedded benchmark the steps after the 200th added about 0.3 mIoU to the EMA
# teacher (benchmarks/results/teacher_bn_short.md against ablation.md). `--set
# self_train.mean_teacher.iterations=600` runs the full schedule; a --config runs as written.
DEMO_SCHEDULE = ["self_train.mean_teacher.iterations=400"]

# A few iterations of everything: proves the whole chain works in about a minute.
QUICK = [
    "source.iterations=30", "correlation.iterations=10", "self_train.rounds=1",
    "self_train.iterations_per_round=10", "self_train.mean_teacher.iterations=10",
    "logging.log_every=5", "logging.num_overlays=2",
]


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Everything the demo writes goes here.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Training config [default: the built-in synthetic schedule].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable).")
@click.option("--quick", is_flag=True, help="Tiny dataset and a few iterations: a smoke test of the whole chain.")
@click.option("--frames", type=int, default=None, help="Frames of the demo video [default: 150, 30 with --quick].")
@click.option("--resume", is_flag=True, help="OUT's run was started with other --set values: continue it under the new ones.")
@click.option("--force", is_flag=True, help="OUT's run was started with other --set values: train it again (its files move aside).")
@click.pass_context
def demo(ctx: click.Context, out: str, config_path: str | None, overrides: tuple[str, ...], quick: bool, frames: int | None,
         resume: bool, force: bool) -> None:
    """Generate data, adapt, evaluate, export and segment a video, end to end.

    --quick works in OUT/quick/, so a smoke test and the full demo on the same --out never mix
    their datasets or their runs.
    """
    require_training_stack("demo")
    started = time.perf_counter()
    root = Path(out) / "quick" if quick else Path(out)
    data, run, export_dir, video_dir = root / "data", root / "run", root / "export", root / "video"
    sizes = ["--num-train", "24", "--num-val", "8"] if quick else []
    _step(ctx, ["data", "benchmark", "--out", str(data), *sizes])

    train_args = ["train", "--out", str(run), "--set", f"data.source.root={data / 'source'}", "--set", f"data.target.root={data / 'target'}"]
    if config_path:
        train_args += ["--config", config_path]
    train_args += [*(["--resume"] if resume else []), *(["--force"] if force else [])]
    for item in [*([] if config_path else DEMO_SCHEDULE), *(QUICK if quick else []), *overrides]:
        train_args += ["--set", item]
    _step(ctx, train_args)
    checkpoint = run / "self_train" / "last.pt"
    adapted_eval = run / "eval_adapted.json"
    _step(ctx, ["eval", str(checkpoint), "--data", str(data / "target"), "--json", str(adapted_eval)])
    target_bn_eval = run / "eval_target_bn.json"
    target_batchnorm_floor(run / "source" / "last.pt", data / "target", target_bn_eval)

    _step(ctx, ["export", str(checkpoint), "--out", str(export_dir), "--size", "128x256",
                "--data", str(data / "target"), "--force"])
    clip = video_dir / "target_drive.mp4"
    _step(ctx, ["data", "video", "--out", str(clip), "--domain", "real", "--frames", str(frames or (30 if quick else 150)), "--size", "256x512"])
    _step(ctx, ["run", str(export_dir / "model.onnx"), str(clip), str(video_dir / "overlay.mp4"),
                "--buffered", "--headless", "--save-frame", str(min(20, (frames or 30) - 1)), str(video_dir / "overlay_frame.png"),
                "--json", str(video_dir / "run_report.json")])
    click.echo(f"\n{adaptation_gain(run / 'source' / 'eval_source.json', target_bn_eval, adapted_eval)}")
    click.echo(f"demo took {minutes(time.perf_counter() - started)} (work reused from an earlier run on the same --out is not counted)")
    click.echo(
        f"\ndemo finished:\n"
        f"  adapted checkpoint  {checkpoint}\n"
        f"  evaluation          {run / 'summary.json'}\n"
        f"  ONNX bundle         {export_dir}/ (model.onnx, model.json, report/parity.json)\n"
        f"  overlay video       {video_dir / 'overlay.mp4'}\n"
        f"  still frame         {video_dir / 'overlay_frame.png'}"
    )


def target_batchnorm_floor(source_checkpoint: Path, target: Path, json_path: Path) -> None:
    """Score the source network with target BatchNorm statistics (AdaBN) into `json_path`, once
    per source checkpoint: the part of adaptation that needs no training."""
    if json_path.is_file() and json_path.stat().st_mtime >= source_checkpoint.stat().st_mtime:
        return
    from uda_adapt.adapt.target_batchnorm_eval import TargetData, evaluate_with_target_batchnorm

    click.secho("\n# target BatchNorm only: the source network, BatchNorm statistics re-estimated on "
                f"{target / 'train' / 'images'} (no training)", bold=True)
    started = time.perf_counter()
    result, _ = evaluate_with_target_batchnorm(source_checkpoint, TargetData(target), json_path=json_path)
    click.echo(f"mIoU {100 * result.miou:.2f}  (took {minutes(time.perf_counter() - started)}, written to {json_path})")


def adaptation_gain(source_eval: Path, target_bn_eval: Path, adapted_eval: Path) -> str:
    """What adaptation bought, in target val mIoU: the source network, the same with target
    BatchNorm statistics (free), and the adapted, exported checkpoint (trained)."""
    if not all(path.is_file() for path in (source_eval, target_bn_eval, adapted_eval)):
        return "target val has no labels: no mIoU to compare"
    source, target_bn, adapted = (100 * json.loads(path.read_text())["miou"] for path in (source_eval, target_bn_eval, adapted_eval))
    return (f"target val mIoU: source only {source:.2f} -> target BatchNorm only {target_bn:.2f} -> adapted {adapted:.2f} "
            f"(BatchNorm {target_bn - source:+.2f} points, training {adapted - target_bn:+.2f})")


def _step(ctx: click.Context, args: list[str]) -> None:
    """Run one `uda-adapt` command in this process, after printing it."""
    click.secho(f"\n$ uda-adapt {shlex.join(args)}", bold=True)
    group = ctx.find_root().command     # the `uda-adapt` group, found without importing it
    command = group.get_command(ctx, args[0])
    started = time.perf_counter()
    with command.make_context(args[0], args[1:], parent=ctx.parent) as sub:
        command.invoke(sub)
    click.echo(f"(uda-adapt {args[0]} took {minutes(time.perf_counter() - started)})")


def minutes(seconds: float) -> str:
    """`7:05` for 425.3 s: how long a step took, as a user reads it."""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
