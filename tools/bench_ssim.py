"""SSIM + MS-SSIM of one 1080p frame pair, one thread: torchmetrics' own functions against
``tcvbm.metrics`` (separable window, one frame at a time). Run each in its own process, so
that the peak resident memory printed is that implementation's alone:

    python tools/bench_ssim.py tcvbm
    python tools/bench_ssim.py torchmetrics
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("implementation", choices=["tcvbm", "torchmetrics"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 1, 1080, 1920, generator=g) * 2 - 1
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    started = time.perf_counter()
    if args.implementation == "torchmetrics":
        from torchmetrics.functional.image import (
            multiscale_structural_similarity_index_measure,
            structural_similarity_index_measure,
        )

        def unit(x: torch.Tensor) -> torch.Tensor:
            return (x[:, :, 0].double() + 1) / 2
        values = (structural_similarity_index_measure(unit(a), unit(b), data_range=1.0),
                  multiscale_structural_similarity_index_measure(unit(a), unit(b), data_range=1.0))
    else:
        from tcvbm.metrics import ms_ssim, ssim

        values = (ssim(a, b), ms_ssim(a, b))
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    print(f"{args.implementation}: SSIM {float(values[0]):.6f}, MS-SSIM {float(values[1]):.6f}, "
          f"{seconds:.1f} s, {peak_gb:.2f} GB peak RSS")


if __name__ == "__main__":
    main()
