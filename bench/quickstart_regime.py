"""Summarise bench/quickstart_regime.sh: per candidate schedule, top-1 and inputs of each variant over the
seeds, and (where budget baselines ran) the baseline frontier at the variant's training time."""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import numpy as np

from mixtrain_trainer.history import load_trial_records


def main(root: str, names: list[str]) -> None:
    for name in names:
        rows = defaultdict(dict)  # (variant, budget) -> seed -> (top1 %, seconds, inputs)
        for r in load_trial_records(root, name):
            if r.get("status") != "done":
                continue
            c = r["config"]
            rows[(c["variant"], c["budget"])][c["seed"]] = (100 * r["final"]["final_test_acc"],
                                                           r["final"]["total_train_seconds"],
                                                           r["final"]["total_inputs"])
        base = rows.get(("baseline", 1.0), {})
        print(f"## {name}")
        print("| variant | seeds | top-1 mean ± std | Δ points (paired) | inputs ratio | train s (mean) "
              "| vs time frontier | vs inputs frontier |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for (variant, budget), by_seed in sorted(rows.items(), key=lambda kv: (kv[0][0] != "baseline", -kv[0][1], kv[0][0])):
            top = [v[0] for v in by_seed.values()]
            deltas = [by_seed[s][0] - base[s][0] for s in by_seed if s in base]
            ratio = [by_seed[s][2] / base[s][2] for s in by_seed if s in base]
            frontier, iso_inputs = [], []
            for s, (acc, secs, inputs) in by_seed.items():
                for out, at, col in ((frontier, secs, 1), (iso_inputs, inputs, 2)):
                    pts = sorted((rows[("baseline", b)][s][col], rows[("baseline", b)][s][0])
                                 for (v, b) in rows if v == "baseline" and s in rows[("baseline", b)])
                    if len(pts) >= 2 and pts[0][0] <= at <= pts[-1][0]:
                        out.append(acc - float(np.interp(at, *zip(*pts))))
            label = variant if budget == 1.0 else f"baseline@{budget:g}"
            std = statistics.stdev(top) if len(top) > 1 else float("nan")
            print(f"| {label} | {sorted(by_seed)} | {statistics.mean(top):.2f} ± {std:.2f} | "
                  f"{statistics.mean(deltas):+.2f} ({', '.join(f'{d:+.1f}' for d in deltas)}) | "
                  f"{statistics.mean(ratio):.3f} | {statistics.mean(v[1] for v in by_seed.values()):.0f} | "
                  + (", ".join(f"{f:+.1f}" for f in frontier) or "—") + " | "
                  + (", ".join(f"{f:+.1f}" for f in iso_inputs) or "—") + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["short", "step20"])
