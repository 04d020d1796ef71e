"""Time ``Bridge.sample`` and ``Bridge.posterior_step`` for each prior.

    python tools/bench_bridge.py                      # (8, 3, 16, 256, 256) float32 on CPU
    python tools/bench_bridge.py --device cuda --dtype bfloat16

Prints a table with the median time of each call and its ratio to the brownian prior
(A = 0, plain bridge matching), which runs through the same code.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tcvbm.bridges import PRIORS, Bridge


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=5, default=[8, 3, 16, 256, 256], metavar="B C N H W")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    b, c, n, h, w = args.shape
    g = torch.Generator(device=device).manual_seed(0)
    x0, x1, xt, noise = (torch.randn(b, c, n, h, w, generator=g, device=device, dtype=dtype)
                         for _ in range(4))
    t = torch.rand(b, generator=g, device=device) * 0.9 + 0.05
    s = t * 0.5
    rows = {}
    for prior in PRIORS:
        bridge = Bridge(n, prior=prior)
        rows[prior] = (
            _time(lambda: bridge.sample(x0, x1, t, noise=noise), args.repeats, device),
            _time(lambda: bridge.posterior_step(x0, xt, x1, t, s, noise=noise), args.repeats,
                  device),
        )
    print(f"shape {tuple(args.shape)} {args.dtype} on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'prior':<10} {'sample ms':>10} {'ratio':>6} {'posterior ms':>13} {'ratio':>6}")
    ref = rows["brownian"]
    for prior, (ts, tp) in rows.items():
        print(f"{prior:<10} {ts * 1e3:>10.1f} {ts / ref[0]:>6.2f} {tp * 1e3:>13.1f} "
              f"{tp / ref[1]:>6.2f}")


if __name__ == "__main__":
    main()
