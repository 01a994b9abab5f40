"""Two ablation reports of the same seeds, row against row: paired per-seed deltas of mIoU (val and
tune) and of every class's IoU, e.g. a recipe change that retrains from the source stage (its own
`--out` directory) against the runs it would replace.

    python benchmarks/paired_runs.py --new runs/x/ablation.json --old runs/y/ablation.json \\
        --pair "mean teacher (EMA teacher)" --pair "source + AdaBN" --out benchmarks/results/x_vs_y.md

`--pair NEW` compares the row NEW in both reports; `--pair "NEW=OLD"` compares NEW with the old
report's row OLD. Only seeds present in both count; a pair with none is refused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uda_adapt.common.atomic import atomic_write_text  # noqa: E402


def by_seed(report: dict, row: str) -> dict[int, dict]:
    if row not in report:
        raise SystemExit(f"row {row!r} is not in the report (rows: {', '.join(report)})")
    return {entry["seed"]: entry for entry in report[row]}


def metric(entry: dict, name: str) -> float | None:
    value = entry.get(name) if name in ("miou", "tune_miou") else entry.get("per_class_iou", {}).get(name)
    return None if value is None else 100.0 * value


def paired(new: dict[int, dict], old: dict[int, dict], name: str) -> dict[int, tuple[float, float]]:
    """{seed: (old, new)} in points, for the seeds where both reports have the metric."""
    pairs = {}
    for seed in sorted(set(new) & set(old)):
        a, b = metric(old[seed], name), metric(new[seed], name)
        if a is not None and b is not None:
            pairs[seed] = (a, b)
    return pairs


def summary(pairs: dict[int, tuple[float, float]]) -> tuple[float, float]:
    deltas = [b - a for a, b in pairs.values()]
    return statistics.mean(deltas), (statistics.stdev(deltas) if len(deltas) > 1 else 0.0)


def compare(new_report: dict, old_report: dict, pairs: list[str]) -> tuple[str, dict]:
    lines = ["| row (new - old) | metric | per seed: old -> new (delta) | mean +- std | positive |", "|---|---|---|---|---|"]
    classes_lines: list[str] = []
    result: dict = {}
    for spec in pairs:
        new_row, _, old_row = spec.partition("=")
        old_row = old_row or new_row
        new, old = by_seed(new_report, new_row), by_seed(old_report, old_row)
        if not set(new) & set(old):
            raise SystemExit(f"{spec!r}: no seed in both reports")
        names = ["miou", "tune_miou", *next(iter(new.values())).get("per_class_iou", {})]
        label = new_row if new_row == old_row else f"{new_row} - {old_row}"
        result[label] = {}
        class_rows = []
        for name in names:
            p = paired(new, old, name)
            if not p:
                continue
            mean, std = summary(p)
            result[label][name] = {"per_seed": {str(s): {"old": a, "new": b} for s, (a, b) in p.items()}, "mean": mean, "std": std}
            seeds = ", ".join(f"s{s}: {a:.1f} -> {b:.1f} ({b - a:+.2f})" for s, (a, b) in p.items())
            positive = sum(b > a for a, b in p.values())
            if name in ("miou", "tune_miou"):
                lines.append(f"| {label} | {name} | {seeds} | {mean:+.2f} +- {std:.2f} | {positive} of {len(p)} |")
            else:
                old_mean = statistics.mean(a for a, _ in p.values())
                new_mean = statistics.mean(b for _, b in p.values())
                worst = min(b - a for a, b in p.values())
                class_rows.append(f"| {name} | {old_mean:.1f} | {new_mean:.1f} | {mean:+.2f} | {worst:+.2f} | {positive} of {len(p)} |")
        classes_lines += ["", f"Per class, {label}: IoU on target val (points), mean over the paired seeds:", "",
                          "| class | old | new | mean delta | worst seed | positive |", "|---|---|---|---|---|---|", *class_rows]
    return "\n".join(lines + classes_lines) + "\n", result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new", type=Path, required=True, help="the ablation JSON of the change")
    parser.add_argument("--old", type=Path, required=True, help="the ablation JSON it is compared with")
    parser.add_argument("--pair", action="append", required=True, help='"ROW" or "NEW ROW=OLD ROW"; repeatable')
    parser.add_argument("--out", type=Path, help="write the markdown here (and the numbers beside it, .json)")
    parser.add_argument("--title", default="Paired per-seed deltas")
    args = parser.parse_args(argv)
    reports = []
    for path in (args.new, args.old):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read the ablation report {path}: {error}")
    text, numbers = compare(reports[0], reports[1], args.pair)
    text = f"# {args.title}\n\nNew: `{args.new}`; old: `{args.old}`.\n\n{text}"
    if args.out:
        atomic_write_text(args.out, text)
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(numbers, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
