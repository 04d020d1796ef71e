#!/usr/bin/env bash
# TCVBM against bridge matching for image-to-video, with seeds (docs/results.md, "Seeded
# comparison"): configs/i2v-real.yaml cut to 300 steps, identical but for the prior (ar1 rho 0.5
# strength 8, or brownian); scored at 1, 2, 4, 10 and 50 stochastic steps on the dev set
# without carphone at 160x120, one window per video (what the CPU budget left), each
# sampled 3 times: fidelity of the first sample, and the spread of the three (diversity:
# the mean is not a sample). The posterior-mean sampler
# is left out: it returns the mean, whose spread is nil by construction.
#   bash studies/tcvbm-vs-bm/i2v.sh [OUT [SEED ...]]          (default runs/study-i2v, seeds 0 1)
# Then: python studies/tcvbm-vs-bm/summarize.py OUT -o docs/results/seeds-i2v-cpu
CLIPS_PER_VIDEO=1
source "$(dirname "$0")/common.sh"
out=${1:-runs/study-i2v}
shift || true
compare_priors "$out" configs/i2v-real.yaml "--task i2v --samples 3" stochastic "${*:-0 1}" -- \
    train.max_steps=300 optim.warmup_steps=100 train.checkpoint_every=150
