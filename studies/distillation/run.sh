#!/usr/bin/env bash
# Inverse bridge-matching distillation of the shipped x4 super-resolution model (docs/results.md,
# "Distillation"): the teacher (tcvbm/weights/default-vsr) distilled into 1- and 2-step
# generators by configs/distill-vsr.yaml, each data-free (alpha = beta = 1) and with the
# real-data term (alpha 0.95, beta 0.931: beta/alpha 0.98); the teacher scored at 1, 2, 4 and
# 8 stochastic steps and every student at its own, on the dev set without carphone at
# 160x120 (x4 from 40x30), one window per video, twice (sampling seeds 0 and 1), each window
# sampled twice (the spread: does the output depend on the noise?); the 1-step data-free
# recipe also run three times longer (student-1-long), the 2-step one also at the lr of
# docs/training.md's conditional default, 1e-5 (student-2-lr1e-5: at 5e-5 the 2-step
# students ran away from the teacher on the selection clip after their first checkpoint);
# every student's checkpoints scored (the curves). Two runs at a time, one core each.
# From the repository root:
#   bash studies/distillation/run.sh [OUT]            (default runs/distill-vsr-study)
# Then: python studies/distillation/summarize.py OUT -o docs/results/distill-vsr-cpu
out=${1:-runs/distill-vsr-study}
source "$(dirname "$0")/common.sh"

student student-1 & student student-1-real "${real[@]}"; wait
student student-2 distill.student_steps=2 & student student-2-real distill.student_steps=2 "${real[@]}"; wait
student student-1-long train.max_steps=3600 train.checkpoint_every=600 &
student student-2-lr1e-5 distill.student_steps=2 optim.lr=1.0e-5; wait
score_teacher
score student-1 "$out/student-1" 1
score student-1-real "$out/student-1-real" 1; score student-2 "$out/student-2" 2
score student-2-real "$out/student-2-real" 2
score student-1-long "$out/student-1-long" 1; score student-2-lr1e-5 "$out/student-2-lr1e-5" 2
for name in student-1 student-1-real student-2 student-2-real student-1-long student-2-lr1e-5; do
  curve "$name"
done
