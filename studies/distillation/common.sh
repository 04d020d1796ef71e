# Shared by the distillation study scripts of this folder (sourced, not run): one student run,
# its scoring with both sampling seeds, and the scores of its checkpoints (the curve).
# Before sourcing, set `out` (the study's folder). The test clips (the dev set without
# carphone; carphone is the selection clip) and the threads setting come from the seeded study.
source "$(dirname "${BASH_SOURCE[0]}")/../tcvbm-vs-bm/common.sh"
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

# score_teacher: the teacher at 1, 2, 4 and 8 steps on the test clips and on carphone
score_teacher() {
  score teacher "$teacher" 1,2,4,8
  [[ -f $out/select-teacher/metrics.json ]] || tcvbm eval --task vsr --model "$teacher" \
      --data data/samples/val/carphone.mp4 --steps 1,2,4,8 --sampler stochastic \
      --size 160x120 --clips-per-video 4 --baselines -o "$out/select-teacher"
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
