"""Cost of the one per-epoch collective of a data-parallel trial (``distributed.combine_rows``): the
per-sample outcome (loss, correct, mixed, partner, weight, touched) and the epoch sums of N samples,
merged across 2 local gloo ranks (CPU). Prints one JSON line per N; median of ``--repeats`` calls after
one warm-up.

    python bench/distributed_combine.py [--sizes 20000 50000 1281167] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mixtrain_trainer import distributed as D


def _measure(sizes: list[int], repeats: int) -> list[dict]:
    out = []
    r, w = D.rank(), D.world_size()
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        mine = torch.arange(n) % w == r  # each rank trained half the samples
        rows = {
            "loss": torch.where(mine, torch.rand(n, generator=g), torch.tensor(float("nan"))),
            "correct": torch.rand(n, generator=g) < 0.5,
            "mixed": torch.rand(n, generator=g) < 0.6,
            "partner": torch.randint(-1, n, (n,), generator=g),
            "weight": torch.rand(n, generator=g),
        }
        sums = {"sums": torch.rand(4, dtype=torch.float64, generator=g)}
        times = []
        for i in range(repeats + 1):
            D.all_reduce_sum(torch.zeros(1))  # line the ranks up
            t0 = time.perf_counter()
            D.combine_rows(rows, mine, sums, {"n_inputs": n // w, "n_forward": 0})
            if i:
                times.append(time.perf_counter() - t0)
        out.append({"n": n, "ranks": w, "median_ms": 1000 * statistics.median(times),
                    "min_ms": 1000 * min(times), "bytes_reduced": 8 * (6 * n + 6)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20000, 50000, 1281167])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    for row in D.spawn(_measure, 2, args.sizes, args.repeats, threads=1):
        print(json.dumps({**row, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
