#!/usr/bin/env bash
# The main job (`make demo`): synthetic videos -> train a tiny IAI -> local mAP + submission zip ->
# tracking diagnosis (model IDs vs IoU-linked vs oracle IDs on the same detections) + its HTML report
# -> demo mp4.
# Usage: tools/run_demo.sh PYTHON OUTPUT_DIR
set -euo pipefail
PY="$1"
OUT="$2"
CONFIG=configs/synthetic/iai_tiny.yaml
DATA="${DETECTRON2_DATASETS:-datasets}/synthetic_vis"

if [ ! -f "$DATA/valid.json" ]; then
  echo "== generating the synthetic dataset in $DATA"
  "$PY" tools/make_synthetic_vis.py --out "$DATA" --videos 60 --val-videos 12 --frames 12 --seed 0
fi
echo "== a few training clips as images: $OUT/clips/"
"$PY" tools/visualize_clips.py --config-file "$CONFIG" --num-clips 3 --output "$OUT/clips"

echo "== training (resumes if $OUT already holds a checkpoint)"
"$PY" tools/train_net.py --config-file "$CONFIG" --resume OUTPUT_DIR "$OUT" DATASETS.TEST "()"

echo "== evaluation on synthetic_vis_val: local mAP, results.json, submission.zip"
"$PY" tools/train_net.py --config-file "$CONFIG" --eval-only MODEL.WEIGHTS "$OUT/model_final.pth" OUTPUT_DIR "$OUT" \
  2>&1 | tee "$OUT/eval.log"

echo "== tracking diagnosis: the same detections with the model's IDs, IoU-linked IDs, oracle IDs;"
echo "   report.html: filmstrips coloured by identity, ID switches marked, most AP lost to identity first"
"$PY" tools/analyze_tracking.py --config-file "$CONFIG" --output "$OUT/tracking_diagnosis" \
  MODEL.WEIGHTS "$OUT/model_final.pth"

VIDEO_DIR="$(ls -d "$DATA"/valid/JPEGImages/* | head -n 1)"
echo "== demo video of $VIDEO_DIR"
"$PY" tools/demo_video.py --config-file "$CONFIG" --input "$VIDEO_DIR" --output "$OUT/demo.mp4" \
  --confidence-threshold 0.3 --fps 4 --opts MODEL.WEIGHTS "$OUT/model_final.pth"

echo "== done. Outputs in $OUT:"
echo "   loss_curve.png, metrics.json, TensorBoard events, model_final.pth,"
echo "   inference/results.json, inference/submission.zip, tracking_diagnosis/diagnosis.md,"
echo "   tracking_diagnosis/report.html (open it in a browser),"
echo "   demo.mp4, clips/*.png, eval.log"
