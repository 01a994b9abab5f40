"""The ablation on the embedded benchmark: does correlation transfer help self-training?

Rows, on the same data and the same seeds (mean +- std of the *last* checkpoint of each run):
  source only          the source stage
  self-training        lambda_ct = 0, started from the same source network
  self-training + CT   lambda_ct = the config's value (and each --lambdas value)
  oracle               the source stage trained on the labelled target train split
  network + module     diagnostic: the source network followed by the correlation module at test time

    python benchmarks/ablation.py --data data/synthetic --out runs/ablation --seeds 0 1 2

With --tune DIR (a labelled folder dataset generated with another seed, e.g. by
`uda-adapt data synth --out DIR --domain real --split val --num 100 --seed 1000`), every run is also
scored on DIR/val, so that settings can be chosen there and not on the reported target val.
Runs already finished in --out are reused, so an interrupted ablation resumes, and seeds can be
trained by separate processes (--seeds 0 / --seeds 1 ...) before one call over all of them
writes the combined report.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from adapt.config import load_config
from adapt.train.config import TrainConfig
from adapt.train.runner import train

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="benchmark root with source/ and target/ (generated if missing)")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default=str(ROOT / "samples/configs/synthetic.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="*", default=[], help="extra lambda_ct values to compare")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="another self-training row from the same correlation checkpoint, e.g. "
                             "'round_teacher:self_train.ct_teacher=round' (repeatable)")
    parser.add_argument("--tune", default=None, help="labelled folder dataset for model selection (scored on its val split)")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs already finished in --out (rows list the seeds they have)")
    parser.add_argument("--report-name", default="ablation", help="report files OUT/NAME.{md,json,png}")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); "
                        "two 1-thread processes on different --seeds use 2 cores better than one")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    data, out = Path(args.data), Path(args.out)
    ensure_benchmark(data)
    overrides = [f"data.source.root={data / 'source'}", f"data.target.root={data / 'target'}", *args.overrides]
    default_lambda = load_config(TrainConfig, args.config, overrides).self_train.lambda_ct

    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        base = seed_dir / "base"
        cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}"])
        if not args.report_only:
            train(cfg, base)
        corr = base / "correlation" / "last.pt"
        add_row(rows, "source only", score(base / "source", "source", args.tune))
        add_row(rows, "self-training (lambda_ct=0)",
            run_self_train(args, overrides, seed, seed_dir / "lambda0", corr, 0.0))
        add_row(rows, f"self-training + CT (lambda_ct={default_lambda:g})",
            score(base / "self_train", last_round_tag(cfg), args.tune))
        for value in args.lambdas:
            if value in (0.0, default_lambda):
                continue
            add_row(rows, f"self-training + CT (lambda_ct={value:g})",
                run_self_train(args, overrides, seed, seed_dir / f"lambda{value:g}", corr, value))
        for spec in args.extra:
            name, _, settings = spec.partition(":")
            extra = [item for item in settings.split(",") if item]
            add_row(rows, f"self-training + CT ({name})",
                run_self_train(args, overrides, seed, seed_dir / name, corr, None, extra))
        if not args.no_oracle:
            oracle_cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}", f"data.source.root={data / 'target'}"])
            if not args.report_only:
                train(oracle_cfg, seed_dir / "oracle", stage="source")
            add_row(rows, "oracle (target labels)", score(seed_dir / "oracle" / "source", "source", args.tune))
        add_row(rows, "diagnostic: network + module", score(base / "correlation", "network+module", None))
        write_report(out, rows, args)
    return 0


def add_row(rows: dict[str, list[dict]], name: str, entry: dict | None) -> None:
    rows.setdefault(name, [])
    if entry is not None:
        entry["seed"] = int(re.search(r"seed(\d+)", entry["run"]).group(1))
        rows[name].append(entry)


def ensure_benchmark(data: Path) -> None:
    if (data / "source" / "meta.json").is_file() and (data / "target" / "meta.json").is_file():
        return
    from adapt.data.synth import write_benchmark

    write_benchmark(data)


def run_self_train(args, overrides, seed: int, run_dir: Path, init: Path, lambda_ct: float | None, extra=()) -> dict:
    settings = [] if lambda_ct is None else [f"self_train.lambda_ct={lambda_ct}"]
    cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}", *settings, *extra])
    if not args.report_only:
        train(cfg, run_dir, stage="self_train", init=init)
    return score(run_dir / "self_train", last_round_tag(cfg), args.tune)


def last_round_tag(cfg: TrainConfig) -> str:
    return f"round{cfg.self_train.rounds}"


def score(stage_dir: Path, tag: str, tune: str | None) -> dict | None:
    """The run's last evaluation (None when the run has not finished: --report-only)."""
    if not (stage_dir / f"eval_{tag}.json").is_file() or not (stage_dir / "last.pt").is_file():
        return None
    result = json.loads((stage_dir / f"eval_{tag}.json").read_text())
    entry = {"miou": result["miou"], "per_class_iou": result["per_class_iou"], "run": str(stage_dir)}
    if tune:
        from adapt.eval_checkpoint import evaluate_checkpoint

        ckpt = stage_dir / "last.pt"
        tuned, _ = evaluate_checkpoint(ckpt, tune, split="val", json_path=stage_dir / f"tune_{tag}.json")
        entry["tune_miou"] = tuned.miou
    return entry


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_report(out: Path, rows: dict[str, list[dict]], args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    lines = [f"Seeds {args.seeds}; mIoU (%) on the target val split, last checkpoint of each run, mean +- std.",
             f"Command: `{command}`", ""]
    header = "| method | mIoU | per seed |" + (" tune mIoU |" if args.tune else "")
    lines += [header, "|---|---|---|" + ("---|" if args.tune else "")]
    for name, entries in rows.items():
        m, s = mean_std([e["miou"] for e in entries])
        seeds = ", ".join(f"s{e['seed']}: {100 * e['miou']:.1f}" for e in entries)
        line = f"| {name} | {100 * m:.1f} +- {100 * s:.1f} | {seeds} |"
        if args.tune:
            tm, ts = mean_std([e.get("tune_miou") for e in entries])
            line += f" {100 * tm:.1f} +- {100 * ts:.1f} |" if not math.isnan(tm) else " - |"
        lines.append(line)
    rows = {name: entries for name, entries in rows.items() if entries}
    classes = list(next(iter(rows.values()))[0]["per_class_iou"])
    names = list(rows)
    lines += ["", "Per-class IoU (%), mean over seeds (n/a: class absent from the benchmark):", "",
              "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cls in classes:
        cells = []
        for name in names:
            m, _ = mean_std([e["per_class_iou"][cls] for e in rows[name]])
            cells.append("n/a" if math.isnan(m) else f"{100 * m:.1f}")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    atomic_write_text(out / f"{args.report_name}.md", "\n".join(lines) + "\n")
    atomic_write_text(out / f"{args.report_name}.json", json.dumps(rows, indent=2) + "\n")
    plot(out / f"{args.report_name}.png", rows, classes)
    print("\n".join(lines))


def plot(path: Path, rows: dict[str, list[dict]], classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [1, 3]})
    stats = [mean_std([e["miou"] for e in rows[n]]) for n in names]
    left.bar(range(len(names)), [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], capsize=4,
             color=plt.cm.tab10(np.arange(len(names))))
    left.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], rotation=45, ha="right", fontsize=7)
    left.set_ylabel("target val mIoU (%)")
    left.set_title("mIoU, mean +- std over seeds")
    present = [c for c in classes if not all(math.isnan(mean_std([e["per_class_iou"][c] for e in rows[n]])[0]) for n in names)]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [100 * np.nan_to_num(mean_std([e["per_class_iou"][c] for e in rows[name]])[0]) for c in present]
        right.bar(np.arange(len(present)) + i * width, values, width, label=name, color=plt.cm.tab10(i))
    right.set_xticks(np.arange(len(present)) + 0.4 - width / 2, present, rotation=45, ha="right")
    right.set_ylabel("IoU (%)")
    right.legend(fontsize=7)
    right.set_title("per-class IoU")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
