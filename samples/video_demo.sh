#!/usr/bin/env bash
# Segment a generated target-style street video with the model the main job exported.
#
#   samples/video_demo.sh [MODEL] [OUT_DIR]
#
# MODEL    an exported model (default: runs/demo/export/model.onnx, written by
#          `uda-adapt demo --out runs/demo`); a .engine or a .pt checkpoint works too.
# OUT_DIR  where the clip, the overlay video and the still go (default: runs/demo/video).
#
# Environment: FRAMES (90), SIZE (256x512), FRAME (index of the still, 45),
#              STILL (path of the still, default OUT_DIR/overlay_frame.png),
#              CODEC (h264 | h265 | mp4v; default: h264 where OpenCV has GStreamer, else mp4v).
set -euo pipefail

MODEL=${1:-runs/demo/export/model.onnx}
OUT=${2:-runs/demo/video}
FRAMES=${FRAMES:-90}
SIZE=${SIZE:-256x512}
FRAME=${FRAME:-45}
STILL=${STILL:-$OUT/overlay_frame.png}

UDA=uda-adapt
if ! command -v "$UDA" >/dev/null 2>&1; then
    UDA="$(dirname "$0")/../.venv/bin/uda-adapt"
fi
if [ ! -f "$MODEL" ]; then
    echo "video_demo: model $MODEL does not exist; run the main job first: uda-adapt demo --out runs/demo" >&2
    exit 1
fi
mkdir -p "$OUT" "$(dirname "$STILL")"

# 1. A forward drive down a target-style (real-looking) street, from the built-in generator.
"$UDA" data video --out "$OUT/target.mp4" --domain real --frames "$FRAMES" --size "$SIZE" --seed 7

# 2. Every frame through the model: overlay video, one still frame and the run report.
"$UDA" run "$MODEL" "$OUT/target.mp4" "$OUT/overlay.mp4" \
    --buffered --headless --alpha 0.5 --save-frame "$FRAME" "$STILL" --json "$OUT/run.json" ${CODEC:+--codec "$CODEC"}

echo "video_demo: wrote $OUT/overlay.mp4 and $STILL"
