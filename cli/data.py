"""`uda-adapt data`: the built-in synthetic benchmark and demo videos.

Thin wrappers over adapt.data.synth; imported lazily so `uda-adapt --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import SIZE

# The same values as adapt.data.synth.DOMAINS / SPLITS / TARGET_STYLES (a test keeps them equal);
# spelled out here so that building the CLI does not import the generator.
_DOMAINS = ("sim", "real", "night")
_SPLITS = ("train", "val")
_TARGET_STYLES = ("real", "night")


@click.group()
def data() -> None:
    """Generate synthetic street scenes: datasets in the folder format, and demo videos.

    \b
    sim:   source style (game-like: flat saturated colours, hard edges, clean)
    real:  target style (camera-like: textures, noise, blur, vignetting, JPEG), by day
    night: the real camera after dark (dim, lamp-lit, black sky, heavy noise and blur)
    Labels are Cityscapes 19 train ids (255 = ignore); the class `train` never appears.
    """


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Dataset root: writes DIR/SPLIT/images, DIR/SPLIT/labels and DIR/meta.json.")
@click.option("--domain", required=True, type=click.Choice(_DOMAINS),
              help="sim (source style), real (target style) or night (the second target style).")
@click.option("--split", default="train", show_default=True, type=click.Choice(_SPLITS))
@click.option("--num", default=100, show_default=True, type=click.IntRange(min=1), help="Number of images.")
@click.option("--size", default="128x256", show_default=True, type=SIZE, help="Image size HxW in pixels.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def synth(out: Path, domain: str, split: str, num: int, size: tuple[int, int], seed: int) -> None:
    """Write one split of one domain; rerunning resumes (complete files are kept)."""
    from adapt.data.synth import write_split

    root = write_split(out, domain, split, num, size, seed)
    click.echo(f"wrote {num} {domain} scenes to {root / split}")


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Writes DIR/source (sim) and DIR/target (--target-style), each with train and val.")
@click.option("--size", default="128x256", show_default=True, type=SIZE, help="Image size HxW in pixels.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--num-train", default=400, show_default=True, type=click.IntRange(min=1), help="Train images per domain.")
@click.option("--num-val", default=100, show_default=True, type=click.IntRange(min=1), help="Val images per domain.")
@click.option("--target-style", default=_TARGET_STYLES[0], show_default=True, type=click.Choice(_TARGET_STYLES),
              help="real: the camera by day (the default benchmark); night: the same camera after dark.")
def benchmark(out: Path, size: tuple[int, int], seed: int, num_train: int, num_val: int, target_style: str) -> None:
    """Write a benchmark (target train labels are for the oracle only)."""
    from adapt.data.synth import write_benchmark

    roots = write_benchmark(out, size, seed, num_train, num_val, target_style=target_style)
    click.echo(f"source: {roots['source']}  target: {roots['target']}")


@data.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.mp4",
              help="The mp4 to write.")
@click.option("--domain", default="real", show_default=True, type=click.Choice(_DOMAINS))
@click.option("--frames", default=120, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default="256x512", show_default=True, type=SIZE, help="Frame size HxW in pixels.")
@click.option("--fps", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--labels", "labels_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Also write each frame's train-id labels as DIR/<frame>.png.")
def video(out: Path, domain: str, frames: int, size: tuple[int, int], fps: float, seed: int,
          labels_dir: Path | None) -> None:
    """Write a forward drive down a generated street (moving cars and pedestrians) as mp4."""
    from adapt.data.synth import generate_video

    path = generate_video(out, domain, frames, size, fps, seed, labels_dir)
    click.echo(f"wrote {frames} frames to {path}")
