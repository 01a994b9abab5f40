"""Write synthetic scenes to disk in the folder format, resumably.

    ROOT/{train,val}/images/<stem>.png   RGB
    ROOT/{train,val}/labels/<stem>.png   uint8 Cityscapes train ids, 255 = ignore
    ROOT/meta.json                       classes and palette (Cityscapes 19), written last
    ROOT/synth.json                      how the images were generated (domain, size, seed, counts)

Image i of a split comes from a seed derived from (seed, domain, split, i), so the files do not
depend on order or on how many ran before; every file is written atomically, so after a killed
run the files that exist are complete and a rerun only generates the missing ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from uda_adapt.common.progress import tqdm_disable
from uda_adapt.common.atomic import atomic_write_text, ensure_writable_dir
from uda_adapt.adapt.data.meta import DatasetMeta, write_meta
from uda_adapt.adapt.data.synth.scene import check_size, generate_scene
from uda_adapt.adapt.data.synth.style import TARGET_STYLES
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import write_label, write_rgb

DOMAINS = ("sim", "real", "night")   # the order fixes each domain's image seeds: append only
SPLITS = ("train", "val")
SETTINGS_FILE = "synth.json"
IMAGE_SUFFIX = ".png"

# The default benchmark: small enough that a tiny CNN trains on 2 CPU cores in minutes.
DEFAULT_SIZE = (128, 256)      # H x W
DEFAULT_NUM_TRAIN = 400        # per domain; target train labels exist for the oracle only
DEFAULT_NUM_VAL = 100          # per domain


def scene_seed(seed: int, domain: str, split: str, index: int) -> int:
    """The seed of image `index` of a split: a function of its identity only, never of order."""
    words = np.random.SeedSequence([seed, DOMAINS.index(domain), SPLITS.index(split), index]).generate_state(2)
    return int(words[0]) << 32 | int(words[1])


def write_split(out: str | os.PathLike, domain: str, split: str, num: int, size: tuple[int, int] = DEFAULT_SIZE,
                seed: int = 0, progress: bool = True) -> Path:
    """Generate `num` labelled `domain` scenes into `out/split`; files already there are kept.

    Returns the dataset root `out`. Refuses to mix with images generated under other settings.
    """
    _check_choice("domain", domain, DOMAINS)
    _check_choice("split", split, SPLITS)
    size = check_size(size)
    if num < 1:
        raise UserError(f"--num is {num}; generate at least 1 image")
    if seed < 0:
        raise UserError(f"--seed is {seed}; use a non-negative integer")
    root = ensure_writable_dir(out)
    settings = _read_settings(root, domain, size, seed)
    image_dir = ensure_writable_dir(root / split / "images")
    label_dir = ensure_writable_dir(root / split / "labels")
    stems = [f"{index:05d}" for index in range(num)]
    _remove_stale_temporaries(image_dir, label_dir)
    _refuse_extra_images(image_dir, set(stems), num)
    for index in tqdm(range(num), desc=f"{root.name}/{split}", unit="img", disable=tqdm_disable(progress)):
        image_path, label_path = image_dir / f"{stems[index]}{IMAGE_SUFFIX}", label_dir / f"{stems[index]}.png"
        if image_path.is_file() and label_path.is_file():
            continue  # written atomically, so complete
        image, label = generate_scene(scene_seed(seed, domain, split, index), domain, size)
        write_label(label_path, label)
        write_rgb(image_path, image)
    settings["splits"][split] = num
    atomic_write_text(root / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    write_meta(root, DatasetMeta())
    return root


def write_benchmark(out: str | os.PathLike, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                    num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                    progress: bool = True, target_style: str = TARGET_STYLES[0]) -> dict[str, Path]:
    """A benchmark: `out/source` (sim) and `out/target` (`target_style`: real by default, or
    night), each with train and val.

    Target train labels are written for the oracle row of an ablation only; adaptation must
    treat the target as unlabelled. Returns {"source": root, "target": root}.
    """
    _check_choice("target style", target_style, TARGET_STYLES)
    roots = {"source": Path(out) / "source", "target": Path(out) / "target"}
    for role, domain in (("source", "sim"), ("target", target_style)):
        write_split(roots[role], domain, "train", num_train, size, seed, progress)
        write_split(roots[role], domain, "val", num_val, size, seed, progress)
    return roots


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _read_settings(root: Path, domain: str, size: tuple[int, int], seed: int) -> dict[str, Any]:
    wanted = {"domain": domain, "size": list(size), "seed": seed}
    file = root / SETTINGS_FILE
    if not file.is_file():
        return {**wanted, "splits": {}}
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
        splits = dict(found["splits"])
        existing = {key: found[key] for key in wanted}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{file} is unreadable ({exc}); delete it (and the images beside it) or choose another --out") from exc
    if existing != wanted:
        def show(s: dict[str, Any]) -> str:
            return f"domain {s['domain']}, size {s['size'][0]}x{s['size'][1]}, seed {s['seed']}"
        raise UserError(f"{root} holds scenes generated with {show(existing)}, not {show(wanted)}; "
                        "choose another --out or repeat those settings")
    return {**wanted, "splits": splits}


def _refuse_extra_images(image_dir: Path, stems: set[str], num: int) -> None:
    extra = sorted(p.name for p in image_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.stem not in stems)
    if extra:
        raise UserError(f"{image_dir} already holds {len(extra)} images beyond --num {num} (e.g. {extra[0]}); "
                        "pass the earlier --num or choose another --out")


def _remove_stale_temporaries(*folders: Path) -> None:
    """Delete `.<stem>.*.tmp.png` files a killed run left behind (see common.atomic.atomic_path)."""
    for folder in folders:
        for stale in folder.glob(".*.tmp.png"):
            stale.unlink(missing_ok=True)
