#!/usr/bin/env bash
# TCVBM against bridge matching for x2 frame interpolation on the shipped recipe, with seeds
# (docs/results.md, "Seeded comparison"). Both priors train configs/interp-fusion.yaml (its
# data mix, fusion UNet, eps 0.05, t = 1 three times in four, log-MSE) cut to 500 steps,
# identical but for the prior: ar1 (rho 0.5, strength 8: the recipe's own, chosen on
# carphone) and brownian (plain BM). Each run is scored at 1, 2, 4, 10 and 50 steps with the
# posterior-mean and stochastic samplers on the dev set without carphone
# (studies/tcvbm-vs-bm/common.sh), 160x120, 2 windows per video.
# From the repository root (python tools/fetch_media.py && python tools/fetch_sample_clips.py):
#   bash studies/tcvbm-vs-bm/interp.sh [OUT [SEED ...]]       (default runs/study-interp, seeds 0 1 2)
# One training at a time, on one thread: start two seeds in two shells to use two cores.
# Then: python studies/tcvbm-vs-bm/summarize.py OUT -o docs/results/seeds-interp-cpu
source "$(dirname "$0")/common.sh"
out=${1:-runs/study-interp}
shift || true
compare_priors "$out" configs/interp-fusion.yaml "--task interp" "posterior-mean stochastic" \
    "${*:-0 1 2}" -- train.max_steps=500 optim.warmup_steps=100 train.checkpoint_every=250 eval.every=0
