"""`uda-adapt run` and `uda-adapt bench`: click wrappers over `run_stream` and `bench`."""

from __future__ import annotations

import contextlib
import json
import signal

import click

from uda_adapt.cli.options import DEVICE_HELP, SIZE, gpu_index, quiet_option, signal_handlers
from uda_adapt.cli.options import device_option as shared_device_option
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.thread_priority import SIDE_NICE

# --- options shared by both commands ---------------------------------------------------------------
backend_option = click.option(
    "--backend", type=click.Choice(["auto", "trt", "ort", "torch"]), default="auto", show_default=True,
    help="auto picks by file type: .engine/.plan TensorRT, .onnx ONNX Runtime, .pt/.pth PyTorch.",
)
device_option = shared_device_option(f"The GPU to use: {DEVICE_HELP}")
threads_option = click.option("--threads", type=int, default=None, metavar="N", help="CPU threads for inference [default: the backend's].")
size_option = click.option(
    "--size", type=SIZE, default=None, metavar="HxW",
    help="Network input size, for dynamic exports [default: the manifest's input.size].")
json_option = click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="PATH", help="Also write the report as JSON.")


def _single_threaded_opencv() -> None:
    import cv2

    # The stages already run on their own threads, and their OpenCV calls are small; OpenCV's
    # worker pool would only oversubscribe the cores the inference threads are using.
    cv2.setNumThreads(1)


