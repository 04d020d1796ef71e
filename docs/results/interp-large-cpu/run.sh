#!/usr/bin/env bash
# The shipped default-interp fine-tuned at larger frames and motions (configs/interp-large.yaml),
# scored beside the shipped model on the dev set at 320x240 and at each video's own size, x2,
# 1 step, with its source, DIS flow, blending and repetition in the same runs
# (docs/models.md, "Fine-tuning at larger frames"). One job per core; from the root:
#   bash docs/results/interp-large-cpu/run.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/interp-large-cpu}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
python tools/fetch_sample_clips.py
python tools/fetch_media.py
tcvbm train configs/interp-large.yaml output_dir="$out/train" train.progress=false
for size in 320x240 native; do
  for m in large shipped; do
    model="$out/train/model"
    [[ $m == shipped ]] && model=default-interp
    tcvbm eval --task interp --data data/media/dev --model "$model" --factor 2 --steps 1 \
        --baselines --size "$size" --clips-per-video 2 -o "$out/eval-$m-${size%x*}"
  done
done
for size in 320 native; do
  python tools/compare_evals.py fine-tuned="$out/eval-large-$size" shipped="$out/eval-shipped-$size" \
      -o "docs/results/interp-large-cpu/$size"
done
