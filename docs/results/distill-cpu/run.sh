#!/usr/bin/env bash
# Distillation of the shipped interpolation teacher into 1, 2 and 4 steps at CPU scale
# (docs/results.md, "Distillation"): the 2- and 4-step students are the shipped student's
# recipe (configs/distill-interp-v1.yaml) with distill.student_steps changed; the 1-step
# student is the shipped one. All are scored with the teacher at 1, 10 and 50 steps and the
# baselines on the held-out carphone clip at its own 176x144. From the repository root:
#   bash docs/results/distill-cpu/run.sh [TEACHER_RUN] [STUDENT_1_RUN] [OUT_DIR]
#   (defaults runs/interp-flow-v1, runs/distill-interp-v1, runs/distill-steps)
set -euo pipefail
teacher=${1:-runs/interp-flow-v1}
student1=${2:-runs/distill-interp-v1}
out=${3:-runs/distill-steps}
export HF_HUB_OFFLINE=1
eval_args=(--task interp --data data/samples/val --size 176x144 --clips-per-video 8)
for k in 2 4; do
  tcvbm distill configs/distill-interp-v1.yaml teacher="$teacher" distill.student_steps=$k \
      output_dir="$out/student-$k" train.progress=false
done
tcvbm eval "${eval_args[@]}" --model "$teacher" --steps 1,10,50 --baselines -o "$out/eval-teacher"
tcvbm eval "${eval_args[@]}" --model "$student1" -o "$out/eval-student-1"
for k in 2 4; do
  tcvbm eval "${eval_args[@]}" --model "$out/student-$k" -o "$out/eval-student-$k"
done
python tools/compare_evals.py "teacher=$out/eval-teacher" "student-1=$out/eval-student-1" \
    "student-2=$out/eval-student-2" "student-4=$out/eval-student-4" -o "$out/table"
