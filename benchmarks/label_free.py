"""Do the label-free measures rank checkpoints the way target-val mIoU does?

For every checkpoint of the runs made by `benchmarks/label_free_runs.py` (intermediate and last
checkpoints of every stage, two seeds, mean teacher and IAST, with and without correlation
transfer): target-val mIoU (labels read here only, to validate) and each measure of
`common.label_free` on the same target-val images without their labels, plus temporal flicker on
a generated target-style drive. Reported: the Spearman rank correlation of each measure (oriented
so that higher should be better) with mIoU over all checkpoints and within each run, and how
often the best-scored checkpoint of a run beats its `last.pt`.

    python benchmarks/label_free_runs.py --out runs/label_free      # the checkpoints (minutes)
    python benchmarks/label_free.py --runs-dir runs/label_free       # scores, report

Scores are cached per checkpoint in RUNS_DIR/scores/, so a rerun only scores new checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uda_adapt.common import label_free  # noqa: E402
from uda_adapt.common.atomic import atomic_write_text  # noqa: E402

# A measure "ranks models" when its rank correlation with mIoU (oriented: higher score, higher
# mIoU) is at least this both over all checkpoints and over the adapted (self-training) ones
# alone: telling a source-only network from an adapted one is the easy half of the job.
MIN_SPEARMAN = 0.5
VIDEO_FRAMES = 32


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The run's snapshots, one per (stage, step): the last copy written of each.

    Correlation-stage checkpoints are left out: their network is the source stage's, frozen.
    """
    import torch

    kept: dict[tuple[str, int], Path] = {}
    for path in sorted((run_dir / "snapshots").glob("*.pt")):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["stage"] != "correlation":
            kept[(payload["stage"], int(payload["step"]))] = path
    return [kept[key] for key in sorted(kept, key=lambda k: (("source", "self_train").index(k[0]), k[1]))]


def score_checkpoint(path: Path, target: Path, images: np.ndarray, video: np.ndarray, source_share: np.ndarray) -> dict:
    from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
    from uda_adapt.adapt.data import open_dataset
    from uda_adapt.adapt.data.transforms import EvalTransform
    from uda_adapt.adapt.evaluation import evaluate
    from uda_adapt.adapt.label_free_eval import measure_network, network_predictor

    ckpt = load_checkpoint(path)
    model = build_model(ckpt)
    labelled = open_dataset("folder", target, "val", require_labels=True, transform=EvalTransform(mean=ckpt.mean, std=ckpt.std))
    miou = evaluate(model, labelled, progress=False).miou
    values = measure_network(model, images, mean=ckpt.mean, std=ckpt.std, num_classes=ckpt.num_classes, source_share=source_share)
    video_masks = label_free.as_masks(label_free.predict_in_batches(network_predictor(model, ckpt.mean, ckpt.std), video))
    values["temporal_flicker"] = label_free.temporal_flicker(video, video_masks)
    return {"checkpoint": str(path), "stage": ckpt.stage, "step": ckpt.step, "miou": miou, **values}


