"""`uda-adapt data`: the built-in synthetic benchmark and demo videos.

Thin wrappers over adapt.data.synth; imported lazily so `uda-adapt --help` stays fast.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import click

from uda_adapt.cli.options import SIZE, signal_handlers

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
    from uda_adapt.adapt.data.synth import write_split

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
    from uda_adapt.adapt.data.synth import write_benchmark

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
    from uda_adapt.adapt.data.synth import generate_video

    path = generate_video(out, domain, frames, size, fps, seed, labels_dir)
    click.echo(f"wrote {frames} frames to {path}")


def stop_on_signals(stop: threading.Event) -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM (`docker stop`, systemd) set `stop`: the capture ends between two frames.

    A second signal interrupts at once (a camera that hangs while opening).
    """
    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return signal_handlers(handler, signal.SIGINT, signal.SIGTERM)


@data.command()
@click.argument("input_uri", metavar="INPUT")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="ROOT",
              help="Target dataset root: writes ROOT/train/images (and ROOT/val/images); a rerun adds to it.")
@click.option("--every", "every_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Keep at most one frame per SECONDS (of video time for files, of clock time for cameras).")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, metavar="N", help="Consider every Nth frame only.")
@click.option("--max", "max_images", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N new images.")
@click.option("--size", type=SIZE, default=None, help="Store frames at HxW [default: the size of the images already in ROOT, else as captured].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True, metavar="F",
              help="Put this share of the kept frames in val/images (unlabelled, for looking at and label-free scores).")
@click.option("--like", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="SOURCE_ROOT",
              help="Copy the source dataset's classes (its meta.json) into ROOT/meta.json.")
@click.option("--min-change", type=click.FloatRange(min=0), default=None, metavar="D",
              help="Drop a frame whose 16x16 grey thumbnail differs from a kept one by less than D (0..1) [default: 0.005; 0 keeps duplicates].")
@click.option("--min-sharpness", type=click.FloatRange(min=0), default=None, metavar="V",
              help="Drop a frame whose Laplacian variance (at 256 px wide) is under V [default: 50; 0 keeps blurred frames].")
@click.option("--input-transport", type=click.Choice(["auto", "tcp", "udp"]), default="auto", show_default=True,
              help="RTSP input over UDP or TCP; tcp for a camera behind NAT or a firewall that drops UDP.")
@click.option("--give-up-after", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="A lost camera or stream reconnects (as `uda-adapt run` does); end with an error if it stays lost this long "
                   "[default: keep trying].")
def capture(input_uri: str, out: Path, every_s: float | None, stride: int, max_images: int | None, size, val_fraction: float,
            like: Path | None, min_change: float | None, min_sharpness: float | None, input_transport: str,
            give_up_after: float | None) -> None:
    """Build an unlabelled target set from a camera, stream or video file (torch-free).

    \b
    INPUT: anything `uda-adapt run` reads: clip.mp4 | frames/ | csi://0 | v4l2:///dev/video0 | rtsp://host/path
    Near-duplicate and blurred frames are dropped (and counted); Ctrl-C or SIGTERM keeps what was written.
    Several captures may write into one ROOT at once.

    \b
    uda-adapt data capture v4l2:///dev/video0 --out data/mycam --every 2 --max 500 --size 512x1024 --val-fraction 0.1 --like data/gta5
    """
    from uda_adapt.cli.status_line import StatusLine
    from uda_adapt.runtime.capture import Backoff
    from uda_adapt.runtime.capture_set import CaptureConfig, CaptureFailed, capture_set
    from uda_adapt.runtime.frame_filters import DEFAULT_MIN_CHANGE, DEFAULT_MIN_SHARPNESS
    from uda_adapt.runtime.uri import CaptureOptions

    config = CaptureConfig(
        input=input_uri, out=out, every_s=every_s, stride=stride, max_images=max_images, size=size,
        val_fraction=val_fraction, like=like,
        min_change=DEFAULT_MIN_CHANGE if min_change is None else min_change,
        min_sharpness=DEFAULT_MIN_SHARPNESS if min_sharpness is None else min_sharpness,
        backoff=Backoff(give_up_after=give_up_after), capture=CaptureOptions(transport=input_transport),
    )
    status = StatusLine("capture")
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            result = capture_set(config, lambda counts: status.show(counts.line()), log=status.log, stop=stop)
    except CaptureFailed as failed:
        # What was kept stays on disk: say so before the error line.
        status.finish(failed.result.line())
        click.echo(f"{out}: {failed.result.train} train and {failed.result.val} val images added before the error")
        raise
    status.finish(f"{result.line()}{'  (interrupted)' if result.interrupted else ''}")
    click.echo(f"{out}: {result.train} train and {result.val} val images added")
    if result.interrupted:
        raise KeyboardInterrupt       # exit 130; everything kept so far is on disk
