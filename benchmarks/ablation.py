"""The ablation on an embedded benchmark: what does each piece of adaptation buy?

Two benchmarks: `--target-style real` (the default, the camera by day) and `--target-style night`
(the same camera after dark), generated into --data when it is missing. Rows, on the same data and
the same seeds (the *last* checkpoint of each run):
  source only              the source stage
  source + AdaBN           the same network with target BatchNorm statistics, no training (the floor)
  IAST                     self_train.method=iast, lambda_ct=0
  IAST + CT                the same with correlation transfer (--iast-lambda, default --ct-lambda)
  mean teacher             self_train.method=mean_teacher, lambda_ct=0
  mean teacher + CT        the same with correlation transfer (--ct-lambda: the config's lambda_ct, 0.1 where that is 0)
  oracle                   the source stage trained on the labelled target train split
  network + module         diagnostic: the source network followed by the correlation module
  NAME, network + live module  diagnostic of a row with correlation_refit: its network followed by the
                           module as refitted during self-training
  --extra 'NAME:K=V,K=V'   any other self-training row: the config overrides K=V (any key, e.g.
                           self_train.mean_teacher.mic.enabled=true, self_train.export=teacher)
  --teacher-of NAME        the EMA teacher of mean-teacher row NAME (its eval_teacher.json), no training;
                           every self-training row itself is its student (self_train.export=student)
  --bn-check NAME          row NAME's student with the BatchNorm statistics training left it, before
                           the end-of-stage re-estimation on target images (self_train.target_bn)

Every self-training row starts from the same correlation-stage checkpoint of its seed. The
report gives mean +- std, the gap closed, (row - source) / (oracle - source), and the paired
per-seed delta of every row named "BASE + WHAT" against the row BASE (e.g. "mean teacher + MIC +
CT" against "mean teacher + MIC"): seed variance would hide a 1-point difference without pairing.

    python benchmarks/ablation.py --data data/synthetic --out runs/ablation --seeds 0 1 2 --tune runs/tune

With --tune DIR (a labelled folder dataset generated with another seed, e.g. by
`uda-adapt data synth --out DIR --domain real --split val --num 100 --seed 1000`), every run is also
scored on DIR/val, so that settings can be chosen there and not on the reported target val.
Every row resumes: training continues from its last checkpoint, finished runs and scores are
reused, so an interrupted ablation picks up where it stopped. Seeds run in parallel as separate
processes (--seeds 0 --threads 1 & --seeds 1 --threads 1 & ...; generate --data first, e.g. with
`uda-adapt data benchmark`), then one --report-only call over all of them writes the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np

from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.data.synth import TARGET_STYLES
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.target_batchnorm_eval import TargetData, evaluate_with_target_batchnorm
from uda_adapt.adapt.train.runner import train
from uda_adapt.adapt.train.self_train_stage import final_tag
from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCE, ADABN, ORACLE = "source only", "source + AdaBN", "oracle (target labels)"
IAST, MT = "IAST", "mean teacher"
SOURCE_ON_SOURCE = "diagnostic: source only, on source val"
TEACHER_SUFFIX = " (EMA teacher)"
TRAINING_BN_SUFFIX = " (student, training BN statistics)"
# The report lists the rows of each family together, families in this order.
REPORT_ORDER = [SOURCE, ADABN, IAST, MT]


def base_of(row: str, names) -> str | None:
    """The row "BASE + WHAT" is paired with: BASE, when `names` holds it (None otherwise); an EMA
    teacher's row and a training-statistics row are paired with their run's own row."""
    suffix = next((end for end in (TEACHER_SUFFIX, TRAINING_BN_SUFFIX) if row.endswith(end)), None)
    if suffix:
        head = row.removesuffix(suffix)
    else:
        head, sep, _ = row.rpartition(" + ")
        head = head if sep else None
    return head if head in names else None


def report_rank(row: str) -> tuple[int, int, str]:
    """Families in REPORT_ORDER (then other rows, the oracle, diagnostics); within one, bases first."""
    if row.startswith("diagnostic"):
        return len(REPORT_ORDER) + 2, 0, row
    if row == ORACLE:
        return len(REPORT_ORDER) + 1, 0, row
    family = next((i for i, name in enumerate(REPORT_ORDER) if row == name or row.startswith(f"{name} ")), len(REPORT_ORDER))
    return family, row.count(" + "), row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="benchmark root with source/ and target/ (generated if missing)")
    parser.add_argument("--target-style", choices=TARGET_STYLES, default=TARGET_STYLES[0],
                        help="the benchmark's target: real (by day) or night; --data must hold that target")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default=str(ROOT / "samples/configs/synthetic.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ct-lambda", type=float, default=None,
                        help="lambda_ct of the mean teacher + CT row [default: the config's, or 0.1 where that is 0]")
    parser.add_argument("--iast-lambda", type=float, default=None, help="lambda_ct of the IAST + CT row [default: --ct-lambda]")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="another self-training row from the same correlation checkpoint, e.g. "
                             "'mean teacher + MIC:self_train.mean_teacher.mic.enabled=true' (repeatable; any config key)")
    parser.add_argument("--teacher-of", action="append", default=[], metavar="NAME",
                        help=f"also report the EMA teacher of mean-teacher row NAME as 'NAME{TEACHER_SUFFIX}' (repeatable)")
    parser.add_argument("--bn-check", action="append", default=[], metavar="NAME",
                        help=f"also report the student of mean-teacher row NAME with the BatchNorm statistics training left it, "
                             f"before their re-estimation on target images, as 'NAME{TRAINING_BN_SUFFIX}' (repeatable)")
    parser.add_argument("--rows", nargs="+", default=None, help="train only these rows (names as in the report)")
    parser.add_argument("--tune", default=None, help="labelled folder dataset for model selection (scored on its val split)")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--source-val", action="store_true",
                        help=f"also score each seed's source network on the source domain's own val split, as '{SOURCE_ON_SOURCE}' "
                             "(can it learn a class at all, before any domain shift?)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs already finished in --out (rows list the seeds they have)")
    parser.add_argument("--default-row", default=None, metavar="NAME",
                        help="the row that is the config's default: the report checks it seed by seed against the floor, "
                             "source only and its own base")
    parser.add_argument("--report-name", default="ablation", help="report files OUT/NAME.{md,json,png}")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); "
                        "two 1-thread processes on different --seeds use 2 cores better than one")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    data, out = Path(args.data), Path(args.out)
    ensure_benchmark(data, args.target_style)
    # Every self-training row is scored as its student; --teacher-of adds a row's EMA teacher,
    # so both networks of one run sit side by side whatever the config exports.
    overrides = [f"data.source.root={data / 'source'}", f"data.target.root={data / 'target'}", "self_train.export=student",
                 *args.overrides]
    ct_lambda = args.ct_lambda
    if ct_lambda is None:
        ct_lambda = load_config(TrainConfig, args.config, overrides).self_train.lambda_ct or 0.1
    iast_lambda = ct_lambda if args.iast_lambda is None else args.iast_lambda
    # name: (run folder, settings). Trained in this order (the strongest base first).
    self_train_rows = {
        MT: ("mean_teacher", ["self_train.method=mean_teacher", "self_train.lambda_ct=0"]),
        f"{MT} + CT (lambda_ct={ct_lambda:g})": ("mean_teacher_ct", ["self_train.method=mean_teacher", f"self_train.lambda_ct={ct_lambda}"]),
        IAST: ("iast", ["self_train.method=iast", "self_train.lambda_ct=0"]),
        f"{IAST} + CT (lambda_ct={iast_lambda:g})": ("iast_ct", ["self_train.method=iast", f"self_train.lambda_ct={iast_lambda}"]),
    }
    for spec in args.extra:
        name, sep, settings = spec.partition(":")
        if not sep or not name:
            raise UserError(f"--extra {spec!r} is not NAME:KEY=VALUE[,KEY=VALUE]; e.g. 'mean teacher + MIC:self_train.mean_teacher.mic.enabled=true'")
        self_train_rows[name] = (slug(name), split_settings(settings))
    for name in [*args.teacher_of, *args.bn_check]:
        if name not in self_train_rows:
            raise UserError(f"--teacher-of/--bn-check {name!r} names no self-training row; valid: {', '.join(self_train_rows)}")

    def wanted(name: str) -> bool:
        return not args.report_only and (args.rows is None or name in args.rows)

    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        base = seed_dir / "base"
        cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}"])
        if not args.report_only:
            train(cfg, base, stage="source")
            train(cfg, base, stage="correlation")
        corr = base / "correlation" / "last.pt"
        add_row(rows, SOURCE, score(base / "source", "source", args.tune))
        if args.source_val and (base / "source" / "last.pt").is_file():
            on_source = scored_once(base / "source", "exported", str(data / "source"), base / "source" / "val_source_domain.json")
            add_row(rows, SOURCE_ON_SOURCE, {"miou": on_source["miou"], "per_class_iou": on_source["per_class_iou"], "run": str(base / "source")})
        if wanted(ADABN) and not (seed_dir / "adabn" / "eval.json").is_file():
            target = cfg.data.target
            evaluate_with_target_batchnorm(base / "source" / "last.pt", TargetData(target.root, target.kind, target.train_split, target.val_split),
                                           batch_size=cfg.data.batch_size, tune_root=args.tune, json_path=seed_dir / "adabn" / "eval.json")
        add_row(rows, ADABN, read_score(seed_dir / "adabn" / "eval.json", seed_dir / "adabn"))
        for name, (folder, settings) in self_train_rows.items():
            run_cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}", *settings])
            run_dir = seed_dir / folder
            if wanted(name):
                train(run_cfg, run_dir, stage="self_train", init=corr)
            add_row(rows, name, score(run_dir / "self_train", final_tag(run_cfg), args.tune))
            if name in args.teacher_of:
                # eval_teacher.json is the EMA teacher's when the student is exported; with
                # self_train.export=teacher the teacher is the exported network, scored under the final tag.
                # Only the exported network is in last.pt, so only it can be scored on tune here.
                exported = not (run_dir / "self_train" / "eval_teacher.json").is_file()
                teacher_tag = final_tag(run_cfg) if exported else "teacher"
                add_row(rows, f"{name}{TEACHER_SUFFIX}", score(run_dir / "self_train", teacher_tag, args.tune,
                                                               network="exported" if exported else "teacher"))
            if run_cfg.self_train.correlation_refit.every > 0:
                # The live module's own worth on the network it teaches: positive only if following it can help.
                add_row(rows, f"diagnostic: {name}, network + live module",
                        score(run_dir / "self_train", "network+live_module", None))
            if name in args.bn_check:
                add_row(rows, f"{name}{TRAINING_BN_SUFFIX}",
                        score_stored(run_dir / "self_train", final_tag(run_cfg), "student-training-bn", Path(run_cfg.data.target.root), args.tune))
        if not args.no_oracle:
            oracle_cfg = load_config(TrainConfig, args.config, [*overrides, f"seed={seed}", f"data.source.root={data / 'target'}"])
            if wanted(ORACLE):
                train(oracle_cfg, seed_dir / "oracle", stage="source")
            add_row(rows, ORACLE, score(seed_dir / "oracle" / "source", "source", args.tune))
        add_row(rows, "diagnostic: network + module", score(base / "correlation", "network+module", None))
        write_report(out, rows, args)
    return 0


def split_settings(settings: str) -> list[str]:
    """"K=V,K=[a, b]" -> ["K=V", "K=[a, b]"]: commas inside brackets belong to a list value."""
    return [item.strip() for item in re.split(r",(?![^\[]*\])", settings) if item.strip()]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def read_score(path: Path, run: Path) -> dict | None:
    if not path.is_file():
        return None
    return {**json.loads(path.read_text()), "run": str(run)}


def add_row(rows: dict[str, list[dict]], name: str, entry: dict | None) -> None:
    rows.setdefault(name, [])
    if entry is not None:
        entry["seed"] = int(re.search(r"seed(\d+)", entry["run"]).group(1))
        rows[name].append(entry)


def ensure_benchmark(data: Path, target_style: str) -> None:
    """Generate the benchmark into `data` unless it is there; refuse one with another target style."""
    settings = data / "target" / "synth.json"
    if (data / "source" / "meta.json").is_file() and (data / "target" / "meta.json").is_file():
        found = json.loads(settings.read_text())["domain"] if settings.is_file() else None
        if found is not None and found != target_style:
            raise UserError(f"{data} holds the {found} benchmark, not {target_style}; "
                            f"pass --target-style {found} or another --data")
        return
    from uda_adapt.adapt.data.synth import write_benchmark

    write_benchmark(data, target_style=target_style)


def score(stage_dir: Path, tag: str, tune: str | None, network: str = "exported") -> dict | None:
    """The run's last evaluation (None when the run has not finished: --report-only); with `tune`,
    also `network` of its last.pt (a network the checkpoint stores, e.g. the EMA teacher) on tune."""
    if not (stage_dir / f"eval_{tag}.json").is_file() or not (stage_dir / "last.pt").is_file():
        return None
    result = json.loads((stage_dir / f"eval_{tag}.json").read_text())
    entry = {"miou": result["miou"], "per_class_iou": result["per_class_iou"], "run": str(stage_dir)}
    if tune:
        entry["tune_miou"] = scored_once(stage_dir, network, tune, stage_dir / f"tune_{tag}.json")["miou"]
    return entry


def score_stored(stage_dir: Path, tag: str, network: str, val_root: Path, tune: str | None) -> dict | None:
    """A network a finished run's last.pt stores but did not score itself (e.g. the student with the
    BatchNorm statistics training left), on the target val split and on tune."""
    if not (stage_dir / "last.pt").is_file() or not (stage_dir / f"eval_{tag}.json").is_file():   # not finished
        return None
    result = scored_once(stage_dir, network, str(val_root), stage_dir / f"val_{network}.json")
    entry = {"miou": result["miou"], "per_class_iou": result["per_class_iou"], "run": str(stage_dir)}
    if tune:
        entry["tune_miou"] = scored_once(stage_dir, network, tune, stage_dir / f"tune_{network}.json")["miou"]
    return entry


def scored_once(stage_dir: Path, network: str, data_root: str, json_path: Path) -> dict:
    """`network` of stage_dir/last.pt on data_root's val split, read from json_path when that is newer."""
    ckpt = stage_dir / "last.pt"
    if json_path.is_file() and json_path.stat().st_mtime >= ckpt.stat().st_mtime:
        return json.loads(json_path.read_text())   # scored already, same checkpoint
    from uda_adapt.adapt.eval_checkpoint import evaluate_checkpoint

    evaluate_checkpoint(ckpt, data_root, split="val", json_path=json_path, network=network)
    return json.loads(json_path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_deltas(rows: dict[str, list[dict]], row: str, base: str, key: str = "miou") -> list[tuple[int, float]]:
    """(seed, row - base) for every seed both rows have a `key` score for ("miou": val, "tune_miou"), in mIoU points."""
    base_by_seed = {e["seed"]: e[key] for e in rows.get(base, []) if e.get(key) is not None}
    return [(e["seed"], 100 * (e[key] - base_by_seed[e["seed"]])) for e in rows.get(row, [])
            if e["seed"] in base_by_seed and e.get(key) is not None]


def gap_fractions(rows: dict[str, list[dict]], row: str) -> list[tuple[int, float]]:
    """(seed, (row - source) / (oracle - source)) for every seed with all three."""
    source = {e["seed"]: e["miou"] for e in rows.get(SOURCE, [])}
    oracle = {e["seed"]: e["miou"] for e in rows.get(ORACLE, [])}
    return [(e["seed"], (e["miou"] - source[e["seed"]]) / (oracle[e["seed"]] - source[e["seed"]]))
            for e in rows.get(row, []) if e["seed"] in source and e["seed"] in oracle and oracle[e["seed"]] != source[e["seed"]]]


def gap_closed(rows: dict[str, list[dict]], row: str) -> float:
    """Mean over seeds of (row - source) / (oracle - source)."""
    fractions = [f for _, f in gap_fractions(rows, row)]
    return statistics.fmean(fractions) if fractions else float("nan")


def default_checks(rows: dict[str, list[dict]], row: str) -> list[str]:
    """Markdown table: the default row's gap closed, its margin over the floor (AdaBN) and over source
    only in each seed, and its paired delta over its own base with the count of seeds it is positive in."""
    lines = [f"The default ({row}), seed by seed (mIoU points):", "", "| check | mean | worst seed | per seed |", "|---|---|---|---|"]
    fractions = gap_fractions(rows, row)
    if fractions:
        lines.append(f"| gap closed | {100 * statistics.fmean(f for _, f in fractions):.0f} % | {100 * min(f for _, f in fractions):.0f} % | "
                     + ", ".join(f"s{seed}: {100 * f:.0f} %" for seed, f in fractions) + " |")
    for other in (ADABN, SOURCE, base_of(row, rows)):
        deltas = paired_deltas(rows, row, other) if other else []
        if deltas:
            values = [d for _, d in deltas]
            positive = sum(d > 0 for d in values)
            lines.append(f"| minus {other} | {statistics.fmean(values):+.2f} (positive in {positive} of {len(values)}) | {min(values):+.2f} | "
                         + ", ".join(f"s{seed}: {d:+.2f}" for seed, d in deltas) + " |")
    return lines


def write_report(out: Path, rows: dict[str, list[dict]], args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = dict(sorted(rows.items(), key=lambda item: report_rank(item[0])))
    command = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:])
    lines = [f"Target style {args.target_style}; seeds {args.seeds}; mIoU (%) on the target val split, last checkpoint of each run, mean +- std; "
             "gap closed = (row - source only) / (oracle - source only), mean over seeds.",
             f"Command: `{command}`", ""]
    header = "| method | mIoU | gap closed | per seed |" + (" tune mIoU |" if args.tune else "")
    lines += [header, "|---|---|---|---|" + ("---|" if args.tune else "")]
    for name, entries in rows.items():
        if not entries:
            continue   # not trained (yet) for these seeds
        m, s = mean_std([e["miou"] for e in entries])
        seeds = ", ".join(f"s{e['seed']}: {100 * e['miou']:.1f}" for e in entries)
        closed = gap_closed(rows, name)
        closed_cell = "-" if math.isnan(closed) or name in (SOURCE, ORACLE) or name.startswith("diagnostic") else f"{100 * closed:.0f} %"
        line = f"| {name} | {100 * m:.1f} +- {100 * s:.1f} | {closed_cell} | {seeds} |"
        if args.tune:
            tm, ts = mean_std([e.get("tune_miou") for e in entries])
            line += f" {100 * tm:.1f} +- {100 * ts:.1f} |" if not math.isnan(tm) else " - |"
        lines.append(line)
    lines += ["", "Paired per-seed delta of each \"BASE + WHAT\" row against BASE (mIoU points, same seed, same starting checkpoint):", "",
              "| comparison | mean +- std | per seed |" + (" tune: mean +- std |" if args.tune else ""), "|---|---|---|" + ("---|" if args.tune else "")]
    pairs = {name: base_of(name, rows) for name in rows if base_of(name, rows)}
    for row, base in pairs.items():
        deltas = paired_deltas(rows, row, base)
        if deltas:
            m, s = mean_std([d / 100 for _, d in deltas])
            line = f"| {row} - {base} | {100 * m:+.2f} +- {100 * s:.2f} | " + ", ".join(f"s{seed}: {d:+.2f}" for seed, d in deltas) + " |"
            if args.tune:
                tune = paired_deltas(rows, row, base, key="tune_miou")
                tm, ts = mean_std([d / 100 for _, d in tune])
                line += f" {100 * tm:+.2f} +- {100 * ts:.2f} |" if tune else " - |"
            lines.append(line)
    if args.default_row and rows.get(args.default_row):
        lines += ["", *default_checks(rows, args.default_row)]
    rows = {name: entries for name, entries in rows.items() if entries}
    if not rows:
        print(f"no finished runs in {out} for seeds {args.seeds}: nothing to report")
        return
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(18, 5), gridspec_kw={"width_ratios": [1.3, 3]})
    stats = [mean_std([e["miou"] for e in rows[n]]) for n in names]
    # Horizontal bars: row names are long ("mean teacher + CT (lambda_ct=0.1) (EMA teacher)").
    left.barh(range(len(names)), [100 * m for m, _ in stats], xerr=[100 * s for _, s in stats], capsize=4,
              color=plt.cm.tab10(np.arange(len(names))))
    left.set_yticks(range(len(names)), names, fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("target val mIoU (%)")
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
    tmp = path.with_suffix(f".{os.getpid()}.tmp.png")   # seeds run as parallel processes write the same report
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"ablation: error: {exc}", file=sys.stderr)
        sys.exit(1)
