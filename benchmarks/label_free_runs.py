"""The checkpoints `benchmarks/label_free.py` ranks: short runs of `uda-adapt train`, snapshotted.

Each run is the plain `uda-adapt train` command line (printed before it starts), in its own
process with one CPU thread. While it trains, every new `RUN/<stage>/last.pt` (written
atomically every `logging.checkpoint_every` iterations) is copied to
`RUN/snapshots/<stage>_<n>.pt`, so the intermediate checkpoints of a run survive too.

    python benchmarks/label_free_runs.py --out runs/label_free

Runs already finished in --out are skipped, so an interrupted generation resumes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UDA = [sys.executable, "-m", "uda_adapt"]

# The benchmark at a smaller size than the default (96x192, 160 + 48 images per domain) so that
# 20+ checkpoints take minutes on one shared core; what matters here is the ranking, not the level.
DATA_ARGS = ["--size", "96x192", "--num-train", "160", "--num-val", "48", "--seed", "0"]
SHORT = [
    "data.crop_size=[96,192]", "source.iterations=300", "correlation.iterations=50",
    "self_train.mean_teacher.iterations=300", "self_train.rounds=2", "self_train.iterations_per_round=100",
    "logging.checkpoint_every=50", "logging.log_every=50", "logging.num_overlays=0",
]
# name: (seed, settings, the run whose correlation checkpoint it starts from, or None: the full
# schedule). A start must fit the module, i.e. run with lambda_ct > 0: at 0 the correlation stage
# is skipped. iast_ct_seed1 runs its own seed-1 schedule (source and correlation stages with
# mt_seed1's seed and settings, where it used to start from mt_seed1's).
RUNS: dict[str, tuple[int, list[str], str | None]] = {
    "mt_ct_seed0": (0, ["self_train.method=mean_teacher", "self_train.lambda_ct=0.1"], None),
    "mt_seed1": (1, ["self_train.method=mean_teacher", "self_train.lambda_ct=0"], None),
    "iast_seed0": (0, ["self_train.method=iast", "self_train.lambda_ct=0"], "mt_ct_seed0"),
    "iast_ct_seed1": (1, ["self_train.method=iast", "self_train.lambda_ct=0.1"], None),
}


def starts_without_a_module(runs: dict[str, tuple[int, list[str], str | None]]) -> list[str]:
    """The runs that start from a run whose schedule skips the correlation stage (lambda_ct 0)."""
    return [name for name, (_, _, start) in runs.items()
            if start is not None and "self_train.lambda_ct=0" in runs[start][1]]


def train_command(out: Path, name: str) -> list[str]:
    seed, settings, start = RUNS[name]
    data = out / "data"
    args = ["train", "--config", "samples/configs/synthetic.yaml", "--out", str(out / name),
            "--set", f"data.source.root={data / 'source'}", "--set", f"data.target.root={data / 'target'}",
            "--set", f"seed={seed}"]
    for item in [*SHORT, *settings]:
        args += ["--set", item]
    if start is not None:
        args += ["--stage", "self_train", "--init", str(out / start / "correlation" / "last.pt")]
    return args


def snapshot_while(process: subprocess.Popen, run_dir: Path, poll_s: float = 0.5) -> None:
    """Copy each new `last.pt` of the run into `run_dir/snapshots` until `process` exits."""
    snapshots = run_dir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    seen: dict[Path, float] = {}
    while True:
        done = process.poll() is not None
        for last in run_dir.glob("*/last.pt"):
            stamp = last.stat().st_mtime
            if seen.get(last) != stamp:
                seen[last] = stamp
                count = len(list(snapshots.glob(f"{last.parent.name}_*.pt")))
                # last.pt is replaced atomically: the copy is always of one whole checkpoint.
                shutil.copyfile(last, snapshots / f"{last.parent.name}_{count:03d}.pt")
        if done:
            return
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/label_free", help="relative to the repository root, where the runs start")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args(argv)
    if broken := starts_without_a_module(RUNS):
        raise SystemExit(f"{', '.join(broken)} start from a run without a correlation stage (lambda_ct 0)")
    os.chdir(ROOT)              # the printed commands are the ones to type at the repository root
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if not (out / "data" / "target" / "meta.json").is_file():
        command = ["data", "benchmark", "--out", str(out / "data"), *DATA_ARGS]
        print("$ uda-adapt " + shlex.join(command), flush=True)
        subprocess.run([*UDA, *command], check=True, env=env, cwd=ROOT)
    for name in args.runs:
        if (out / name / "summary.json").is_file():
            print(f"{name}: finished, skipped", flush=True)
            continue
        command = train_command(out, name)
        print("$ OMP_NUM_THREADS=1 uda-adapt " + shlex.join(command), flush=True)
        process = subprocess.Popen([*UDA, *command], env=env, cwd=ROOT)
        snapshot_while(process, out / name)
        if process.returncode != 0:
            print(f"{name}: training failed (exit {process.returncode})", file=sys.stderr)
            return process.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
