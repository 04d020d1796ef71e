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
# the test clips (the dev set without carphone, the selection clip) and the threads setting
source "$(dirname "$0")/../tcvbm-vs-bm/common.sh"
out=${1:-runs/distill-vsr-study}
teacher=default-vsr
real=(distill.alpha=0.95 distill.beta=0.931)
clips=$(test_clips "$out")

# student NAME OVERRIDES...: distil into OUT/NAME (resuming a run that stopped)
student() {
  local name=$1
  shift
  tcvbm distill configs/distill-vsr.yaml teacher="$teacher" output_dir="$out/$name" \
      train.progress=false resume=latest "$@"
}

# score NAME MODEL STEPS: both sampling seeds; an evaluation already written is kept
score() {
  local name=$1 model=$2 steps=$3 seed
  for seed in 0 1; do
    [[ -f $out/eval-$name-s$seed/metrics.json ]] && continue
    tcvbm eval --task vsr --data "$clips" --model "$model" --steps "$steps" \
        --sampler stochastic --size 160x120 --clips-per-video 1 --samples 2 --seed "$seed" \
        --baselines -o "$out/eval-$name-s$seed"
  done
}

# curve NAME: each checkpoint of OUT/NAME exported and scored at its steps, sampling seed 0,
# on the test clips and on carphone (the selection clip: the checkpoint reported as chosen
# is the one with the lowest ST-LPIPS there, never one chosen on the test clips)
curve() {
  local name=$1 ckpt step steps
  steps=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'])" \
      "$out/$name/model/tcvbm.json")
  for ckpt in "$out/$name"/checkpoints/checkpoint-*; do
    step=${ckpt##*-}
    [[ -f $out/select-$name-$step/metrics.json ]] && continue
    python tools/export_checkpoint.py "$ckpt" -o "$out/model-$name-$step"
    tcvbm eval --task vsr --data "$clips" --model "$out/model-$name-$step" \
        --steps "$steps" --sampler stochastic --size 160x120 --clips-per-video 1 --samples 2 \
        -o "$out/curve-$name-$step"
    tcvbm eval --task vsr --data data/samples/val/carphone.mp4 --model "$out/model-$name-$step" \
        --steps "$steps" --sampler stochastic --size 160x120 --clips-per-video 4 \
        -o "$out/select-$name-$step"
  done
}

student student-1 & student student-1-real "${real[@]}"; wait
student student-2 distill.student_steps=2 & student student-2-real distill.student_steps=2 "${real[@]}"; wait
student student-1-long train.max_steps=3600 train.checkpoint_every=600 &
student student-2-lr1e-5 distill.student_steps=2 optim.lr=1.0e-5; wait
score teacher "$teacher" 1,2,4,8
[[ -f $out/select-teacher/metrics.json ]] || tcvbm eval --task vsr --model "$teacher" \
    --data data/samples/val/carphone.mp4 --steps 1,2,4,8 --sampler stochastic --size 160x120 \
    --clips-per-video 4 --baselines -o "$out/select-teacher"
score student-1 "$out/student-1" 1
score student-1-real "$out/student-1-real" 1; score student-2 "$out/student-2" 2
score student-2-real "$out/student-2-real" 2
score student-1-long "$out/student-1-long" 1; score student-2-lr1e-5 "$out/student-2-lr1e-5" 2
for name in student-1 student-1-real student-2 student-2-real student-1-long student-2-lr1e-5; do
  curve "$name"
done
