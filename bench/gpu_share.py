"""Sweep throughput on one GPU: four trials sharing it (as `resources: {gpu: 0.25}` does) vs the same four
one after another. Each trial is a separate `mixtrain train` process, which is what a Ray worker with a
fractional GPU is; this script needs no Ray, so it also runs where Ray cannot be installed.

    python bench/gpu_share.py --model resnet18 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixtrain-share-"))
    configs = []
    for seed in range(args.trials):
        cfg = {"variant": "baseline", "model": args.model, "epochs": args.epochs, "batch_size": 64, "seed": seed,
               "dataset": {"name": "parquet", "root": args.data, "train_subset": args.train_subset or None},
               "storage": {"root": str(tmp / "results")}, "name": "share"}
        path = tmp / f"trial{seed}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        configs.append(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def launch(path: Path, tag: str):
        return subprocess.Popen([sys.executable, "-m", "orchestrate.cli", "train", "--config", str(path),
                                 "--set", f"name=share-{tag}"], env=env, stdout=subprocess.DEVNULL)

    launch(configs[0], "warm").wait()  # decode + cache the data set once, outside the timings
    t0 = time.time()
    for path in configs:
        assert launch(path, "seq").wait() == 0
    sequential = time.time() - t0
    t0 = time.time()
    procs = [launch(path, "par") for path in configs]
    assert all(proc.wait() == 0 for proc in procs)
    shared = time.time() - t0
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "model": args.model, "epochs": args.epochs, "trials": args.trials,
              "sequential_s": sequential, "shared_s": shared, "throughput_ratio": sequential / shared}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu-share-{args.model}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
