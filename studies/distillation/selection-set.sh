#!/usr/bin/env bash
# Can a selection set of other footage choose the 2-step student's checkpoint without the test
# clips? real-term.sh's 2-step recipe (lr 1e-5, 10 fake updates per generator update, the
# real-data term at alpha 0.90, 120 generator updates, a checkpoint every 20), training seeds
# 0 and 1 side by side (one core each). Every checkpoint and the teacher are scored on the
# test clips (as in real-term.sh) and on data/media/select: 7 videos from 6 packages that are
# neither a training source nor the dev set (game cut-scenes in cinepak and msvideo1, a 3D
# render, a ray-traced scene, a 2D cartoon, a hand-drawn animation, an animated illustration;
# `python tools/fetch_media.py --only select`). The rule, fixed before any of these scores
# was seen: each run ships the checkpoint with the lowest mean-of-videos ST-LPIPS on the
# selection set. From the root:
#   bash studies/distillation/selection-set.sh [OUT]      (default runs/distill-vsr-select)
# Then: python studies/distillation/summarize.py OUT -o docs/results/distill-vsr-select-cpu
out=${1:-runs/distill-vsr-select}
source "$(dirname "$0")/common.sh"
selection=data/media/select
two_step=(distill.student_steps=2 optim.lr=1.0e-5 distill.alpha=0.90 distill.beta=0.882
          distill.fake_per_generator=10 train.max_steps=1320 train.checkpoint_every=220)

# on_selection_set NAME MODEL STEPS: sampling seed 0, 2 windows per video
on_selection_set() {
  [[ -f $out/selset-$1/metrics.json ]] || tcvbm eval --task vsr --data "$selection" \
      --model "$2" --steps "$3" --sampler stochastic --size 160x120 --clips-per-video 2 \
      -o "$out/selset-$1"
}

student student-2-seed0 "${two_step[@]}" seed=0 & first=$!
student student-2-seed1 "${two_step[@]}" seed=1
wait "$first"
score_teacher
on_selection_set teacher "$teacher" 1,2,4,8
curve student-2-seed0 & first=$!
curve student-2-seed1
wait "$first"
for name in student-2-seed0 student-2-seed1; do
  for model in "$out/model-$name"-*; do
    on_selection_set "${model##*/model-}" "$model" 2
  done
done
# each run's pick, scored as the final models of real-term.sh are (both sampling seeds)
for name in student-2-seed0 student-2-seed1; do
  pick=$(python studies/distillation/summarize.py "$out" --pick "$name")
  score "$name-$pick" "$out/model-$name-$pick" 2
done
