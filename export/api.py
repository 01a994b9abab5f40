"""`export_model`: checkpoint -> ONNX bundle (+ TensorRT engine), checked and gated.

    out/
      model.onnx                      fp32, argmax fused, metadata_props = manifest
      model.fp16.onnx | model.int8.onnx   precision-baked variant (Q/DQ for int8), when asked
      model.trt<ver>.sm<cc>.<device>.<prec>.engine  plain TensorRT plan, with --trt where TensorRT and a GPU exist
      model.json                      manifest: classes, palette, normalisation, shapes, hashes, versions
      timing.<device>.cache, calib.<key>.cache  TensorRT build caches (when built), named for what they depend on
      report/parity.json              ONNX Runtime vs PyTorch on target val images
      report/trt_check.json           static TensorRT-compatibility findings
      labels.txt, colors.txt          class names and colours, one line per class id (segNet's --labels/--colors)
      model.uint8-nhwc.onnx           with --pixel-input: uint8 pixels in, normalisation in the graph
      deepstream/                     with --deepstream: an nvinfer config, its graph and labels

Order: cheap refusals first (options, calibration folder, output directory, checkpoint, parity data), then
export -> checker -> precision variant -> static TensorRT check -> parity gate -> engine.
The bundle appears at `out` only complete. A failed parity gate or a missing TensorRT still
installs the bundle (for inspection, or for building on the device) and then raises; a failed
parity gate raises `ParityGateFailed`, which the command line exits with its own status (3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.class_files import COLORS_FILE, LABELS_FILE, format_colors, format_labels
from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.common.errors import UserError
from uda_adapt.export import spec
from uda_adapt.export.bundle import check_out_dir, staged_bundle
from uda_adapt.common.manifest import MANIFEST_NAME, InputSpec, Manifest, metadata_props, sha256_file, write_manifest
from uda_adapt.export.config import ExportConfig
from uda_adapt.export.deepstream import DEEPSTREAM_DIR, write_deepstream_files
from uda_adapt.export.deepstream import MODEL_FILE as DEEPSTREAM_MODEL
from uda_adapt.export.pixel_input import PROBABILITIES_NAME, PixelGraph, write_pixel_graph
from uda_adapt.export.onnx_export import (
    INPUT_NAME,
    DeployWrapper,
    check_onnx,
    check_opset,
    export_onnx,
    set_metadata,
    simplify_onnx,
)
from uda_adapt.export.parity import (
    ParityCheck,
    ParitySamples,
    compare_onnx,
    load_parity_samples,
    resample,
    torch_reference,
    write_parity_report,
)
from uda_adapt.export.precision import (
    RECOMMENDED_CALIB_IMAGES,
    ImageCalibrationReader,
    calibration_files,
    convert_fp16,
    quantize_int8,
)
from uda_adapt.common.engines import timing_cache_name
from uda_adapt.common.tensorrt_build import (TensorRTUnavailable, build_engine, build_plan, detect_gpu, import_tensorrt,
                                              trtexec_command)
from uda_adapt.export.trt_check import Finding, check_tensorrt_compat, format_findings

class ParityGateFailed(UserError):
    """The export disagrees with its reference beyond the gate; the bundle is kept for inspection."""

    exit_code = 3          # cli/main.py: a failed gate is told apart from a mistyped path (1)


RANGE_END_IMAGES = 2  # images checked at each end of a dynamic range (the max end is the slow one)
PARITY_DIR = "parity"          # the bundle's copies of compared pictures, for the on-device check
PARITY_IMAGES_KEPT = 8         # ~1 MB each at 512x1024: enough pixels to see an engine drift


@dataclasses.dataclass
class ExportResult:
    """What an export wrote: the bundle, its manifest, the parity checks and static TensorRT findings."""

    out_dir: Path
    manifest: Manifest
    parity_checks: list[ParityCheck]
    trt_findings: list[Finding]
    engine: Path | None = None


def export_model(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike, config: ExportConfig = ExportConfig(), *,
                 force: bool = False, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export the checkpoint at `ckpt_path` into the bundle directory `out_dir`; see the module doc.

    `config` (validated when it was made) is saved in model.json as `export_config`. `force`
    replaces an earlier export in `out_dir`.

    Raises UserError for bad input, a failed parity gate (after installing the bundle) and, with
    `config.trt`, when TensorRT or a GPU is missing (after installing the bundle; the message
    holds the trtexec command that builds the engine on the device).
    """
    log = log or (lambda message: None)
    cfg = config
    precision = cfg.precision
    check_opset(cfg.opset, cfg.exporter)
    if cfg.size is not None:
        spec.resolve_shapes(cfg)           # a bad dynamic range fails before anything is loaded
    calib_files = calibration_files(cfg.calib_data, cfg.calib_num) if precision == "int8" else []
    if cfg.calib_data is not None and precision != "int8":
        log(f"note: --calib-data is only used with --precision int8; ignored for {precision}")
    if calib_files and len(calib_files) < RECOMMENDED_CALIB_IMAGES:
        log(f"warning: int8 calibration on {len(calib_files)} images; {RECOMMENDED_CALIB_IMAGES}+ give stable ranges")
    check_out_dir(out_dir, force)
    ckpt = load_checkpoint(ckpt_path)
    if cfg.size is None:
        size, origin = spec.training_size(ckpt.config)
        cfg = cfg.with_size(size)
        log(f"export size {size[0]}x{size[1]}: {origin} (--size to choose another)")
    size = cfg.size
    shapes = spec.resolve_shapes(cfg)
    model = build_model(ckpt)
    input_spec = spec.input_spec(ckpt, size)
    data_root, data_kind, data_split, data_note = spec.parity_data_source(cfg.parity_data, cfg.parity_kind, ckpt.config)
    samples = load_parity_samples(data_root, data_kind, data_split, cfg.parity_num, input_spec, data_note)
    target = cfg.trt_target if cfg.trt_target is not None else _installed_trt_major(cfg.trt)
    out = Path(out_dir)

    with staged_bundle(out, force) as stage:
        log(f"exporting {ckpt.model_name} ({ckpt.num_classes} classes) at {size[0]}x{size[1]}"
            f"{' (dynamic)' if cfg.dynamic else ''} to ONNX opset {cfg.opset} with the {cfg.exporter} exporter")
        onnx_path = stage / "model.onnx"
        export_onnx(model, onnx_path, imgsz=size, dynamic=cfg.dynamic, output=cfg.output, opset=cfg.opset, exporter=cfg.exporter)
        nodes = simplify_onnx(onnx_path) if cfg.simplify else None
        manifest = spec.new_manifest(ckpt, Path(ckpt_path), input_spec, shapes, cfg, nodes)
        props = metadata_props(manifest)
        set_metadata(onnx_path, props)
        check_onnx(onnx_path)
        manifest.onnx_sha256 = sha256_file(onnx_path)
        files = {"fp32": onnx_path}
        if precision != "fp32":
            files[precision] = stage / f"model.{precision}.onnx"
            record = _bake_precision(onnx_path, files[precision], precision, calib_files, cfg.calib_method, input_spec, log)
            set_metadata(files[precision], {**props, "precision": json.dumps(precision)})
            check_onnx(files[precision])
            manifest.variants[precision] = {"file": files[precision].name, "sha256": sha256_file(files[precision]), **record}

        findings = _static_trt_check(list(files.values()), target, stage)
        if findings and cfg.trt:
            raise UserError(f"the ONNX uses what TensorRT {target}.x cannot parse: {format_findings(findings)}")
        if findings:
            log(f"warning: TensorRT {target}.x could not parse this ONNX: {format_findings(findings)}")

        wrapper = DeployWrapper(model, cfg.output).eval()
        checks = _parity_gate(stage, wrapper, files, samples, ckpt.num_classes, shapes, log)
        atomic_write_text(stage / LABELS_FILE, format_labels(ckpt.classes))
        atomic_write_text(stage / COLORS_FILE, format_colors(ckpt.palette))
        graphs = _pixel_graphs(stage, wrapper, cfg, input_spec, samples, files["fp32"], log)
        manifest.pixel_inputs = {name: graph.to_dict() for name, graph in graphs.items()}
        if cfg.deepstream:
            write_deepstream_files(stage / DEEPSTREAM_DIR, classes=ckpt.classes, size=size, precision=precision,
                                   color_order=input_spec.color_order)
        passed = all(c.passed for c in checks) and all(g.passed for g in graphs.values())
        summary_keys = ("file", "precision", "imgsz", "pixel_agreement", "miou_delta", "passed")
        manifest.parity = {"passed": passed, "data": samples.source["kind"], "n_images": len(samples.inputs),
                           "checks": [{k: c.to_dict()[k] for k in summary_keys} for c in checks],
                           "images": _keep_parity_images(stage, samples)}

        trt_problem = None
        if cfg.trt and passed:
            reader = (ImageCalibrationReader(calib_files, input_spec)
                      if cfg.legacy_precision_flags and precision == "int8" else None)
            try:
                trt_module, gpu = import_tensorrt(), detect_gpu()
            except TensorRTUnavailable as exc:
                trt_problem = str(exc)
            else:
                log(f"building a TensorRT {trt_module.__version__} {precision} engine for {gpu.model or gpu.name} (sm{gpu.cc})")
                # The precision-baked ONNX, or the fp32 one for weakly typed builds (legacy flags, DLA on 10.x).
                build_from = files[build_plan(trt_module, precision, legacy_precision_flags=cfg.legacy_precision_flags,
                                              dla_core=cfg.dla_core).onnx]
                default_cache = stage / timing_cache_name(gpu.for_tensorrt(str(trt_module.__version__)))
                manifest.engines.append(build_engine(
                    trt_module, gpu, build_from, stage, precision=precision, input_name=INPUT_NAME, shapes=shapes,
                    workspace_gib=cfg.workspace_gib,
                    timing_cache=Path(cfg.timing_cache) if cfg.timing_cache is not None else _seed_caches(out, stage, default_cache),
                    legacy_precision_flags=cfg.legacy_precision_flags, calibration_reader=reader, dla_core=cfg.dla_core,
                    calibration=manifest.variants.get(precision, {}).get("calibration")))
        write_manifest(stage / MANIFEST_NAME, manifest)

    log(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    if not passed:
        failures = [c.failure() for c in checks if not c.passed]
        failures += [f"{g.file} agrees with model.onnx on {100 * g.pixel_agreement:.3f} % of pixels, below the "
                     f"{100 * g.min_agreement:.1f} % gate" for g in graphs.values() if not g.passed]
        raise ParityGateFailed(f"parity gate failed: {'; '.join(failures)}; the export in {out} is kept for inspection "
                               f"(model.json records the failure, details in {out / 'report' / 'parity.json'})")
    if trt_problem is not None:
        command = trtexec_command(out / files[precision].name, out / f"model.{precision}.engine", input_name=INPUT_NAME,
                                  shapes=shapes, workspace_gib=cfg.workspace_gib, timing_cache=cfg.timing_cache,
                                  dla_core=cfg.dla_core)
        raise TensorRTUnavailable(f"{trt_problem}; the ONNX bundle is in {out}; on the device, build the engine with "
                                  f"`uda-adapt build {out}`, or with {command} then `uda-adapt build {out} --register "
                                  f"{out / f'model.{precision}.engine'}` to record it in model.json")
    engine = out / manifest.engines[0].file if manifest.engines else None
    return ExportResult(out, manifest, checks, findings, engine)


def _pixel_graphs(stage: Path, wrapper: DeployWrapper, cfg: ExportConfig, input_spec: InputSpec, samples: ParitySamples,
                  reference: Path, log: Callable[[str], None]) -> dict[str, PixelGraph]:
    """The graphs with the normalisation inside (--pixel-input, --deepstream), each checked against model.onnx."""
    wanted = {}
    if cfg.pixel_input is not None:
        dtype, layout = cfg.pixel_input.split("-")
        wanted[cfg.pixel_input] = (f"model.{cfg.pixel_input}.onnx", dtype, layout.upper(), cfg.output, cfg.dynamic)
    if cfg.deepstream:
        wanted["deepstream"] = (f"{DEEPSTREAM_DIR}/{DEEPSTREAM_MODEL}", "float32", "NCHW", PROBABILITIES_NAME, False)
    graphs = {}
    for name, (file, dtype, layout, output, dynamic) in wanted.items():
        graph = write_pixel_graph(wrapper, input_spec, stage, file, reference, samples.images, samples.inputs, dtype=dtype,
                                  layout=layout, output=output, dynamic=dynamic, opset=cfg.opset, exporter=cfg.exporter)
        log(f"pixel input: {file} ({dtype} {layout}, normalisation inside) agrees with model.onnx on "
            f"{100 * graph.pixel_agreement:.3f} % of pixels (gate >= {100 * graph.min_agreement:.1f} %)"
            f"{'' if graph.passed else ' - FAIL'}")
        graphs[name] = graph
    return graphs


def _keep_parity_images(stage: Path, samples: ParitySamples) -> list[str]:
    """A few of the compared pictures (PNG, export size), for `uda-adapt check` on the device."""
    import cv2

    folder = stage / PARITY_DIR
    folder.mkdir(exist_ok=True)
    names = []
    for index, rgb in enumerate(samples.images[:PARITY_IMAGES_KEPT]):
        name = f"{PARITY_DIR}/{index:03d}.png"
        if not cv2.imwrite(str(stage / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {stage / name}")
        names.append(name)
    return names


def _parity_gate(stage: Path, wrapper: DeployWrapper, files: dict[str, Path], samples: ParitySamples,
                 num_classes: int, shapes: dict[str, tuple[int, ...]] | None, log: Callable[[str], None]) -> list[ParityCheck]:
    """Compare every ONNX file against the PyTorch wrapper; writes report/parity.json.

    A dynamic fp32 export is also compared at the min and max sizes of its range (a traced
    graph can bake in a size), on the first RANGE_END_IMAGES images.
    """
    log(f"parity: ONNX Runtime vs PyTorch on {len(samples.inputs)} {_describe(samples.source)}")
    reference = torch_reference(wrapper, samples)
    checks = [compare_onnx(path, samples, reference, precision=precision, num_classes=num_classes)
              for precision, path in files.items()]
    size = tuple(samples.inputs[0].shape[-2:])
    for end in ("min", "max") if shapes is not None else ():
        end_size = tuple(shapes[end][2:])
        if end_size != size:
            subset = resample(samples, end_size, RANGE_END_IMAGES)
            checks.append(compare_onnx(files["fp32"], subset, torch_reference(wrapper, subset), precision="fp32",
                                       num_classes=num_classes))
    write_parity_report(stage / "report" / "parity.json", samples, checks, size)
    for check in checks:
        log(f"parity: {check.summary()}")
    return checks


def _bake_precision(onnx_path: Path, variant: Path, precision: str, calib_files: list[Path], calib_method: str,
                    input_spec: InputSpec, log: Callable[[str], None]) -> dict[str, Any]:
    if precision == "fp16":
        log("converting to fp16 (float32 I/O, Resize/ArgMax in float32)")
        convert_fp16(onnx_path, variant)
        return {}
    log(f"calibrating int8 Q/DQ on {len(calib_files)} target images ({calib_method})")
    calibration = quantize_int8(onnx_path, variant, calib_files, spec=input_spec, method=calib_method)
    return {"calibration": calibration}


def _static_trt_check(files: list[Path], target: int, stage: Path) -> list[Finding]:
    findings: list[Finding] = []
    per_file = {}
    for path in files:
        found = check_tensorrt_compat(path, target)
        per_file[path.name] = [dataclasses.asdict(f) for f in found]
        findings.extend(found)
    report = {"target": f"TensorRT {target}.x", "passed": not findings, "files": per_file}
    (stage / "report").mkdir(exist_ok=True)
    atomic_write_text(stage / "report" / "trt_check.json", json.dumps(report, indent=2) + "\n")
    return findings


def _installed_trt_major(trt: bool) -> int:
    """The TensorRT the engine will be built with; 10 (JetPack 6, the stricter parser) otherwise."""
    if trt:
        try:
            return int(str(import_tensorrt().__version__).split(".")[0])
        except TensorRTUnavailable:
            pass
    return 10


def _seed_caches(out: Path, stage: Path, cache: Path) -> Path:
    """The bundle's timing caches, one per device, carried over from the export being replaced; returns `cache`.

    They only speed builds up. Calibration caches are not carried: a new export may calibrate differently.
    """
    for previous in out.glob("timing.*.cache"):
        shutil.copyfile(previous, stage / previous.name)
    return cache


def _describe(source: dict[str, Any]) -> str:
    if source["kind"] == "synthetic":
        return f"synthetic images ({source['note']})"
    labelled = "labelled" if source.get("labelled") else "unlabelled"
    return f"{labelled} images of {source['root']} ({source['kind']}, split {source['split']})"
