"""`uda-adapt export`: a thin click layer over `export.api.export_model`."""

from __future__ import annotations

import click

from uda_adapt.cli.options import DEVICE_HELP, SIZE, device_option, gpu_index, quiet_option, require_training_stack
from uda_adapt.export.config import CALIBRATION_METHODS, DATA_KINDS, EXPORTERS, OUTPUT_KINDS, PIXEL_INPUTS, PRECISIONS


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Bundle directory to create (model.onnx, model.json, report/, engines).")
@click.option("--size", type=SIZE, default=None, metavar="HxW",
              help="Export (and parity) input size, stored in model.json; with --dynamic the opt shape "
                   "[default: the size the checkpoint evaluated at (data.eval_size), else 512x1024].")
@click.option("--dynamic", is_flag=True, help="Symbolic batch, height and width.")
@click.option("--output", type=click.Choice(OUTPUT_KINDS), default="mask", show_default=True,
              help="mask: int32 class ids with the argmax in the graph; logits: float32 upsampled scores.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 fits TensorRT 10 and 11).")
@click.option("--exporter", type=click.Choice(EXPORTERS), default="legacy", show_default=True,
              help="torch.onnx TorchScript-based exporter (legacy) or torch.export-based (dynamo, needs onnxscript).")
@click.option("--simplify/--no-simplify", default=True, show_default=True,
              help="Fold constants and drop no-op nodes, kept only when the graph shrinks.")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and a GPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="[default: fp32]")
@click.option("--fp16", "--half", "fp16_alias", is_flag=True, help="Same as --precision fp16.")
@click.option("--int8", "int8_alias", is_flag=True, help="Same as --precision int8.")
@click.option("--calib-data", type=click.Path(), metavar="DIR", help="Target images for int8 calibration.")
@click.option("--calib-num", type=int, default=512, show_default=True, metavar="N", help="Calibration images to use.")
@click.option("--calib-method", type=click.Choice(CALIBRATION_METHODS), default="minmax", show_default=True)
@click.option("--workspace", "workspace_gib", type=float, default=4.0, show_default=True, metavar="GiB",
              help="TensorRT workspace memory pool.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), metavar="PATH",
              help="TensorRT timing cache to reuse and update [default: DIR/timing.<TensorRT>.<GPU>.<device>.cache].")
@click.option("--min-shape", metavar="BxCxHxW", help="Dynamic range minimum [default: half of --size].")
@click.option("--opt-shape", metavar="BxCxHxW", help="Dynamic range optimum [default: --size].")
@click.option("--max-shape", metavar="BxCxHxW", help="Dynamic range maximum [default: twice --size].")
@click.option("--legacy-precision-flags", is_flag=True,
              help="TensorRT 10.x only: FP16/INT8 builder flags (+ entropy calibrator) instead of a precision-baked ONNX.")
@click.option("--dla-core", type=click.IntRange(min=0), default=None, metavar="N",
              help="AGX Orin / Orin NX (8GB: core 0 only): run on DLA core N, layers the DLA lacks on the GPU (needs fp16 or int8).")
@click.option("--trt-target", type=click.Choice(["10", "11"]), default=None,
              help="TensorRT major version the static check targets [default: the installed one, else 10].")
@click.option("--data", "parity_data", type=click.Path(), metavar="ROOT",
              help="Target dataset for the parity gate [default: the checkpoint's target dataset].")
@click.option("--data-kind", "parity_kind", type=click.Choice(DATA_KINDS), default="folder", show_default=True,
              help="Layout of --data.")
@click.option("--parity-num", type=int, default=20, show_default=True, metavar="N",
              help="Val images the parity gate compares.")
@click.option("--pixel-input", type=click.Choice(PIXEL_INPUTS), default=None,
              help="Also write model.<layout>.onnx: uint8 RGB pixels in, the normalisation inside the graph (a quarter "
                   "of the bytes to the GPU), checked against model.onnx.")
@click.option("--deepstream", is_flag=True,
              help="Also write DIR/deepstream/: a Gst-nvinfer config (network-type 2), its graph and labels.txt.")
