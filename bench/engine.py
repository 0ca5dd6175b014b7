"""What the engine costs: the one fixed-shape train step, eager against compiled, what a composite costs
per input against a single, and mixtrain-cutmix's wall-clock speedup against its ideal (1 / inputs ratio).

    python bench/engine.py                      # CPU: resnet8, 5,000 shared CIFAR-10 images
    python bench/engine.py --parts step         # only (1); --parts composite / speedup for the others

(1) step: images/s of ``TrainStep.train_step`` over real CIFAR-10 batches for ``baseline`` and
    ``mixtrain-cutmix`` (70% of the samples in S_mix, as late in a run), eager and compiled (``compile: true``; on CUDA
    "reduce-overhead"); compile time reported on its own. Ratio: compiled / eager per variant.
(2) composite: seconds per input of the whole batch pipeline (fetch of both constituents, masks, the
    step) for a batch of B composites against B singles, interleaved; target <= 1.03.
(3) speedup: ``baseline`` and ``mixtrain-cutmix`` trained epoch by epoch in alternation (so the machine's
    drift hits both alike); speedup = baseline's training seconds / mixtrain's, ideal = baseline's
    inputs / mixtrain's; target: speedup >= 0.97 x ideal.
Ratios are measured within one run. Results: bench/results/engine-<device>-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer.config import validate_run_config  # noqa: E402
from mixtrain_trainer.sampler import plan_epoch  # noqa: E402
from mixtrain_trainer.step import TrainStep, compile_mode  # noqa: E402
from mixtrain_trainer.trainer import Trainer  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "cifar10"


def config(args, variant: str, root: str, **extra):
    data = {
        "variant": variant, "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
        "dataset": {"name": "parquet", "root": args.data, "train_subset": args.train_subset,
                    "test_subset": args.test_subset},
        "optimizer": {"lr": 0.05}, "schedule": {"kind": "cosine"}, "seed": 0, "storage": {"root": root},
        "name": "engine-bench", **extra,
    }
    return validate_run_config(data, "bench")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def planned_batches(trainer: Trainer, mix_share: float, count: int):
    """``count`` full batches through the trainer's own source and strategy: (PairBatch, ids2) each,
    with ``mix_share`` of the samples in S_mix."""
    n, b = trainer.data.num_train, trainer.cfg.batch_size
    mix = torch.zeros(n, dtype=torch.bool)
    mix[: int(mix_share * n)] = True
    plan = plan_epoch(mix, b, torch.Generator().manual_seed(0))
    gen = torch.Generator(trainer.device).manual_seed(0)
    out = []
    for first, second, n_s, x1, x2c in trainer.source.epoch_batches(plan.to(trainer.device), gen):
        if first.shape[0] != b:
            continue
        out.append(trainer.strategy.pair_batch(0, first, second, n_s, x1, x2c, n))
        if len(out) == count:
            break
    return out


def images_per_second(step: TrainStep, batches, repeats: int, device) -> float:
    """Median images (inputs) per second of ``train_step`` over ``batches``, ``repeats`` passes."""
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for i, (batch, _) in enumerate(batches):
            step.train_step(batch, i, len(batches), 0.01)
        sync(device)
        rates.append(sum(b.size for b, _ in batches) / (time.perf_counter() - t0))
    return statistics.median(rates)


def part_step(args, root) -> dict:
    out = {}
    for variant in ("baseline", "mixtrain-cutmix"):
        for compiled in (False, True):
            t = Trainer(config(args, variant, root, compile=compiled))
            batches = planned_batches(t, 0.0 if variant == "baseline" else 0.7, args.steps)
            t.model.train()
            t.warm_up()  # compile time (and CUDA graph recording) outside the measurement
            images_per_second(t.step, batches[:2], 1, t.device)  # first-call costs of the eager path
            rate = images_per_second(t.step, batches, args.repeats, t.device)
            key = f"{variant}_{'compiled' if compiled else 'eager'}"
            out[key] = {"images_per_s": rate, "compile_seconds": t.step.compile_seconds,
                        "mode": compile_mode(compiled, t.device, 1)}
            print(f"step {key}: {rate:.0f} images/s, compile {t.step.compile_seconds:.1f} s", flush=True)
        out[f"{variant}_compiled_over_eager"] = (
            out[f"{variant}_compiled"]["images_per_s"] / out[f"{variant}_eager"]["images_per_s"])
    return out


def part_composite(args, root) -> dict:
    """Per-input seconds of the batch pipeline, all-composite batches against all-single ones."""
    t = Trainer(config(args, "mixtrain-cutmix", root))
    t.model.train()
    n, b = t.data.num_train, t.cfg.batch_size
    gen = torch.Generator(t.device).manual_seed(0)

    def pipeline(mixed: bool) -> float:
        mix = torch.full((n,), mixed, dtype=torch.bool)
        plan = plan_epoch(mix, b, torch.Generator().manual_seed(1))
        sync(t.device)
        t0 = time.perf_counter()
        inputs = 0
        for i, (first, second, n_s, x1, x2c) in enumerate(t.source.epoch_batches(plan.to(t.device), gen)):
            if i == args.steps:
                break
            batch, _ = t.strategy.pair_batch(0, first, second, n_s, x1, x2c, n)
            t.step.train_step(batch, i, args.steps, 0.01)
            inputs += batch.size
        sync(t.device)
        return (time.perf_counter() - t0) / inputs

    pipeline(True), pipeline(False)  # warm-up
    singles, composites = [], []
    for _ in range(args.repeats):  # interleaved: drift hits both alike
        singles.append(pipeline(False))
        composites.append(pipeline(True))
    s, c = statistics.median(singles), statistics.median(composites)
    print(f"composite: {c * 1e3:.3f} ms/input vs single {s * 1e3:.3f} ms/input: ratio {c / s:.3f}", flush=True)
    return {"single_ms_per_input": s * 1e3, "composite_ms_per_input": c * 1e3, "composite_over_single": c / s}


def part_speedup(args, root) -> dict:
    """baseline and mixtrain-cutmix, one epoch each in alternation; training seconds and inputs."""
    trainers = {v: Trainer(config(args, v, root)) for v in ("baseline", "mixtrain-cutmix")}
    for epoch in range(args.epochs):
        for v, t in trainers.items():
            t.run_epoch(epoch)
            row = t.epoch_rows[-1]
            print(f"speedup {v} epoch {epoch}: {row['epoch_seconds']:.2f} s, {row['n_inputs']} inputs, "
                  f"test {row['test_acc']:.3f}", flush=True)
    base, mix = (trainers[v].epoch_rows for v in ("baseline", "mixtrain-cutmix"))
    tb, tm = sum(r["epoch_seconds"] for r in base), sum(r["epoch_seconds"] for r in mix)
    ib, im = sum(r["n_inputs"] for r in base), sum(r["n_inputs"] for r in mix)
    speedup, ideal = tb / tm, ib / im
    print(f"speedup {speedup:.3f}x, ideal {ideal:.3f}x: {speedup / ideal:.3f} of ideal", flush=True)
    return {"baseline_seconds": tb, "mixtrain_seconds": tm, "baseline_inputs": ib, "mixtrain_inputs": im,
            "speedup": speedup, "ideal": ideal, "speedup_over_ideal": speedup / ideal,
            "baseline_top1": base[-1]["test_acc"], "mixtrain_top1": mix[-1]["test_acc"],
            "per_epoch": {"baseline": [[r["epoch_seconds"], r["n_inputs"]] for r in base],
                          "mixtrain-cutmix": [[r["epoch_seconds"], r["n_inputs"]] for r in mix]}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED))
    p.add_argument("--model", default="resnet8")
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6, help="(3): epochs of each variant")
    p.add_argument("--steps", type=int, default=20, help="(1), (2): batches per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parts", nargs="+", default=["step", "composite", "speedup"],
                   choices=["step", "composite", "speedup"])
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU x{torch.get_num_threads()}",
        "torch": torch.__version__, "model": args.model, "train_subset": args.train_subset,
        "batch_size": args.batch_size,
    }
    parts = {"step": part_step, "composite": part_composite, "speedup": part_speedup}
    with tempfile.TemporaryDirectory() as root:
        for name in args.parts:
            result[name] = parts[name](args, root)
    out = Path(args.out) / f"engine-{device}-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **result}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
