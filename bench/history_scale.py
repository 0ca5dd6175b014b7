"""ImageNet-scale per-sample histories: can we write them, step the policy over them and draw the paper's
figures from them? A synthetic history of ``--samples`` x ``--epochs`` for ``--trials`` trials is written
with the project's own ``HistoryWriter`` (the trainer's writer), then timed, each in a fresh process so
that its peak RSS is its own:

1. one epoch's history write (the host copy of the per-sample tensors + ``write_samples``);
2. ``AmenabilityPolicy.step`` at ``--samples`` samples (CPU here; CUDA when present);
3. every figure of ``orchestrate.figures.FIGURES`` (query over the Parquet files + plot + PNG).

Targets on the 2-core machine at 1.28 M x 90 x 2: write < 1.5 s; every figure < 60 s and < 4 GiB peak RSS.

    python bench/history_scale.py                                  # 1.28 M samples x 90 epochs x 2 trials
    python bench/history_scale.py --samples 100000 --epochs 10     # a quick run
    python bench/history_scale.py --reuse                          # measure again on a history already written
    python bench/history_scale.py --figures fig7_mix_fraction_by_path.png   # write, then time one figure
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer.history import HistoryWriter  # noqa: E402

SWEEP = "scale"
WRITE_CPU: list[float] = []  # CPU seconds of each epoch's write
PATHS = np.array(["", "region1", "region3"], dtype=object)  # 0: none, 1: Region 1, 2: Region 3


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not inherit the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive than wall time to a shared CPU)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Synthetic:
    """A plausible trial: per-sample difficulty sets a loss that falls over epochs with noise; thresholds,
    regions and S_mix decisions follow METHOD.md's shape (not its exact rule; what matters here is the
    data's size, types and entropy). Every draw from one seeded NumPy generator."""

    def __init__(self, n: int, epochs: int, seed: int):
        self.n, self.epochs = n, epochs
        self.rng = np.random.default_rng(seed)
        self.difficulty = self.rng.gamma(2.0, 0.6, n).astype(np.float32)
        self.mix_next = np.zeros(n, bool)
        self.path = np.zeros(n, np.int8)
        self.sums = np.zeros(4)  # [sum_corr, n_corr, sum_incorr, n_incorr]

    def epoch(self, e: int) -> tuple[dict[str, torch.Tensor], dict]:
        rng, n = self.rng, self.n
        mixed = self.mix_next
        loss = (self.difficulty * np.exp(-3.0 * e / self.epochs) * rng.lognormal(0, 0.8, n)).astype(np.float32)
        correct = loss < 0.7 + 0.1 * rng.standard_normal(n).astype(np.float32)
        partner = np.full(n, -1, np.int64)
        who = np.flatnonzero(mixed)
        who = who[rng.permutation(len(who))][: len(who) // 2 * 2].reshape(-1, 2)
        partner[who[:, 0]], partner[who[:, 1]] = who[:, 1], who[:, 0]
        weight = np.where(partner >= 0, rng.uniform(0.25, 0.75, n), 1.0).astype(np.float32)
        if e > 0:
            self.sums = np.array([loss[correct].sum(), correct.sum(), loss[~correct].sum(), (~correct).sum()],
                                 dtype=float)
        s = self.sums  # thresholds of this epoch's samples (the trainer's: cumulative over unmixed ones; with
        # a loss that falls as fast as this one's they would put nearly everything in Region 1)
        l_corr, l_incorr = (s[0] / s[1], s[2] / s[3]) if s[1] and s[3] else (np.nan, np.nan)
        l_mid = (l_corr + l_incorr) / 2
        region = np.zeros(n, np.int8)
        if np.isfinite(l_mid):
            region = np.where(loss < l_mid, 1, np.where(loss > l_incorr, 3, 2)).astype(np.int8)
        via1 = region == 1
        via3 = ~mixed & (region == 3) & (rng.random(n) < 0.15)
        self.mix_next = via1 | via3
        self.path = np.where(via1, 1, np.where(via3, 2, 0)).astype(np.int8)
        tensors = {k: torch.from_numpy(v) for k, v in dict(
            loss=loss, correct=correct, mixed=mixed, partner=partner, weight=weight, region=region,
            mix_next=self.mix_next, path=self.path, skipped=np.zeros(n, bool)).items()}
        row = {"epoch": e, "l_corr": _none(l_corr), "l_incorr": _none(l_incorr), "l_mid": _none(l_mid),
               "n_samples": n, "n_mixed": int(mixed.sum()), "n_inputs": n - int(mixed.sum()) // 2,
               "n_skipped": 0, "n_mix_next": int(self.mix_next.sum()), "n_next_region1": int(via1.sum()),
               "n_next_region3": int(via3.sum()), "frac_mixed": float(mixed.mean()),
               "train_loss": float(loss.mean()), "train_acc": float(correct.mean()), "test_acc": 0.5,
               "test_top5": 0.8, "test_loss": 1.0, "epoch_seconds": 1.0, "policy_seconds": 0.0,
               "history_seconds": 0.0, "lr": 0.1}
        return tensors, row


def _none(x: float):
    return None if not np.isfinite(x) else float(x)


def write_epoch(writer: HistoryWriter, epoch: int, t: dict[str, torch.Tensor], ids: np.ndarray) -> float:
    """The trainer's per-epoch write: one host copy of the per-sample tensors, then ``write_samples``."""
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    host = {k: v.cpu().numpy() for k, v in t.items()}
    partner_ids = np.where(host["partner"] >= 0, ids[np.maximum(host["partner"], 0)], -1)
    writer.write_samples(epoch, {
        "sample_id": ids, "loss": host["loss"], "correct": host["correct"], "mixed": host["mixed"],
        "partner_id": partner_ids, "weight": host["weight"], "region": host["region"],
        "mix_next": host["mix_next"], "mix_path": PATHS[host["path"]], "skipped": host["skipped"],
    })
    WRITE_CPU.append(cpu_seconds() - c0)
    return time.perf_counter() - t0


def generate(root: Path, samples: int, epochs: int, trials: int) -> dict:
    if (root / SWEEP).exists():
        shutil.rmtree(root / SWEEP)
    ids = np.arange(samples, dtype=np.int64)
    times = []
    t_all = time.perf_counter()
    for t in range(trials):
        trial = f"t{t}"
        w = HistoryWriter(root, SWEEP, trial)
        w.write_trial({"trial_id": trial, "sweep": SWEEP, "variant": "mixtrain-cutmix", "status": "done",
                       "labels": {"variant": "mixtrain-cutmix"}, "config": {"seed": t, "epochs": epochs}})
        syn, rows = Synthetic(samples, epochs, seed=t), []
        for e in range(epochs):
            tensors, row = syn.epoch(e)
            row["history_seconds"] = write_epoch(w, e, tensors, ids)
            times.append(row["history_seconds"])
            rows.append(row)
            w.write_epochs(rows)
            print(f"  trial {trial} epoch {e}: write {row['history_seconds']:.3f} s", flush=True)
    size = sum(f.stat().st_size for f in (root / SWEEP).rglob("*.parquet"))
    return {"write_seconds_median": statistics.median(times),
            "write_cpu_seconds_median": statistics.median(WRITE_CPU) if WRITE_CPU else None, "write_seconds_max": max(times),
            "write_seconds_min": min(times), "generate_seconds": time.perf_counter() - t_all,
            "history_bytes": size, "rows": samples * epochs * trials, "generator_peak_rss_mib": peak_rss_mib()}


# ---------------------------------------------------------------- measurements in their own process


def measure_policy(samples: int, repeats: int = 5) -> dict:
    from mixtrain_trainer.policy import AmenabilityPolicy

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    policy = AmenabilityPolicy("mixtrain", samples, k=1, device=device)
    times, cpu = [], []
    for e in range(repeats + 2):
        loss = (torch.rand(samples, generator=g) * 3).to(device)
        correct = (torch.rand(samples, generator=g) < 0.6).to(device)
        mixed = policy.mix_next.clone()
        trained = torch.ones(samples, dtype=torch.bool, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), cpu_seconds()
        region, th = policy.step(loss, correct, mixed, trained)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if e >= 2:  # the first two steps: thresholds still undefined / warm-up
            times.append(time.perf_counter() - t0)
            cpu.append(cpu_seconds() - c0)
    return {"seconds_median": statistics.median(times), "cpu_seconds_median": statistics.median(cpu),
            "device": str(device), "torch_threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


def measure_figure(root: Path, name: str, out: Path) -> dict:
    import matplotlib.pyplot as plt

    from orchestrate.figures import FIGURES, trial_labels

    base = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    fig = FIGURES[name](root, SWEEP, trial_labels(root, SWEEP))
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0, "peak_rss_mib": peak_rss_mib(),
            "rss_after_imports_mib": base}


def in_subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{args}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1_280_000)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--root", type=Path, default=Path("/tmp/mixtrain-history-scale"))
    p.add_argument("--reuse", action="store_true", help="measure on the history already under --root")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--figures", nargs="+", metavar="NAME",
                   help="time only these figures (names from orchestrate.figures.FIGURES), not the policy step")
    p.add_argument("--_policy", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_figure", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._policy:
        print(json.dumps(measure_policy(args._policy)))
        return
    if args._figure:
        out = args.root / "figures"
        out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(measure_figure(args.root, args._figure, out)))
        return

    from orchestrate.figures import FIGURES

    unknown = sorted(set(args.figures or []) - set(FIGURES))
    if unknown:
        p.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    result = {"samples": args.samples, "epochs": args.epochs, "trials": args.trials, "root": str(args.root),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
              "cuda": torch.cuda.is_available()}
    if args.reuse:
        print(f"reusing the history under {args.root}")
    else:
        print(f"writing {args.trials} x {args.epochs} x {args.samples:,} rows under {args.root}", flush=True)
        result["write"] = generate(args.root, args.samples, args.epochs, args.trials)
    if not args.figures:
        result["policy_step"] = in_subprocess(["--_policy", str(args.samples)])
    result["figures"] = {}
    for name in args.figures or FIGURES:
        r = in_subprocess(["--root", str(args.root), "--_figure", name])
        result["figures"][name] = r
        print(f"  {name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
