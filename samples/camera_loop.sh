#!/usr/bin/env bash
# The camera loop end to end on the built-in benchmark: a generated target-style drive plays the
# camera, and no target label is ever read.
#
#   capture -> train -> export -> compare -> run --watch --collect -> capture the collected frames -> train again
#
#   samples/camera_loop.sh [OUT_DIR]          (default runs/camera_loop; QUICK=1 for a smoke run)
#
# On a real device replace the two clips with the camera (v4l2:///dev/video0, csi://0, rtsp://...).
set -euo pipefail

OUT=${1:-runs/camera_loop}
UDA=uda-adapt
if ! command -v "$UDA" >/dev/null 2>&1; then
    UDA="$(dirname "$0")/../.venv/bin/uda-adapt"
fi
if [ "${QUICK:-0}" = 1 ]; then
    FRAMES=60; SOURCE_SIZES=(--num-train 24 --num-val 8)
    TRAIN_SET=(--set source.iterations=30 --set correlation.iterations=10 --set self_train.mean_teacher.iterations=10
               --set logging.log_every=5 --set logging.num_overlays=1)
else
    FRAMES=300; SOURCE_SIZES=(); TRAIN_SET=()
fi
step() { echo; echo "\$ uda-adapt $*"; "$UDA" "$@"; }

# The labelled source (synthetic, game-like) and two drives of the target camera: today and a later day.
step data benchmark --out "$OUT/data" "${SOURCE_SIZES[@]}"
step data video --out "$OUT/camera_day1.mp4" --domain real --frames "$FRAMES" --size 256x512 --seed 3
step data video --out "$OUT/camera_day2.mp4" --domain real --frames "$FRAMES" --size 256x512 --seed 4

# 1. Capture an unlabelled target set from the camera (duplicates and blurred frames dropped).
step data capture "$OUT/camera_day1.mp4" --out "$OUT/target" --every 0.2 --size 128x256 --val-fraction 0.2 \
    --like "$OUT/data/source"

# 2. Adapt: the target has no labels, so each stage reports the label-free measure, and so does the end.
step train --out "$OUT/run" --set "data.source.root=$OUT/data/source" --set "data.target.root=$OUT/target" "${TRAIN_SET[@]}"
step eval "$OUT/run/self_train/last.pt" --data "$OUT/target" --no-labels --like "$OUT/data/source"

# 3. Export, and see what adaptation changed on the camera: source-only | adapted | where they disagree.
step export "$OUT/run/self_train/last.pt" --out "$OUT/export" --size 128x256 --data "$OUT/target" --force
step compare "$OUT/run/source/last.pt" "$OUT/export/model.onnx" "$OUT/camera_day1.mp4" "$OUT/compare/compare.mp4" \
    --like "$OUT/data/source"

# 4. On the device: watch the measure for drift and keep the frames the model is least sure of.
step run "$OUT/export/model.onnx" "$OUT/camera_day2.mp4" "$OUT/watch/overlay.mp4" --headless --buffered \
    --watch --collect "$OUT/collected" --collect-max 40 --json "$OUT/watch/run_report.json"

# 5. Add the collected frames to the target set (the same filters) and adapt again from the adapted model.
step data capture "$OUT/collected/train/images" --out "$OUT/target"
step train --out "$OUT/run2" --stage self_train --init "$OUT/run/self_train/last.pt" \
    --set "data.source.root=$OUT/data/source" --set "data.target.root=$OUT/target" "${TRAIN_SET[@]}"
step compare "$OUT/run/self_train/last.pt" "$OUT/run2/self_train/last.pt" "$OUT/camera_day2.mp4" "$OUT/compare2/compare.mp4" \
    --size 128x256 --like "$OUT/data/source"

echo
echo "camera_loop: target set $OUT/target, runs $OUT/run and $OUT/run2, compare $OUT/compare and $OUT/compare2,"
echo "             drift report $OUT/watch/run_report.json, collected frames $OUT/collected"
