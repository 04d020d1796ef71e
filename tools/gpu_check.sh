#!/usr/bin/env bash
# The GPU check: what docs/benchmarks.md ("GPU check") has not measured yet, in one command
# that fits 10 minutes on one H100/H200. From the repository root:
#
#   bash tools/gpu_check.sh [--cpu] [OUT_DIR]   (default: $OUT if set, else runs/gpu-check)
#
# 1. preflight: python, torch, the GPU, and that the modules the steps import are there;
# 2. models-eager: tools/bench_models.py, unet-small/base and dit-small/base, bf16 autocast,
#    2 x 16 x 256 x 256 clips: forward and training-step time, TFLOP/s, MFU, peak memory;
# 3. inference: tools/bench_inference.py --synthetic, the shipped default-interp at 1 step,
#    bf16, output frames/s at 256x256 and 1920x1080;
# 4. loader: tools/gpu_check.py loader, dataset clips/s (16 x 256 x 256) at 8 and 16 workers,
#    from data/samples or, where that holds no clips, a clip written for the step;
# 5. models-compile: step 2 with torch.compile (last: compiling takes the longest).
#
# Every step runs under `timeout`, within its own limit and what is left of the whole budget
# (GPU_CHECK_BUDGET_S, default 540 s); a step that fails or runs out of time is recorded in
# OUT_DIR/steps.jsonl and the check goes on. It ends with tools/gpu_check.py summary: markdown
# tables, also in OUT_DIR/summary.md, with the loader set against each model's training
# clips/s. OUT_DIR gets at most 7 files: gpu_check.log (all output), steps.jsonl,
# models-eager.json, models-compile.json, loader.json, inference.md, summary.md.
#
# --cpu (or GPU_CHECK_CPU=1): the same steps at tiny sizes on the CPU (unet-tiny, dit-tiny,
# 4 x 32 x 32 clips, 0 and 1 loader workers, small frames), about a minute on 2 cores; it
# checks the script, not the machine. torch.compile is left out there (inductor takes minutes
# per model on a CPU). PYTHON names the interpreter (default python3); the repository is put
# on PYTHONPATH, so the package needs no install, only its dependencies. No network is used.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
cpu=${GPU_CHECK_CPU:-0}
positional=()
for arg in "$@"; do
  case $arg in
    --cpu) cpu=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) positional+=("$arg") ;;
  esac
done
if (( ${#positional[@]} > 1 )); then
  echo "gpu_check.sh: one OUT_DIR at most, got ${positional[*]}" >&2; exit 2
fi
out=${positional[0]:-${OUT:-runs/gpu-check}}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-540}
min_step=15  # seconds: a step given less is skipped, not started
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [[ $cpu == 1 ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  models=(--device cpu --dtype bf16 --threads "$OMP_NUM_THREADS" --configs unet-tiny,dit-tiny
          --sizes 32 --batch 1 --frames 4 --warmup 1 --iters 2 --peak-size 256)
  inference=(--device cpu --precision bf16 --sizes 64x64,192x108 --frames 2)
  loader=(--workers 0 1 --seconds 1 --entries 4 --clip-size 128x96 --clip-frames 24)
  compile_skip="CPU run: inductor compiles each model for minutes on a CPU"
else
  if ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: $python sees no CUDA device; --cpu runs the tiny CPU version" >&2
    exit 2
  fi
  models=(--device cuda --dtype bf16 --configs unet-small,unet-base,dit-small,dit-base
          --sizes 256 --batch 2 --frames 16 --warmup 2 --iters 5)
  inference=(--device cuda --precision bf16 --sizes 256x256,1920x1080 --frames 8)
  loader=(--workers 8 16 --seconds 3 --entries 64)
  compile_skip=""
fi

record() {  # record STEP STATUS RC SECONDS LIMIT [REASON]
  printf '{"step": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit_s": %s%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "${6:+, \"reason\": \"$6\"}" >>"$out/steps.jsonl"
}

step() {  # step NAME MAX_SECONDS [--stdout FILE] COMMAND...: run it, record how it ended
  local name=$1 max=$2 save=/dev/null
  shift 2
  if [[ $1 == --stdout ]]; then save=$2; shift 2; fi
  local left=$((budget - SECONDS))  # SECONDS: since the script started
  local limit=$((max < left ? max : left))
  if ((limit < min_step)); then
    echo "== $name: not started, ${left}s of the budget left"
    record "$name" out-of-time null 0 "$limit" "${left} s of the budget left"
    return
  fi
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" | tee "$save" || rc=$?
  local took=$((SECONDS - start)) status=ok
  if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
  echo "== $name: $status after ${took}s"
  record "$name" "$status" "$rc" "$took" "$limit"
}

check() {  # every step, then the summary
  echo "GPU check into $out, budget ${budget}s, $([[ $cpu == 1 ]] && echo CPU || echo CUDA)"
  if [[ $cpu != 1 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
      --format=csv || true
  fi
  step preflight 60 "$python" tools/gpu_check.py preflight
  step models-eager 120 "$python" -u tools/bench_models.py "${models[@]}" \
    --json "$out/models-eager.json"
  step inference 100 --stdout "$out/inference.md" "$python" -u tools/bench_inference.py \
    --synthetic --teacher-steps 1 "${inference[@]}"
  step loader 100 "$python" -u tools/gpu_check.py loader "${loader[@]}" --json "$out/loader.json"
  if [[ -n $compile_skip ]]; then
    echo "== models-compile: skipped, $compile_skip"
    record models-compile skipped null 0 0 "$compile_skip"
  else
    step models-compile 600 "$python" -u tools/bench_models.py "${models[@]}" --compile \
      --json "$out/models-compile.json"
  fi
  echo "== summary"
  "$python" tools/gpu_check.py summary "$out"
}

mkdir -p "$out"
out=$(cd "$out" && pwd)  # the steps run from the repository root
cd "$root"
: >"$out/steps.jsonl"
check 2>&1 | tee "$out/gpu_check.log"
# Exit status: 1 where a step failed, ran out of its time or found none left.
! grep -qE '"status": "(failed|timeout|out-of-time)"' "$out/steps.jsonl"
