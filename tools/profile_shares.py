"""Where the time of ``tcvbm interpolate`` goes: busy samples of a py-spy profile by stage.

    py-spy record -f raw -r 100 -o prof.txt -- tcvbm interpolate CLIP -o out.mp4
    python tools/profile_shares.py prof.txt          # a markdown table of shares

py-spy's raw format is one line per distinct stack, ``frame;frame;...;frame COUNT``, over all
threads (decoding, the model and encoding run in their own). Samples whose innermost frame
waits (a queue, a lock, a sleep) are idle threads and left out; every other sample is given
to the first stage in ``STAGES`` that one of its frames names, so a sample inside the UNet
counts for the UNet, not for the sampler that called it. Shares, not seconds: on a shared
machine they hold better than times do.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IDLE = ("wait (threading", "get (queue", "_wait_for_tstate_lock", "select", "sleep", "acquire")
# (stage, substrings of frame names), first match wins: inner stages before their callers
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("network (UNet)", ("predict (tcvbm/models",)),
    ("fusion head", ("fuse_candidates",)),
    ("model forward, outside the UNet and head", ("model_fn.<locals>.fn",)),
    ("sampler step", ("_walk (tcvbm/samplers",)),
    ("DIS flow", ("dis_flow",)),
    ("candidates and context", ("_flow (tcvbm/tasks", "prepare_at")),
    ("encoding", ("writer.py", "encode")),
    ("decoding", ("pyav_decoder", "decode")),
    ("scene cuts", ("scenes.py",)),
    ("pixel conversion", ("to_pixels", "from_pixels")),
    ("windows, tiles, blending", ("windows.py", "model_fns.py")),
    ("model load", ("load_bundle", "load_pretrained")),
    ("imports and start-up", ("<module>", "importlib")),
]


def stage_of(frames: list[str]) -> str:
    for stage, marks in STAGES:
        if any(mark in frame for frame in frames for mark in marks):
            return stage
    return "other"


def shares(text: str) -> tuple[Counter, int]:
    """(busy samples per stage, busy samples in all) of a py-spy raw profile."""
    counts: Counter = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(mark in frames[-1] for mark in IDLE):
            continue
        counts[stage_of(frames)] += int(count)
    return counts, sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    args = parser.parse_args(argv)
    counts, total = shares(args.profile.read_text())
    if not total:
        raise SystemExit(f"{args.profile}: no busy samples (is it py-spy's raw format?)")
    print(f"{total} busy samples\n\n| stage | share |\n|---|---|")
    for stage, count in counts.most_common():
        print(f"| {stage} | {100 * count / total:.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
