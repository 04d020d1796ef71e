"""Benchmark the backbones: parameters, forward and forward+backward time, peak memory,
FLOPs (torch.utils.flop_counter), achieved TFLOP/s, MFU against the device's data-sheet
peak and the fraction of a matmul peak measured on the same device in the same dtype.

    python tools/bench_models.py --device cuda --dtype bf16 --compile --configs dit-small,dit-base
    python tools/bench_models.py --device cpu --configs unet-tiny,dit-tiny --sizes 64 --batch 1

Forward+backward is one training step without the optimizer: loss = mean squared error of
the x0 prediction, backward into every parameter. ``--dtype bf16`` means bf16 autocast with
float32 weights (the training regime), not a bf16 cast of the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tcvbm.models import create


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call after ``warmup`` calls (the median ignores stray stalls)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model_flops(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Parameters of config ``name``, and FLOPs of its forward and of its training step (MSE,
    backward) on clips ``shape``.

    Counted on the meta device, where tensors carry shapes only: it costs no memory or time,
    does not depend on the device's kernels (torch's counter knows only the CUDA attention
    kernels; on meta, attention runs as matmuls it counts), and it leaves out what gradient
    checkpointing recomputes. These are model FLOPs, the numerator MFU is defined with.
    """
    with torch.device("meta"):
        model = create(name)
        x_t, x1, target = (torch.empty(shape) for _ in range(3))
        t = torch.empty(shape[0])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x_t, t, cond=x1)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        (model(x_t, t, cond=x1).float() - target).square().mean().backward()
    return sum(p.numel() for p in model.parameters()), forward, counter.get_total_flops()


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int, iters: int) -> float:
    """Best measured square-matmul throughput on this very device: a yardstick beside MFU.

    Unlike the data-sheet peak it exists for every device, CPUs included (whose attainable
    rate depends on cores, vector units and the BLAS in use), and it shows what a GPU with
    lowered clocks or a shared CPU can actually do.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(3):
        best = min(best, timed(lambda: a @ b, device, warmup=3, iters=iters))
    return 2 * size**3 / best / 1e12


# Dense (no sparsity) data-sheet peaks in TFLOP/s, bf16 and TF32, of the GPUs this is run on.
# MFU is conventionally taken against these (model FLOPs / time / peak); first match wins.
DATASHEET_TFLOPS = (
    (("H100", "PCIe"), {"bf16": 756.5, "fp32": 378.0}),
    (("H100",), {"bf16": 989.4, "fp32": 494.7}),  # SXM
    (("H200",), {"bf16": 989.4, "fp32": 494.7}),
    (("A100",), {"bf16": 312.0, "fp32": 156.0}),
)


def datasheet_tflops(device: torch.device, dtype: str) -> float | None:
    """The data-sheet peak of ``device`` in ``dtype`` (fp32 meaning TF32 on CUDA), if known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for words, peaks in DATASHEET_TFLOPS:
        if all(w in name for w in words):
            return peaks[dtype]
    return None


def to_channels_last(model: nn.Module) -> None:
    """Channels-last convolution weights (cuDNN then keeps activations channels-last too);
    ``Module.to(memory_format=...)`` cannot be used since it refuses the 5D Conv3d weights."""
    formats = {nn.Conv2d: torch.channels_last, nn.Conv3d: torch.channels_last_3d}
    for module in model.modules():
        if type(module) in formats:
            module.weight.data = module.weight.data.contiguous(memory_format=formats[type(module)])


