"""Which network to export, the EMA teacher or the student: decided on the tune splits of both benchmarks.

Reads the committed ablation reports (benchmarks/results/ablation.json by day, ablation_night.json at
night), pairs each seed's EMA teacher ("mean teacher (EMA teacher)") with its own student ("mean
teacher"), both as exported (BatchNorm statistics re-estimated on target train), and writes the
paired deltas on tune (where the choice is made) and on target val (reported, not chosen on).

The rule (issue: "if it stays a tie, export the one that is never far behind"): a side wins when
its mean lead over both tune splits is larger than one standard deviation of the paired deltas;
otherwise it is a tie, and the network whose worst tune-split deficit is smaller is exported.

    python benchmarks/export_choice.py            # writes benchmarks/results/export_choice.{md,json}
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

STUDENT, TEACHER = "mean teacher", "mean teacher (EMA teacher)"
BENCHMARKS = {"day": "ablation", "night": "ablation_night"}


def paired_deltas(report: dict, key: str) -> dict[int, float]:
    """Teacher minus student, in mIoU points, per seed present in both rows."""
    students = {row["seed"]: row for row in report[STUDENT] if row.get(key) is not None}
    teachers = {row["seed"]: row for row in report[TEACHER] if row.get(key) is not None}
    return {seed: 100.0 * (teachers[seed][key] - students[seed][key]) for seed in sorted(set(students) & set(teachers))}


def decide(tune: dict[str, dict[int, float]]) -> dict:
    """The export choice from the tune splits' paired deltas (teacher - student) of every benchmark."""
    every = [d for deltas in tune.values() for d in deltas.values()]
    if len(every) < 2:
        raise SystemExit("need at least two paired seeds on the tune splits")
    mean, std = statistics.mean(every), statistics.stdev(every)
    teacher_worst = -min(every)          # the most the teacher trails its student on one tune split and seed
    student_worst = max(every)           # the most the student trails its teacher
    if abs(mean) > std:
        choice, why = ("teacher" if mean > 0 else "student"), f"mean lead {mean:+.2f} exceeds one std ({std:.2f})"
    else:
        choice = "teacher" if teacher_worst <= student_worst else "student"
        why = (f"a tie (mean {mean:+.2f} +- {std:.2f}); the {choice} is never further behind: at worst "
               f"{min(teacher_worst, student_worst):.2f} points against {max(teacher_worst, student_worst):.2f}")
    return {"choice": choice, "why": why, "mean": mean, "std": std, "teacher_worst_deficit": teacher_worst,
            "student_worst_deficit": student_worst}


def report(results: Path) -> tuple[dict, str]:
    tune, val, lines = {}, {}, []
    for name, stem in BENCHMARKS.items():
        data = json.loads((results / f"{stem}.json").read_text())
        tune[name], val[name] = paired_deltas(data, "tune_miou"), paired_deltas(data, "miou")
    decision = decide(tune)
    lines += ["# Export: the EMA teacher or the student", "",
              "Teacher minus student, paired by seed, both as exported (BatchNorm statistics re-estimated on target",
              "train), last checkpoints, mIoU points; from benchmarks/results/ablation.json (day) and ablation_night.json",
              "(night). `python benchmarks/export_choice.py`", "",
              "| benchmark | split | per seed | mean +- std | teacher ahead |", "|---|---|---|---|---|"]
    for name in BENCHMARKS:
        for split, deltas in (("tune", tune[name]), ("target val", val[name])):
            values = list(deltas.values())
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            lines.append(f"| {name} | {split} | " + ", ".join(f"s{s}: {d:+.2f}" for s, d in deltas.items())
                         + f" | {statistics.mean(values):+.2f} +- {spread:.2f} | {sum(d > 0 for d in values)} of {len(values)} |")
    lines += ["", f"Decision on the tune splits: **export the {decision['choice']}**: {decision['why']}.",
              f"Worst tune deficit: teacher {decision['teacher_worst_deficit']:.2f}, student {decision['student_worst_deficit']:.2f}."]
    gap = abs(decision["teacher_worst_deficit"] - decision["student_worst_deficit"])
    if gap < 0.5:
        ahead = sum(d > 0 for deltas in val.values() for d in deltas.values())
        total = sum(len(deltas) for deltas in val.values())
        lines.append(f"The two worst deficits differ by {gap:.2f} points, well inside one seed's noise: on this evidence the "
                     f"choice is close to a coin toss. On target val (not chosen on) the teacher is ahead in {ahead} of {total} seeds.")
    lines.append("")
    return {"tune": tune, "val": val, **decision}, "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_choice",
                        help="report path without suffix: OUT.md and OUT.json")
    args = parser.parse_args()
    data, text = report(args.results)
    atomic_write_text(args.out.with_suffix(".md"), text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(data, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
