#!/usr/bin/env bash
# The CPU version of the interpolation study in docs/results.md ("Prior sweep" and "x4"):
# short runs (300 steps) of the study recipe (configs/interp-study-cpu.yaml) that differ in one bridge setting
# each, then `tcvbm eval` of every run on the held-out carphone clip, then one table per
# factor: this folder holds the x2 one, docs/results/sweep-x4-cpu/ the x4 one.
# Runs one job at a time on one thread, so the second core stays free. From the repository root:
#   bash docs/results/sweep-x2-cpu/run.sh [OUT_DIR [RUN ...]]
# OUT_DIR defaults to runs/sweep; RUN names pick runs from the list below (default: all). The
# tables cover every run of the list whose evaluation is in OUT_DIR, so runs started separately
# (for instance two at a time, one per core) end up in one table. On one core here: 96 min for
# the first eight runs with the evaluations at 1,2,5,20 steps; their eight evaluations at all
# six step counts took 26 min.
set -euo pipefail
out=${1:-runs/sweep}
shift || true
steps=300
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1

declare -A runs=(
  [x2-bm]="bridge.prior=brownian"
  [x2-ar1]=""
  [x2-ar1-strength2]="bridge.params.strength=2.0"
  [x2-ar1-strength32]="bridge.params.strength=32.0"
  [x2-ar1-rho0.5]="bridge.params.rho=0.5"
  [x2-ar1-zero-centre]="bridge.center=zero"
  [x2-bm-eps0.1]="bridge.prior=brownian bridge.eps=0.1"
  [x2-ar1-eps0.1]="bridge.eps=0.1"
  [x2-bm-min-snr]="bridge.prior=brownian loss.weighting=min-snr"
  [x2-ar1-min-snr]="loss.weighting=min-snr"
  [x4-bm]="task.params.factor=4 bridge.prior=brownian"
  [x4-ar1]="task.params.factor=4"
)
order=(x2-bm x2-ar1 x2-ar1-strength2 x2-ar1-strength32 x2-ar1-rho0.5 x2-ar1-zero-centre
       x2-bm-eps0.1 x2-ar1-eps0.1 x2-bm-min-snr x2-ar1-min-snr x4-bm x4-ar1)
selected=("$@")
(( ${#selected[@]} )) || selected=("${order[@]}")

for name in "${selected[@]}"; do
  [[ -v runs[$name] ]] || { echo "unknown run $name; known: ${order[*]}" >&2; exit 2; }
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
    [[ $name == $factor-* && -f $out/eval-$name/metrics.json ]] && args+=("$name=$out/eval-$name")
  done
  python tools/compare_evals.py "${args[@]}" -o "$out/table-$factor"
done