def _sigterm_as_interrupt() -> contextlib.AbstractContextManager[None]:
    """`docker stop` / systemd send SIGTERM: finish the output video as for Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal_handlers(handler, signal.SIGTERM)


@click.command("run")
@click.argument("model", type=click.Path(), metavar="MODEL|BUNDLE")
@click.argument("input_uri", metavar="[INPUT]", required=False)
@click.argument("output_uri", metavar="[OUTPUT]", required=False)
@backend_option
@device_option
@threads_option
@click.option("--side-nice", type=click.IntRange(0, 19), default=SIDE_NICE, show_default=True, metavar="N",
              help="Files: run decoding, rendering and writing N nice levels below inference, so that they use the "
                   "cores inference leaves idle (Linux); 0: same priority.")
@click.option("--visualize", type=click.Choice(["overlay", "mask", "side-by-side"]), default="overlay", show_default=True)
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity 0..1 (values above 1: 0..255, as jetson-inference).")
@click.option("--ignore-class", "ignore_classes", multiple=True, metavar="NAME", help="Leave this class uncoloured (repeatable).")
@click.option("--legend/--no-legend", default=True, show_default=True, help="Class-name legend of the classes in view.")
@click.option("--fps-overlay/--no-fps-overlay", default=True, show_default=True)
@click.option("--input-width", type=int, default=None, metavar="W")
@click.option("--input-height", type=int, default=None, metavar="H")
@click.option("--input-rate", type=float, default=None, metavar="FPS", help="Camera rate; for files, play at this rate.")
@click.option("--input-codec", type=click.Choice(["auto", "h264", "h265", "mjpeg"]), default="auto", show_default=True,
              help="RTSP: auto tries H.264, then H.265; mjpeg: a USB camera's MJPEG mode.")
@click.option("--input-latency", type=int, default=200, show_default=True, metavar="MS", help="RTSP jitter buffer.")
@click.option("--input-flip", type=click.Choice(["none", "horizontal", "vertical", "rotate-180"]), default="none", show_default=True,
              help="Flip or rotate the input (a camera mounted mirrored or upside down); CSI cameras flip in nvvidconv.")
@click.option("--input-transport", type=click.Choice(["auto", "tcp", "udp"]), default="auto", show_default=True,
              help="RTSP input over UDP or TCP; tcp for a camera behind NAT or a firewall that drops UDP.")
@click.option("--input-decoder", type=click.Choice(["auto", "software", "hardware"]), default="auto", show_default=True,
              help="hardware: NVDEC on a Jetson for video files, RTSP and MJPEG cameras (nvv4l2decoder); "
                   "auto: NVDEC for RTSP on a Jetson, the CPU otherwise.")
@click.option("--give-up-after", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="A lost camera or stream reconnects with back-off; end with an error if it stays lost this long "
                   "[default: keep trying].")
@click.option("--input-loop", type=int, default=0, show_default=True, metavar="N", help="Replay a file N more times; -1 forever.")
@click.option("--vid-stride", type=int, default=1, show_default=True, metavar="N", help="Use every Nth frame.")
@click.option("--latest/--buffered", "latest", default=None, help="Newest frame only, dropping the rest [default for cameras and RTSP] / every frame in order [default for files].")
@size_option
@click.option("--build/--no-build", "build_engine", default=True, show_default=True,
              help="BUNDLE with no engine for this device: build one with TensorRT and keep it in the bundle (minutes, "
                   "once) / run its ONNX instead.")
@click.option("--headless", is_flag=True, help="No window; with no OUTPUT, only the report.")
@click.option("--max-frames", type=int, default=None, metavar="N", help="Stop after N frames.")
@click.option("--save-frame", nargs=2, type=(int, str), default=None, metavar="N PATH", help="Also save rendered frame N as an image.")
@click.option("--codec", type=click.Choice(["h264", "h265", "mp4v"]), default=None,
              help="Video and RTSP output codec [default: h264 (yuv420p) where OpenCV has GStreamer, NVENC on Jetsons that have it; "
                   "else mp4v, OpenCV's own].")
@click.option("--bitrate", type=int, default=4_000_000, show_default=True, help="H.264/H.265 output bitrate (bit/s).")
@click.option("--stats", is_flag=True, help="Print the report as JSON too.")
@json_option
@click.option("--watch", is_flag=True, help="Running window of the validated label-free measure, in the report and on the overlay "
              "(one more inference per frame).")
@click.option("--collect", "collect_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Keep the frames the model is least sure of in DIR/train/images: the next adaptation's target set.")
@click.option("--collect-max", type=click.IntRange(min=1), default=200, show_default=True, metavar="N", help="Frames --collect keeps.")
@click.option("--save-masks", "save_masks", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also save each frame's class-id mask as a PNG in DIR, at the frame's size, named after the input: "
                   "an image's stem, <video stem>_<frame index>, or frame_<n> for cameras.")
@click.option("--mask-format", type=click.Choice(["id", "palette"]), default="id", show_default=True,
              help="--save-masks: id: 8-bit grey class ids; palette: the same ids with the class colours as the PNG palette.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Class names, one per line, instead of the model's (segNet's --labels; a bundle's labels.txt).")
@click.option("--colors", "colors_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Class colours, `R G B` per line, instead of the model's (segNet's --colors; a bundle's colors.txt).")
@quiet_option
def run(model, input_uri, output_uri, backend, device, threads, side_nice, visualize, alpha, ignore_classes, legend, fps_overlay,
        input_width, input_height, input_rate, input_codec, input_latency, input_flip, input_transport, input_decoder, give_up_after, input_loop, vid_stride, latest, size,
        headless, max_frames, save_frame, codec, bitrate, stats, json_path, build_engine, watch, collect_dir, collect_max,
        save_masks, mask_format, labels_file, colors_file) -> None:
    """Segment a video stream and render it.

    MODEL: .engine/.plan (TensorRT), .onnx (ONNX Runtime), .pt (PyTorch), or an export bundle
    directory: its engine for this TensorRT and GPU when there is one, else its ONNX.

    \b
    INPUT:  file.mp4 | file://clip.mp4 | frames/ | "frames/*.png" | csi://0 | v4l2:///dev/video0 | 0 | rtsp://host/path
            (default: csi://0 on Jetson, else /dev/video0)
    OUTPUT: display://0 (default) | out.mp4 | out_%05d.png | null://
            | rtsp://@:8554/out (served from here) | rtsp://[user:pass@]server:8554/seg (pushed to a server)

    \b
    uda-adapt run runs/demo/export/model.onnx clip.mp4 overlay.mp4
    uda-adapt run model.engine csi://0 display://0
    uda-adapt run model.onnx rtsp://cam.local/stream null:// --headless --stats
    uda-adapt run exports/orin csi://0 rtsp://@:8554/out --input-flip rotate-180
    uda-adapt run exports/demo frames/ null:// --headless --save-masks masks/
    """
    from uda_adapt.runtime.capture import Backoff, log_to_stderr
    from uda_adapt.runtime.render import RenderOptions
    from uda_adapt.runtime.report import format_run_report, write_json
    from uda_adapt.runtime.stream import RunConfig, run_stream
    from uda_adapt.runtime.uri import CaptureOptions
    from uda_adapt.common.progress import is_quiet

    device = gpu_index(device, "run")
    if input_uri is None:
        from uda_adapt.runtime.uri import is_jetson

        input_uri = "csi://0" if is_jetson() else "v4l2:///dev/video0"
    if (input_width is None) != (input_height is None):
        raise UserError("give --input-width and --input-height together")
    if not build_engine:
        from uda_adapt.runtime.bundle import resolve_model

        model = str(resolve_model(model, backend, device, log_to_stderr, build=False))  # a bundle's model, never built
    config = RunConfig(
        model=model, input=input_uri, output=output_uri, backend=backend, device=device, threads=threads,
        size=size,
        render=RenderOptions(visualize=visualize, alpha=alpha, ignore_classes=tuple(ignore_classes), legend=legend, fps=fps_overlay),
        capture=CaptureOptions(width=input_width, height=input_height, rate=input_rate, codec=input_codec, latency_ms=input_latency,
                               flip=input_flip, transport=input_transport, decoder=input_decoder),
        loop=input_loop, stride=vid_stride, latest=latest, headless=headless, max_frames=max_frames,
        save_frame=tuple(save_frame) if save_frame else None, bitrate=bitrate, codec=codec,
        watch=watch, collect=collect_dir, collect_max=collect_max, backoff=Backoff(give_up_after=give_up_after),
        save_masks=save_masks, mask_format=mask_format, labels=labels_file, colors=colors_file, progress=not is_quiet(),
        side_nice=side_nice,
    )
    _single_threaded_opencv()
    with _sigterm_as_interrupt():
        report = run_stream(config, log=log_to_stderr)
    click.echo(format_run_report(report), err=True)
    if report.label_free:
        from uda_adapt.runtime.watch import format_watch

        click.echo(format_watch(report.label_free), err=True)
    if stats:
        click.echo(json.dumps(report.to_dict(), indent=2))
    if json_path:
        write_json(json_path, report.to_dict())
    if report.interrupted:
        raise KeyboardInterrupt   # the entry point reports it and exits 130; the output is already closed


@click.command("bench")
@click.argument("model", type=click.Path(), metavar="MODEL|BUNDLE")
@backend_option
@device_option
@threads_option
@size_option
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, metavar="N", help="Batch size of the model-only run.")
@click.option("--warmup", type=int, default=10, show_default=True, metavar="N")
@click.option("--iters", type=int, default=100, show_default=True, metavar="N")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True, help="Also time the full pipeline (in-memory frames, overlay, null sink).")
@json_option
def bench(model, backend, device, threads, size, batch, warmup, iters, pipeline, json_path) -> None:
    """Latency and throughput of MODEL, trtexec-style, for any backend.

    \b
    uda-adapt bench model.onnx --size 512x1024 --warmup 5 --iters 50 --json bench.json
    """
    from uda_adapt.runtime.bench import bench as run_bench
    from uda_adapt.runtime.bench import format_bench
    from uda_adapt.runtime.capture import log_to_stderr
    from uda_adapt.runtime.report import write_json

    device = gpu_index(device, "bench")
    _single_threaded_opencv()
    result = run_bench(model, backend, size, batch, warmup, iters, pipeline, threads, device, log=log_to_stderr)
    click.echo(format_bench(result))
    if json_path:
        write_json(json_path, result)


@click.command("check")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True), metavar="BUNDLE")
@click.option("--engine", type=click.Path(dir_okay=False, exists=True), default=None, metavar="FILE",
              help="Engine to check [default: the bundle's engine for this TensorRT and GPU].")
@device_option
def check(bundle, engine, device) -> None:
    """Compare a TensorRT engine with the bundle's ONNX on its parity pictures, on this device.

    \b
    uda-adapt check exports/orin              # after `uda-adapt build exports/orin`
    """
    from uda_adapt.runtime.capture import log_to_stderr
    from uda_adapt.runtime.check import check_engine

    report = check_engine(bundle, engine, device=gpu_index(device, "check", needs_gpu=True), log=log_to_stderr)
    click.echo(f"{report['engine']}: {100 * report['pixel_agreement']:.3f} % pixel agreement with the ONNX "
               f"({report['n_images']} pictures, {report['precision']} gate {100 * report['min_agreement']:.1f} %)")