@click.option("--force", is_flag=True, help="Replace an existing export in DIR.")
@quiet_option
def export(checkpoint, out_dir, size, dynamic, output, opset, exporter, simplify, trt, precision, fp16_alias,
           int8_alias, calib_data, calib_num, calib_method, workspace_gib, timing_cache, min_shape, opt_shape,
           max_shape, legacy_precision_flags, dla_core, trt_target, parity_data, parity_kind, parity_num, pixel_input,
           deepstream, force) -> None:
    """Export CKPT to ONNX (and TensorRT with --trt), with a manifest and a parity gate.

    \b
    uda-adapt export runs/synthetic/self_train/last.pt --out exports/synthetic
    uda-adapt export runs/gta5/self_train/last.pt --out exports/orin --trt --precision int8 --calib-data data/target/train/images

    Export the stage's last.pt, the checkpoint every reported number uses (best.pt is chosen
    with target labels, which an unsupervised user does not have). Exit status 3: the parity
    gate failed (the bundle is kept for inspection).
    """
    require_training_stack("export")
    from uda_adapt.export.api import export_model
    from uda_adapt.export.config import ExportConfig

    chosen = {p for p, flag in (("fp16", fp16_alias), ("int8", int8_alias)) if flag}
    if precision is not None:
        chosen.add(precision)
    if len(chosen) > 1:
        raise click.UsageError(f"conflicting precisions: {', '.join(sorted(chosen))}; give one --precision")
    echo = _progress_echo
    config = ExportConfig(
        size=size, dynamic=dynamic, output=output, opset=opset, exporter=exporter, simplify=simplify,
        precision=chosen.pop() if chosen else "fp32", calib_data=calib_data, calib_num=calib_num,
        calib_method=calib_method, parity_data=parity_data, parity_kind=parity_kind, parity_num=parity_num,
        trt=trt, workspace_gib=workspace_gib, timing_cache=timing_cache, min_shape=min_shape, opt_shape=opt_shape,
        max_shape=max_shape, legacy_precision_flags=legacy_precision_flags, dla_core=dla_core,
        trt_target=int(trt_target) if trt_target else None, pixel_input=pixel_input, deepstream=deepstream)
    result = export_model(checkpoint, out_dir, config, force=force, log=echo)
    if result.engine is not None:
        click.echo(f"engine {result.engine}")
    click.echo(f"exported {result.out_dir / result.manifest.onnx_file}")


def _progress_echo(message: str) -> None:
    """Progress on stderr (results go to stdout); with --quiet only warnings and notes."""
    from uda_adapt.common.progress import is_quiet

    if not is_quiet() or message.startswith(("warning", "note")):
        click.echo(message, err=True)


@click.command("build")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True), metavar="BUNDLE")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="[default: the bundle's precision-baked variant, else fp32]")
@click.option("--dla-core", type=click.IntRange(min=0), default=None, metavar="N",
              help="AGX Orin / Orin NX (8GB: core 0 only): run on DLA core N, layers the DLA lacks on the GPU (fp16 or int8).")
@click.option("--workspace", "workspace_gib", type=float, default=4.0, show_default=True, metavar="GiB")
@click.option("--timing-cache", type=click.Path(dir_okay=False), metavar="PATH",
              help="TensorRT timing cache to reuse and update [default: BUNDLE/timing.<TensorRT>.<GPU>.<device>.cache].")
@click.option("--legacy-precision-flags", is_flag=True,
              help="TensorRT 10.x only: FP16/INT8 builder flags on the fp32 ONNX (int8 needs --calib-data).")
@click.option("--calib-data", type=click.Path(), metavar="DIR", help="Target images for the legacy int8 calibrator.")
@click.option("--calib-num", type=int, default=512, show_default=True, metavar="N")
@device_option(f"The GPU to build for: {DEVICE_HELP}")
@click.option("--register", "register", type=click.Path(dir_okay=False, exists=True), default=None, metavar="ENGINE",
              help="Build nothing: record ENGINE (e.g. from trtexec) in model.json for this device, after TensorRT loads it.")
@click.option("--check/--no-check", "run_check", default=True, show_default=True,
              help="Then compare the engine with the ONNX on the bundle's parity pictures (`uda-adapt check`).")
def build(bundle, precision, dla_core, workspace_gib, timing_cache, legacy_precision_flags, calib_data, calib_num,
          device, register, run_check) -> None:
    """Build a TensorRT engine for this device from an export bundle (no checkpoint, no torch needed).

    \b
    uda-adapt build exports/orin                     # on the Jetson, after copying the bundle there
    uda-adapt build exports/orin --dla-core 0        # AGX Orin / Orin NX: the DLA, GPU fallback
    uda-adapt build exports/orin --register exports/orin/model.engine   # an engine trtexec built
    """
    from uda_adapt.export.build import BuildConfig, build_bundle_engine, register_engine

    device = gpu_index(device, "build", needs_gpu=True)
    echo = _progress_echo
    config = BuildConfig(precision=precision, dla_core=dla_core, workspace_gib=workspace_gib, timing_cache=timing_cache,
                         legacy_precision_flags=legacy_precision_flags, calib_data=calib_data, calib_num=calib_num,
                         device=device)
    if register is not None:
        spec = register_engine(bundle, register, config, log=echo)
    else:
        spec = build_bundle_engine(bundle, config, log=echo)
    click.echo(f"engine {bundle}/{spec.file}")
    if run_check:
        from uda_adapt.runtime.check import check_engine

        check_engine(bundle, f"{bundle}/{spec.file}", device=device, log=echo)
