"""`uda-adapt build BUNDLE`: `common.engine_build`, plus the images the legacy int8 calibrator reads.

The build itself lives in common/ (the runtime builds on first run, without torch); reading
calibration images with the export's input contract is the export's job, so it is here.
"""

from __future__ import annotations

from pathlib import Path

from uda_adapt.common.engine_build import BuildConfig, Log, build_from_bundle, register_engine
from uda_adapt.common.manifest import MANIFEST_NAME, EngineSpec, read_manifest

__all__ = ["BuildConfig", "build_bundle_engine", "register_engine"]


def build_bundle_engine(bundle: str | Path, config: BuildConfig = BuildConfig(), log: Log | None = None) -> EngineSpec:
    """Build this device's engine into `bundle`; with legacy flags and --calib-data, calibrate on those images."""
    reader = None
    if config.legacy_precision_flags and config.calib_data is not None:
        from uda_adapt.export.precision import ImageCalibrationReader, calibration_files

        manifest = read_manifest(Path(bundle) / MANIFEST_NAME)
        reader = ImageCalibrationReader(calibration_files(config.calib_data, config.calib_num), manifest.input)
    return build_from_bundle(bundle, config, log, calibration_reader=reader)
