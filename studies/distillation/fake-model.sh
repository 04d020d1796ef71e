#!/usr/bin/env bash
# Does a faster fake model make the 1-step student hold on the held-out clips? The study of
# run.sh found its students drifting from the teacher's samples as training went on (spread
# growing past the teacher's, held-out ST-LPIPS rising), as expected when the fake model,
# trained at the generator's lr for 5 updates per generator update, lags behind the
# generator. 1-step runs with the real-data term (run.sh's better 1-step recipe,
# student-1-real), one change each: the fake model's lr 5x the generator's
# (student-1-fakelr, and the same 3x longer: student-1-fakelr-long, 600 generator updates),
# and 10 fake updates per generator update instead of 5 (student-1-fake10, run long enough
# for the same 200 generator updates), that one also with training seed 1 (what another
# seed changes: student-1-fake10-seed1, final model only). Scored as in run.sh: both
# sampling seeds on the test clips, every checkpoint on the test clips and on carphone (the
# selection clip). Two or three jobs at a time, one core each. From the repository root:
#   bash studies/distillation/fake-model.sh [OUT]      (default runs/distill-vsr-fake)
# Then: python studies/distillation/summarize.py OUT -o docs/results/distill-vsr-fake-cpu
out=${1:-runs/distill-vsr-fake}
source "$(dirname "$0")/common.sh"

student student-1-fakelr-long "${real[@]}" distill.fake_lr=2.5e-4 train.max_steps=3600 \
    train.checkpoint_every=600 &
student student-1-fakelr "${real[@]}" distill.fake_lr=2.5e-4 &
student student-1-fake10 "${real[@]}" distill.fake_per_generator=10 train.max_steps=2200 \
    train.checkpoint_every=440; wait
score_teacher & score student-1-fakelr "$out/student-1-fakelr" 1; wait
score student-1-fake10 "$out/student-1-fake10" 1 & curve student-1-fakelr; wait
curve student-1-fake10 & score student-1-fakelr-long "$out/student-1-fakelr-long" 1; wait
student student-1-fake10-seed1 "${real[@]}" distill.fake_per_generator=10 train.max_steps=2200 \
    train.checkpoint_every=440 seed=1 &
curve student-1-fakelr-long; wait
score student-1-fake10-seed1 "$out/student-1-fake10-seed1" 1
