"""`uda-adapt compare`: a click wrapper over `runtime.compare.compare`."""

from __future__ import annotations

import click

from uda_adapt.cli.options import SIZE


@click.command("compare")
@click.argument("model_a", type=click.Path(), metavar="A")
@click.argument("model_b", type=click.Path(), metavar="B")
@click.argument("input_uri", metavar="INPUT")
@click.argument("output_uri", metavar="[OUTPUT]", required=False)
@click.option("--backend", type=click.Choice(["auto", "trt", "ort", "torch"]), default="auto", show_default=True,
              help="auto picks by file type for each model.")
@click.option("--size", type=SIZE, default=None, metavar="HxW",
              help="Network input size of a checkpoint [default: the other model's, when it is an export; else 512x1024].")
@click.option("--threads", type=int, default=None, metavar="N", help="CPU threads for inference [default: the backend's].")
@click.option("--max-frames", type=click.IntRange(min=2), default=None, metavar="N", help="Stop after N frames.")
@click.option("--like", type=click.Path(file_okay=False), default=None, metavar="SOURCE_ROOT",
              help="The labelled source dataset: adds the distance of each model's class share to the source's.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where compare.json, compare.md and compare.png go [default: beside OUTPUT].")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity 0..1.")
def compare(model_a, model_b, input_uri, output_uri, backend, size, threads, max_frames, like, report_dir, alpha) -> None:
    """Models A and B side by side on INPUT, a panel where they disagree, and their label-free measures.

    \b
    A, B:   checkpoints (.pt), ONNX models, engines or export bundles (typically source-only and adapted)
    INPUT:  a video file or an image folder
    OUTPUT: a video (.mp4) or an image pattern (out_%05d.png) [default: compare/compare.mp4, or
            compare/compare_%05d.png for image folders]; compare.json, compare.md and compare.png beside it

    \b
    uda-adapt compare runs/cam/source/last.pt runs/cam/self_train/last.pt clip.mp4 compare/ab.mp4
    """
    from uda_adapt.runtime.capture import log_to_stderr
    from uda_adapt.runtime.compare import CompareConfig
    from uda_adapt.runtime.compare import compare as run_compare

    config = CompareConfig(model_a=model_a, model_b=model_b, input=input_uri, output=output_uri, report_dir=report_dir,
                           backend=backend, size=size, threads=threads, max_frames=max_frames, like=like, alpha=alpha)
    report = run_compare(config, log=log_to_stderr)
    from uda_adapt.common.label_free import RANKS_MODELS

    click.echo(f"{report['frames']} frames -> {report['output']}; A and B disagree on {100 * report['disagreement']:.1f} % of pixels")
    for name in RANKS_MODELS:
        a, b = report["measures"]["A"][name], report["measures"]["B"][name]
        if a is None:
            click.echo(f"{name}: n/a (give --like SOURCE_ROOT, the labelled source dataset)")
        else:
            click.echo(f"{name}: A {a:.4f}  B {b:.4f}")
    click.echo("report: compare.json, compare.md and compare.png beside the output")
