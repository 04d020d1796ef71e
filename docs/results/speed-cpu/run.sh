#!/usr/bin/env bash
# The CPU version of the speed study in docs/results.md ("Speed"): backbone training throughput
# and TFLOP/s (unet/dit small and base, fp32 and bf16, torch.compile on the small ones; no MFU,
# a CPU has no data-sheet peak), what a real
# training run of the shipped recipe consumes against what its loader delivers (0, 1, 2
# workers), and the shipped models at 1080p. Run it on an otherwise idle machine: every figure
# is a timing. From the repository root:
#   bash docs/results/speed-cpu/run.sh [OUT_DIR]    (default runs/speed-cpu)
set -euo pipefail
out=${1:-runs/speed-cpu}
mkdir -p "$out"
export HF_HUB_OFFLINE=1

# Backbones: one 16-frame clip of 64x64 per step (the smallest clip of the GPU plan), one timed
# call after one warm-up (dit-base takes minutes per call here). dit-base runs with gradient
# checkpointing: without it, it was killed for memory on this 24 GiB machine (its time then
# includes the recomputed forward; the model FLOPs do not). torch.compile only for the small
# configs in bf16, the training regime (compiling the base ones costs more minutes).
models=(--device cpu --sizes 64 --batch 1 --frames 16 --warmup 1 --iters 1)
for dtype in fp32 bf16; do
  python -u tools/bench_models.py "${models[@]}" --configs unet-small,unet-base,dit-small \
      --dtype $dtype --json "$out/models-$dtype.json"
  python -u tools/bench_models.py "${models[@]}" --configs dit-base --grad-checkpointing \
      --dtype $dtype --json "$out/models-$dtype-dit-base-checkpointed.json"
done
python -u tools/bench_models.py "${models[@]}" --configs unet-small,dit-small --dtype bf16 --compile \
    --json "$out/models-bf16-compile.json"

# Training consumption against loader delivery: the shipped teacher's recipe, 40 steps, logged
# every 10 (perf/clips_per_s and perf/data_wait in metrics.jsonl; the first window includes
# start-up and is left out of the summary).
loader_workers=(0 1 2)
for workers in "${loader_workers[@]}"; do
  rm -rf "$out/train-workers$workers"
  tcvbm train configs/interp-flow-v1.yaml output_dir="$out/train-workers$workers" data.num_workers=$workers \
      train.max_steps=40 train.log_every=10 train.checkpoint_every=1000 eval.num_clips=0 train.progress=false
done
python "$(dirname "$0")/training_table.py" "$out" "${loader_workers[@]}" | tee "$out/training.md"

# The shipped models at 1080p (x2, frames cut into 512 px tiles), 1 step each.
python -u tools/bench_inference.py --synthetic --teacher-steps 1 --student-steps 1 \
    --sizes 1920x1080 --frames 4 | tee "$out/inference-1080p.md"
