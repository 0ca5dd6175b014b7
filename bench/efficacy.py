"""Method efficacy: does mixTrain make training faster here, at what accuracy, and against the iso-time
frontier? Runs every variant one after another in this process (same seed, same data, same machine), then
summarises with the report's own code (``orchestrate.report.summarize``).

CPU proxy (BENCHMARKS.md):   python bench/efficacy.py
GPU (ResNet-18, full data):  python bench/efficacy.py --model resnet18 --train-subset 0 --epochs 30 \
                                 --variants baseline mixtrain-cutmix --budgets
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer.config import validate_run_config  # noqa: E402
from mixtrain_trainer.history import load_epochs  # noqa: E402
from mixtrain_trainer.trainer import Trainer  # noqa: E402

DEFAULT_VARIANTS = ["baseline", "mixtrain-cutmix", "mixtrain-mixup", "naive-cutmix", "selective-backprop",
                    "mixtrain-cutmix-anneal"]
DEFAULT_BUDGETS = [0.5, 0.67, 0.8]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--train-subset", type=int, default=20000, help="0: the whole training set")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step"])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    p.add_argument("--budgets", nargs="*", type=float, default=DEFAULT_BUDGETS,
                   help="baseline epoch budgets for the iso-time frontier (none: --budgets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--name", default=None, help="result folder name (default: efficacy-<device>-<model>)")
    args = p.parse_args()

    base = {
        "dataset": {"name": "parquet", "root": args.data, "train_subset": args.train_subset or None},
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "optimizer": {"lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"kind": args.schedule, "step_epochs": max(1, args.epochs // 3)}, "device": args.device,
    }
    runs = [(v, 1.0) for v in args.variants] + [("baseline", b) for b in args.budgets]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and _cuda()) else "cpu"
    name = args.name or f"efficacy-{device}-{args.model}"
    root = Path(args.out)
    started = time.time()
    for variant, budget in runs:
        label = variant if budget == 1.0 else f"baseline@{budget:g}"
        cfg = validate_run_config({**base, "variant": variant, "budget": budget, "name": name,
                                   "storage": {"root": str(root)}, "trial_id": label.replace("@", "_")})
        labels = {"variant": label, "model": cfg.model, **({"budget": budget} if budget != 1.0 else {})}
        t0 = time.time()
        final = Trainer(cfg, labels=labels, checkpoint_dir=root / name / "checkpoints" / label).fit()
        print(f"{label:<24} top-1 {final['final_test_acc']:.2%}  train {final['total_train_seconds']:7.1f} s  "
              f"inputs {final['total_inputs']:>9}  (wall {time.time() - t0:.0f} s)", flush=True)

    from orchestrate.report import summarize

    summary = summarize(root, name)
    epochs = load_epochs(root, name)
    frac = epochs.pivot_table(index="epoch", columns="trial", values="frac_mixed")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "device": _device_name(device), "train_subset": args.train_subset, "epochs": args.epochs,
        "model": args.model, "total_seconds": time.time() - started, "base": base,
        "summary": json.loads(summary.to_json(orient="records")),
        "frac_mixed_per_epoch": json.loads(frac.round(4).to_json()),
    }
    out = root / f"{name}.json"
    out.write_text(json.dumps(result, indent=2))
    cols = ["variant", "budget", "top1", "delta_top1", "wall_seconds", "speedup", "inputs_ratio",
            "iso_time_gain", "early_term_epoch", "frac_mixed_mean"]
    print(summary[[c for c in cols if c in summary]].to_string(index=False))
    print(f"\nraw numbers: {out}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU x{torch.get_num_threads()} threads"


if __name__ == "__main__":
    sys.exit(main())
