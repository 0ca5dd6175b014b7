"""What does the sweep machinery cost? A sweep of 8 tiny trials on embedded Ray, run one at a time:

- time to first trial start (from `run_sweep` being called to the first trainable starting);
- total sweep wall time / the sum of the trials' own time (each trainable's wall time); target < 1.15;
- MLflow logging time per epoch per trial, on the driver, as a share of an epoch; target < 1%.

    python bench/sweep_overhead.py [--trials 8] [--epochs 3] [--samples 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--concurrent", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()

    from mixtrain_trainer.history import load_epochs
    from orchestrate import tracking
    from orchestrate.runner import init_ray, run_sweep
    from orchestrate.spec import expand, parse_sweep

    tmp = Path(tempfile.mkdtemp(prefix="mixtrain-bench-"))
    spec = parse_sweep({
        "name": "sweep-overhead",
        "base": {"dataset": {"name": "synthetic", "synthetic_train": args.samples, "synthetic_test": 256},
                 "model": "resnet8", "model_width": 8, "epochs": args.epochs, "batch_size": 64},
        "variants": ["baseline"], "grid": {"seed": list(range(args.trials))},
        "resources": {"cpu": 1}, "max_concurrent": args.concurrent,
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}, "storage": {"root": str(tmp / "results")},
    })
    trials = expand(spec)
    init_ray(None)  # Ray start-up is paid once per sweep, and not counted below
    t0 = time.time()
    results = run_sweep(spec, trials, tmp / "results", spec.tracking.uri, quiet=True)
    wall = time.time() - t0
    starts, own = [], []
    for r in results:
        df = r.metrics_dataframe
        last = df.iloc[-1]
        own.append(float(last["time_total_s"]))
        starts.append(float(last["timestamp"]) - float(last["time_total_s"]))
    epochs = load_epochs(tmp / "results", spec.name)
    epoch_s = float(epochs.epoch_seconds.mean())
    per_epoch_log = tracking.STATS["flush_seconds"] / max(tracking.STATS["epochs_logged"], 1)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
        "trials": args.trials, "epochs": args.epochs, "samples": args.samples, "concurrent": args.concurrent,
        "sweep_wall_s": wall, "sum_trial_s": sum(own),
        "wall_over_trial_time": wall / (sum(own) / args.concurrent),
        "first_trial_start_s": min(starts) - t0,
        "mean_epoch_s": epoch_s, "mlflow_s_per_epoch": per_epoch_log,
        "mlflow_pct_of_epoch": 100 * per_epoch_log / epoch_s,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep-overhead.json").write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
