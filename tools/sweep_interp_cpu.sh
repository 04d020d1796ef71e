#!/usr/bin/env bash
# The CPU version of the interpolation study in docs/results.md ("Prior sweep" and "x4"):
# short runs (300 steps) of the study recipe (configs/interp-study-cpu.yaml) that differ in one bridge setting
# each, then `tcvbm eval` of every run on the held-out carphone clip, then one table.
# Runs one job at a time on one thread, so the second core stays free.
#   bash tools/sweep_interp_cpu.sh [OUT_DIR]   (default runs/sweep; on one core here: 96 min with
#   the evaluations at 1,2,5,20 steps; the eight evaluations at all six step counts took 26 min)
set -euo pipefail
out=${1:-runs/sweep}
steps=300
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1

declare -A runs=(
  [x2-bm]="bridge.prior=brownian"
  [x2-ar1]=""
  [x2-ar1-strength2]="bridge.params.strength=2.0"
  [x2-ar1-strength32]="bridge.params.strength=32.0"
  [x2-ar1-rho0.5]="bridge.params.rho=0.5"
  [x2-ar1-zero-centre]="bridge.center=zero"
  [x4-bm]="task.params.factor=4 bridge.prior=brownian"
  [x4-ar1]="task.params.factor=4"
)
order=(x2-bm x2-ar1 x2-ar1-strength2 x2-ar1-strength32 x2-ar1-rho0.5 x2-ar1-zero-centre x4-bm x4-ar1)

for name in "${order[@]}"; do
  # ${runs[$name]} is split on purpose: it holds zero or more key=value overrides.
  # shellcheck disable=SC2086
  tcvbm train configs/interp-study-cpu.yaml output_dir="$out/$name" train.max_steps=$steps \
      train.checkpoint_every=100 train.progress=false ${runs[$name]}
  factor=${name%%-*}
  tcvbm eval --task interp --factor "${factor#x}" --data data/samples/val --model "$out/$name" \
      --steps 1,2,5,10,20,50 --baselines --sampler posterior-mean --clips-per-video 8 -o "$out/eval-$name"
done

# Baselines differ between factors, so x2 and x4 get a table each.
for factor in x2 x4; do
  args=()
  for name in "${order[@]}"; do
    [[ $name == $factor-* ]] && args+=("$name=$out/eval-$name")
  done
  python tools/compare_evals.py "${args[@]}" -o "$out/table-$factor"
done