def bench_one(name: str, size: int, args: argparse.Namespace, device: torch.device,
              matmul: float, sheet: float | None) -> dict:
    shape = (args.batch, 3, args.frames, size, size)
    params, fwd_flops, train_flops = model_flops(name, shape)
    row = {"config": name, "size": size, "batch": args.batch, "frames": args.frames,
           "params_M": params / 1e6, "device": str(device), "dtype": args.dtype,
           "compile": args.compile, "channels_last": args.channels_last,
           "fwd_gflop": fwd_flops / 1e9, "train_gflop": train_flops / 1e9}
    if args.flops_only:
        return row
    torch.manual_seed(0)
    model = create(name).to(device)
    if args.channels_last:
        to_channels_last(model)
    if args.grad_checkpointing:
        model.enable_gradient_checkpointing()
    run = torch.compile(model) if args.compile else model
    x_t, x1, target = (torch.randn(shape, device=device).clamp(-1, 1) for _ in range(3))
    t = torch.rand(args.batch, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def forward() -> torch.Tensor:
        with torch.no_grad(), autocast:
            return run(x_t, t, cond=x1)

    def train_step() -> None:
        with autocast:
            loss = (run(x_t, t, cond=x1).float() - target).square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row["fwd_s"] = timed(forward, device, args.warmup, args.iters)
        row["train_s"] = timed(train_step, device, args.warmup, args.iters)
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
        return row
    row["peak_mem_GB"] = (torch.cuda.max_memory_allocated(device) / 1e9
                          if device.type == "cuda" else None)
    row["fwd_tflops"] = fwd_flops / row["fwd_s"] / 1e12
    row["train_tflops"] = train_flops / row["train_s"] / 1e12
    row["clips_per_s"] = args.batch / row["train_s"]
    row["train_vs_matmul"] = row["train_tflops"] / matmul
    if sheet:
        row["fwd_mfu"] = row["fwd_tflops"] / sheet
        row["train_mfu"] = row["train_tflops"] / sheet
    return row


def fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = (f"{'config':<11}{'size':>5}{'params M':>10}{'fwd ms':>10}{'fwd+bwd ms':>12}{'clips/s':>9}"
          f"{'GFLOP f+b':>11}{'TFLOP/s':>9}{'MFU %':>7}{'/matmul %':>10}{'peak GB':>9}")


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['config']:<11}{r['size']:>5}{r['params_M']:>10.2f}  {r['error']}"
    if "train_s" not in r:  # --flops-only
        return (f"{r['config']:<11}{r['size']:>5}{r['params_M']:>10.2f}{'':>31}"
                f"{r['train_gflop']:>11.1f}")
    return (f"{r['config']:<11}{r['size']:>5}{r['params_M']:>10.2f}{1e3 * r['fwd_s']:>10.1f}"
            f"{1e3 * r['train_s']:>12.1f}{r['clips_per_s']:>9.2f}{r['train_gflop']:>11.1f}"
            f"{r['train_tflops']:>9.3f}"
            f"{fmt(100 * r['train_mfu'] if 'train_mfu' in r else None, '.1f'):>7}"
            f"{100 * r['train_vs_matmul']:>10.1f}{fmt(r['peak_mem_GB'], '.2f'):>9}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="unet-small,unet-base,dit-small,dit-base",
                        help="comma-separated names or YAML paths accepted by tcvbm.models.create")
    parser.add_argument("--sizes", default="64,128,256",
                        help="comma-separated square frame sizes H = W")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels-last weights (convolutions)")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int,
                        help="CPU threads (torch.set_num_threads); default: torch's")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--peak-size", type=int,
                        help="matmul size of the peak measurement "
                             "(default: 8192 on CUDA, 2048 on CPU)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak in --dtype for MFU "
                             "(default: data sheet of known GPUs)")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # Peaks in the dtype the model's matmuls run in (bf16 under autocast; fp32, which CUDA
    # runs as TF32 here, otherwise).
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cuda = device.type == "cuda"
    peak_size = args.peak_size or (8192 if cuda else 2048)
    matmul = 0.0 if args.flops_only else matmul_peak_tflops(device, dtype, peak_size,
                                                             iters=20 if cuda else 3)
    sheet = args.peak_tflops or datasheet_tflops(device, args.dtype)
    where = (torch.cuda.get_device_name(device) if cuda
             else f"CPU, {torch.get_num_threads()} threads")
    if not args.flops_only:
        print(f"measured {args.dtype} matmul ({peak_size}^3): {matmul:.3f} TFLOP/s on {where}; "
              f"peak for MFU: {f'{sheet} TFLOP/s' if sheet else 'unknown (give --peak-tflops)'}")
    print(HEADER)
    rows: list[dict] = []
    for name in args.configs.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(bench_one(name, size, args, device, matmul, sheet))
            print(format_row(rows[-1]), flush=True)
            if args.json:  # after every row: a later row killed for memory loses only itself
                args.json.write_text(json.dumps(
                    {"matmul_tflops": matmul, "peak_size": peak_size, "peak_tflops": sheet,
                     "device": where, "torch": torch.__version__,
                     "grad_checkpointing": args.grad_checkpointing,
                     "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
