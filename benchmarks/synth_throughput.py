"""Images per second of the synthetic street-scene generator on one CPU core.

    python benchmarks/synth_throughput.py [--repeats 5] [--images 40]

Prints the median (and best) rate over repeats for each domain and size (generation only, no
disk writes), and the time split between building the street, rasterising it and the domain's
finishing. On a shared machine the best repeat is the closer estimate of an idle core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from uda_adapt.adapt.data.synth import generate_scene
from uda_adapt.adapt.data.synth.camera import FAR_M
from uda_adapt.adapt.data.synth.finish import apply_finish, sample_finish
from uda_adapt.adapt.data.synth.render import render
from uda_adapt.adapt.data.synth.scene import build_world, sky
from uda_adapt.adapt.data.synth.style import style_for

SIZES = ((256, 512), (128, 256))
TARGET_IMG_PER_S = 50.0  # at 256x512


def images_per_second(domain: str, size: tuple[int, int], images: int, first_seed: int) -> float:
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + images):
        generate_scene(seed, domain, size)
    return images / (time.perf_counter() - start)


def stage_split_ms(domain: str, size: tuple[int, int], images: int) -> tuple[float, float, float]:
    style = style_for(domain)
    totals = np.zeros(3)
    for seed in range(images):
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        world = build_world(rng, style, size, (0.0, FAR_M))
        t1 = time.perf_counter()
        image, label = render(world.things_seen_from(0.0), world.camera, 0.0, sky(rng, world.look, size, world.camera))
        t2 = time.perf_counter()
        apply_finish(image, label, sample_finish(rng, style.finish), rng)
        totals += (t1 - t0, t2 - t1, time.perf_counter() - t2)
    return tuple(1000 * totals / images)  # type: ignore[return-value]


def measure_domain(domain: str, size: tuple[int, int], repeats: int, images: int) -> dict:
    """`repeats` rates of `images` scenes each (distinct seeds per repeat), and the stage split in ms/img."""
    rates = [images_per_second(domain, size, images, 1000 * r) for r in range(repeats)]
    build, raster, finish = stage_split_ms(domain, size, images)
    return {"domain": domain, "size": list(size), "images": images, "rates": rates,
            "median": statistics.median(rates), "best": max(rates),
            "build_ms": build, "render_ms": raster, "finish_ms": finish}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=40, help="images per repeat")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core: the figure a data-loader worker gets
    generate_scene(0, "real", (64, 128))  # warm imports and caches
    print(f"{'domain':6} {'size':>9} {'median':>7} {'best':>6} img/s   build  render  finish (ms/img)")
    for size in SIZES:
        for domain in ("sim", "real"):
            row = measure_domain(domain, size, args.repeats, args.images)
            median = row["median"]
            print(f"{domain:6} {size[0]:>4}x{size[1]:<4} {median:7.1f} {row['best']:6.1f}         "
                  f"{row['build_ms']:5.1f}  {row['render_ms']:6.1f}  {row['finish_ms']:6.1f}")
            if size == SIZES[0] and median < TARGET_IMG_PER_S:
                print(f"       below the {TARGET_IMG_PER_S:.0f} img/s target at {size[0]}x{size[1]}")


if __name__ == "__main__":
    main()