def drive_frames(runs_dir: Path, size: tuple[int, int]) -> np.ndarray:
    """A generated target-style drive (consecutive frames) as RGB uint8 (T, H, W, 3)."""
    import cv2

    from uda_adapt.adapt.data.synth import generate_video

    clip = runs_dir / "drive.mp4"
    if not clip.is_file():
        generate_video(clip, "real", VIDEO_FRAMES, size, 15.0, 0, None)
    capture, frames = cv2.VideoCapture(str(clip)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def analyse(runs: dict[str, list[dict]]) -> dict:
    """Spearman of each measure with mIoU (all checkpoints, within runs) and best-scored vs last."""
    everything = [row for rows in runs.values() for row in rows]
    miou = [row["miou"] for row in everything]
    report = {}
    for name in label_free.MEASURES:
        valid = [row for row in everything if row.get(name) is not None]
        if len(valid) < 3:
            report[name] = {"spearman": None, "checkpoints": len(valid), "ranks_models": False,
                            "note": "not computed on these checkpoints"}
            continue
        rho = label_free.spearman([label_free.oriented(name, r[name]) for r in valid], [r["miou"] for r in valid])
        adapted = [r for r in valid if r["stage"] == "self_train"]
        rho_adapted = label_free.spearman([label_free.oriented(name, r[name]) for r in adapted], [r["miou"] for r in adapted])
        within = {}
        picks = {"beats_last": 0, "ties_last": 0, "loses_to_last": 0}
        for run, rows in runs.items():
            rows = [r for r in rows if r.get(name) is not None]
            if len(rows) >= 3:
                within[run] = label_free.spearman([label_free.oriented(name, r[name]) for r in rows], [r["miou"] for r in rows])
            best = max(rows, key=lambda r: label_free.oriented(name, r[name]))
            last = rows[-1]
            gain = best["miou"] - last["miou"]
            picks["beats_last" if gain > 1e-9 else "loses_to_last" if gain < -1e-9 else "ties_last"] += 1
            picks.setdefault("gain_points", {})[run] = round(100 * gain, 2)
        report[name] = {"spearman": rho, "checkpoints": len(valid), "spearman_adapted": rho_adapted,
                        "adapted_checkpoints": len(adapted), "spearman_within_runs": within, "best_scored_vs_last": picks,
                        "ranks_models": bool(min(rho, rho_adapted) >= MIN_SPEARMAN)}
    ranked = [n for n, r in report.items() if r["ranks_models"]]
    best = max(ranked, key=lambda n: report[n]["spearman"]) if ranked else None
    return {"measures": report, "best": best, "min_spearman": MIN_SPEARMAN, "checkpoints": len(everything),
            "miou_range": [min(miou), max(miou)]}


def write_report(out: Path, runs: dict[str, list[dict]], analysis: dict, command: str, commands: list[list[str]]) -> None:
    payload = {"command": command, "analysis": analysis, "runs": runs}
    atomic_write_text(out / "label_free.json", json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Label-free measures against target-val mIoU",
        "",
        f"`{command}` on {analysis['checkpoints']} checkpoints of {len(runs)} runs "
        f"(target-val mIoU {100 * analysis['miou_range'][0]:.1f} to {100 * analysis['miou_range'][1]:.1f}); "
        "the commands that made them are in `benchmarks/label_free_runs.py`.",
        "Spearman is of the measure oriented so that higher should mean better; a measure ranks models "
        f"when it reaches {MIN_SPEARMAN} both over all checkpoints and over the adapted (self-training) ones alone.",
        "",
        "| measure | Spearman (all) | Spearman (adapted only) | within runs (mean) | best-scored vs last.pt (beats / ties / loses) | ranks models |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in analysis["measures"].items():
        if r["spearman"] is None:
            lines.append(f"| {name} | n/a | | | | no ({r['note']}) |")
            continue
        within = [v for v in r["spearman_within_runs"].values() if not math.isnan(v)]
        p = r["best_scored_vs_last"]
        lines.append(f"| {name} | {r['spearman']:+.2f} | {r['spearman_adapted']:+.2f} | {np.mean(within):+.2f} | "
                     f"{p['beats_last']} / {p['ties_last']} / "
                     f"{p['loses_to_last']} | {'yes' if r['ranks_models'] else 'no'} |")
    best = analysis["best"]
    lines += ["", f"Offered as the quality score: **{best}**." if best else "No measure ranks models: none is offered."]
    if best:
        picks = analysis["measures"][best]["best_scored_vs_last"]
        runs_count = sum(picks[k] for k in ("beats_last", "ties_last", "loses_to_last"))
        lines += ["", f"Picking each run's checkpoint by {best} beat its last.pt in {picks['beats_last']} of {runs_count} runs "
                  f"(gains in points: {picks['gain_points']}): the measures compare models (source only against adapted, "
                  "A against B, today against last month), they do not pick a checkpoint within a run better than "
                  "taking the last one, which is why reported numbers stay on last.pt."]
    lines += ["", "The checkpoints: `python benchmarks/label_free_runs.py --out RUNS_DIR` ran, each with OMP_NUM_THREADS=1 "
              "and every `last.pt` copied as it was written:", "", "```"]
    lines += [f"uda-adapt {shlex.join(command)}" for command in commands]
    lines += ["```", ""]
    lines += ["| run | checkpoint | stage | step | mIoU | " + " | ".join(label_free.MEASURES) + " |",
              "|---|---|---|---|---|" + "---|" * len(label_free.MEASURES)]
    for run, rows in runs.items():
        for r in rows:
            cells = ["" if r.get(n) is None else f"{r[n]:.4f}" for n in label_free.MEASURES]
            lines.append(f"| {run} | {Path(r['checkpoint']).name} | {r['stage']} | {r['step']} | {100 * r['miou']:.2f} | " + " | ".join(cells) + " |")
    atomic_write_text(out / "label_free.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/label_free")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    from uda_adapt.adapt.data import open_dataset
    from uda_adapt.adapt.label_free_eval import load_target_images, source_label_share

    torch.set_num_threads(args.threads)
    runs_dir = Path(args.runs_dir)
    target, source = runs_dir / "data" / "target", runs_dir / "data" / "source"
    images = load_target_images(open_dataset("folder", target, "val", require_labels=False), limit=0)
    video = drive_frames(runs_dir, images.shape[1:3])
    share = source_label_share("folder", source, "train", 19)
    cache = runs_dir / "scores"
    runs: dict[str, list[dict]] = {}
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "snapshots").is_dir()):
        for path in checkpoints_of(run_dir):
            cached = cache / f"{run_dir.name}_{path.stem}.json"
            if cached.is_file():
                row = json.loads(cached.read_text())
            else:
                row = score_checkpoint(path, target, images, video, share)
                atomic_write_text(cached, json.dumps(row) + "\n")
                print(f"{run_dir.name} {path.name}: mIoU {100 * row['miou']:.2f}  "
                      f"{label_free.VALIDATED} {row[label_free.VALIDATED]:.4f}", flush=True)
            runs.setdefault(run_dir.name, []).append(row)
    analysis = analyse(runs)
    command = "python benchmarks/label_free.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from benchmarks.label_free_runs import DATA_ARGS, RUNS, train_command

    commands = [["data", "benchmark", "--out", str(runs_dir / "data"), *DATA_ARGS]]
    commands += [train_command(runs_dir, name) for name in RUNS if name in runs]
    write_report(Path(args.out), runs, analysis, command.strip(), commands)
    for name, r in analysis["measures"].items():
        rho = "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}"
        print(f"{name:<22} Spearman {rho}  {'ranks models' if r['ranks_models'] else 'does not rank models'}")
    print(f"best: {analysis['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
