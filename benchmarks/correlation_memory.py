"""Peak memory and time of the correlation module: SDPA path vs a naive softmax(QK^T)V, on CPU.

    python benchmarks/correlation_memory.py [--limit-gb 6] [--repeats 3]

Each case (size x pass x implementation) runs in a fresh subprocess, so the peak RSS of one case
cannot hide inside another's. The child builds the module, runs it once on a tiny input (one-off
set-up costs), builds the case's input and reads its peak RSS (ru_maxrss); it then runs the case
`repeats` times and reads the peak again: the difference is the memory the attention itself
needed. torch's CPU allocations are invisible to tracemalloc; RSS sees them. Times are medians
over the repeats. Cases whose naive N x N matrices would exceed --limit-gb are skipped rather
than run into the OOM killer.

Setting: batch 1, C = 19 classes, d = 64, value = "prediction", spatial = "none". "forward" is
inference (no_grad), "train" is forward + backward to the module's weights (stage 2).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch

from uda_adapt.adapt.models.correlation import CorrelationModule, naive_attention, to_tokens

SIZES = ((32, 64), (64, 128), (128, 256))
PASSES = ("forward", "train")
NUM_CLASSES = 19
DIM = 64
# N x N float32 matrices alive at the naive path's peak: scores and their softmax in the
# forward; plus the saved softmax and two gradients of that size in training.
NAIVE_MATRICES = {"forward": 2, "train": 4}


def naive_bytes(h: int, w: int, pass_: str) -> int:
    tokens = h * w
    return NAIVE_MATRICES[pass_] * tokens * tokens * 4


def run_case(impl: str, h: int, w: int, pass_: str, repeats: int) -> dict:
    """Runs in the child process: returns {"peak_mb", "median_s"}."""
    torch.manual_seed(0)
    module = CorrelationModule(NUM_CLASSES, dim=DIM)

    def step(p: torch.Tensor) -> None:
        with torch.set_grad_enabled(pass_ == "train"):
            if impl == "sdpa":
                out = module(p)
            else:
                q, k, v = to_tokens(module.query(p)), to_tokens(module.key(p)), to_tokens(p)
                out = naive_attention(q, k, v, scale=1.0 / math.sqrt(DIM))
            if pass_ == "train":
                out.sum().backward()

    # One tiny warm-up run first: thread pools and kernel set-up cost tens of MB once per
    # process, whatever the size, and would otherwise be charged to the first case.
    step(torch.softmax(torch.randn(1, NUM_CLASSES, 4, 8), dim=1))
    p = torch.softmax(torch.randn(1, NUM_CLASSES, h, w), dim=1)
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(p)
        times.append(time.perf_counter() - start)
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (after_kb - before_kb) / 1024, "median_s": statistics.median(times)}


def measure(impl: str, h: int, w: int, pass_: str, repeats: int) -> dict:
    command = [sys.executable, __file__, "--case", impl, str(h), str(w), pass_, "--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(h: int, w: int, pass_: str, repeats: int, limit_gb: float) -> dict:
    """SDPA then naive on one case, each in its own process; naive is None when it would need over `limit_gb`."""
    sdpa = measure("sdpa", h, w, pass_, repeats)
    needed_gb = naive_bytes(h, w, pass_) / 1e9
    row = {"size": [h, w], "pass": pass_, "repeats": repeats, "sdpa": sdpa, "naive": None, "naive_needs_gb": needed_gb,
           "memory_ratio": None, "time_ratio": None}
    if needed_gb <= limit_gb:
        naive = measure("naive", h, w, pass_, repeats)
        # A floor of 0.1 MB: a tiny SDPA case can read as zero growth of the peak.
        row.update(naive=naive, memory_ratio=naive["peak_mb"] / max(sdpa["peak_mb"], 0.1),
                   time_ratio=naive["median_s"] / sdpa["median_s"])
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-gb", type=float, default=6.0, help="skip naive cases needing more (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; time is their median (default 3)")
    parser.add_argument("--case", nargs=4, metavar=("IMPL", "H", "W", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        impl, h, w, pass_ = args.case
        print(json.dumps(run_case(impl, int(h), int(w), pass_, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; C={NUM_CLASSES}, d={DIM}, batch 1")
    print()
    print("| tokens (h x w) | pass | SDPA peak MB | naive peak MB | naive / SDPA memory | SDPA s | naive s | naive / SDPA time |")
    print("|---|---|---|---|---|---|---|---|")
    for h, w in SIZES:
        for pass_ in PASSES:
            row = compare(h, w, pass_, args.repeats, args.limit_gb)
            sdpa, naive = row["sdpa"], row["naive"]
            label = f"{h * w:,} ({h}x{w})"
            if naive is None:
                skipped = f"skipped (would need {row['naive_needs_gb']:.1f} GB)"
                print(f"| {label} | {pass_} | {sdpa['peak_mb']:.1f} | {skipped} | - | {sdpa['median_s']:.3f} | - | - |")
                continue
            print(
                f"| {label} | {pass_} | {sdpa['peak_mb']:.1f} | {naive['peak_mb']:.1f} | {row['memory_ratio']:.0f}x "
                f"| {sdpa['median_s']:.3f} | {naive['median_s']:.3f} | {row['time_ratio']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
