"""The documented Python API (docs/api.md): `import uda_adapt` is light; train -> export_model -> Segmenter works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import uda_adapt
from tests.adapt.fixtures import make_folder_dataset

TINY = ["data.crop_size=[32, 64]", "data.batch_size=2", "source.iterations=2", "logging.log_every=1",
        "logging.checkpoint_every=2", "logging.num_overlays=1"]


def test_importing_the_package_loads_neither_torch_nor_onnx_runtime():
    code = ("import sys, uda_adapt; names = uda_adapt.__all__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'cv2')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_documented_name_resolves_and_a_typo_does_not():
    assert {"train", "export_model", "Segmenter", "ExportConfig", "load_train_config", "UserError"} <= set(uda_adapt.__all__)
    for name in uda_adapt.__all__:
        assert getattr(uda_adapt, name) is not None
    with pytest.raises(AttributeError, match="Segmentor"):
        uda_adapt.Segmentor  # noqa: B018


@pytest.mark.slow
def test_train_then_export_then_segment(tmp_path):
    source = make_folder_dataset(tmp_path / "source", num=4, size=(40, 80), seed=0)
    target = make_folder_dataset(tmp_path / "target", num=4, size=(40, 80), seed=1)
    roots = [f"data.source.root={source}", f"data.target.root={target}"]
    checkpoint = uda_adapt.train(None, tmp_path / "run", overrides=[*roots, *TINY], stage="source")
    assert checkpoint == tmp_path / "run" / "source" / "last.pt" and checkpoint.is_file()
    result = uda_adapt.export_model(checkpoint, tmp_path / "export", uda_adapt.ExportConfig(size=(32, 64), parity_num=2))
    assert (result.out_dir / "model.onnx").is_file()
    frame = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    with uda_adapt.Segmenter(result.out_dir) as seg:
        mask = seg(frame)
    assert mask.shape == (45, 70) and mask.max() < len(seg.classes)


def test_a_trainconfig_with_overrides_is_refused(tmp_path):
    cfg = uda_adapt.load_train_config("synthetic")
    with pytest.raises(uda_adapt.UserError, match="dataclasses.replace"):
        uda_adapt.train(cfg, tmp_path / "run", overrides=["seed=1"])
