"""The "training against its loader" table of the speed study, from the runs of run.sh.

    python docs/results/speed-cpu/training_table.py OUT_DIR WORKERS...

reads ``OUT_DIR/train-workers<W>/metrics.jsonl`` for every W and prints one markdown row
per run: the means of the loop's ``perf/*`` logs. The first logged window (steps 1-10, the
script logs every 10) holds the start-up and is left out, so the means are steady state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIRST_WINDOW = 10  # steps of the first logged window, left out


def steady_means(metrics: Path) -> dict[str, float]:
    """Means of clips/s, data wait and step time over the logged windows after the first."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "perf/clips_per_s" in r and r["step"] > FIRST_WINDOW]
    if not rows:
        raise ValueError(f"{metrics}: no perf/* logs after step {FIRST_WINDOW}")
    keys = ("perf/clips_per_s", "perf/data_wait", "perf/step_s")
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def table(out: Path, workers: list[int]) -> str:
    lines = ["| data.num_workers | clips/s consumed | data wait | seconds per step |",
             "|---|---|---|---|"]
    for w in workers:
        m = steady_means(out / f"train-workers{w}" / "metrics.jsonl")
        lines.append(f"| {w} | {m['perf/clips_per_s']:.2f} | {m['perf/data_wait']:.1%} | "
                     f"{m['perf/step_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    print(table(Path(argv[0]), [int(w) for w in argv[1:]]))


if __name__ == "__main__":
    main(sys.argv[1:])
