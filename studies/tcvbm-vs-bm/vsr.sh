#!/usr/bin/env bash
# TCVBM against bridge matching for x4 video super-resolution, with seeds (docs/results.md,
# "Seeded comparison"): configs/vsr-x4.yaml (the shipped default-vsr's recipe: its data mix,
# 4x4-patch UNet, eps 0.05, t = 1 three times in four, log-MSE) cut to 300 steps, identical
# but for the prior (ar1 rho 0.5 strength 8, or brownian); scored at 1, 2, 4, 10 and 50 steps
# with the posterior-mean sampler (the one it is trained for) on the dev set without
# carphone at 160x120 from 40x30, one window per video (what the CPU budget left).
#   bash studies/tcvbm-vs-bm/vsr.sh [OUT [SEED ...]]          (default runs/study-vsr, seeds 0 1)
# Then: python studies/tcvbm-vs-bm/summarize.py OUT -o docs/results/seeds-vsr-cpu
CLIPS_PER_VIDEO=1
source "$(dirname "$0")/common.sh"
out=${1:-runs/study-vsr}
shift || true
compare_priors "$out" configs/vsr-x4.yaml "--task vsr" posterior-mean "${*:-0 1}" -- \
    train.max_steps=300 optim.warmup_steps=100 train.checkpoint_every=150 eval.every=0
