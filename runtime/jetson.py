"""Which NVIDIA Jetson this is, if any: the facts that pick GStreamer elements and encoders.

A module of its own so that `runtime.uri` (pipelines) and `runtime.encoders` (encoders) both read
it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")       # L4T writes it on every Jetson image
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")     # e.g. "NVIDIA Jetson Orin Nano Developer Kit"
NVENC_DEVICE = Path("/dev/v4l2-nvenc")                   # present where the SoC has NVENC


def device_model() -> str:
    """The board's model string from the device tree; empty off ARM boards."""
    try:
        return DEVICE_TREE_MODEL.read_text(errors="ignore").strip("\x00").strip()
    except OSError:
        return ""


def is_jetson() -> bool:
    """True on NVIDIA Jetson (L4T), where the nv* GStreamer elements exist."""
    return NV_TEGRA_RELEASE.exists() or "jetson" in device_model().lower()


def has_nvenc_device() -> bool:
    return NVENC_DEVICE.exists()
