#!/usr/bin/env bash
# TCVBM (ar1) against BM (brownian) for one more task at CPU scale (docs/results.md):
# the same config, seed and steps, only the prior differs; both evaluated on the held-out
# carphone clip with the task's baselines.
# From the repository root:
#   bash docs/results/tasks-cpu/run.sh vsr|i2v [OUT_DIR]   (default runs/tasks; 27 min on one core)
set -euo pipefail
task=$1
out=${2:-runs/tasks}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
case $task in
  vsr) eval_args=(--task vsr --scale 4) ;;
  i2v) eval_args=(--task i2v) ;;
  *) echo "task must be vsr or i2v, got $task" >&2; exit 2 ;;
esac
for prior in ar1 brownian; do
  tcvbm train "configs/$task-tiny.yaml" output_dir="$out/$task-$prior" bridge.prior=$prior train.progress=false
  tcvbm eval "${eval_args[@]}" --data data/samples/val --model "$out/$task-$prior" --steps 1,2,5,20 \
      --baselines --sampler posterior-mean --clips-per-video 8 -o "$out/eval-$task-$prior"
done
python tools/compare_evals.py "$task-ar1=$out/eval-$task-ar1" "$task-bm=$out/eval-$task-brownian" \
    -o "$out/table-$task"
