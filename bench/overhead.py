"""What does our machinery cost per epoch? (1) the amenability rule + epoch planning, (2) writing the
Parquet history, as shares of one training epoch at 50,000 samples; (3) split propagation's extra cost
over an unsplit forward/backward of the same composite batch. Targets: (1)+(2) < 1%, (3) < 3%.

    python bench/overhead.py                       # CPU, resnet8
    python bench/overhead.py --model resnet18      # on a GPU machine: CUDA is used when present
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer import mixing  # noqa: E402
from mixtrain_trainer.history import HistoryWriter  # noqa: E402
from mixtrain_trainer.models import create_model  # noqa: E402
from mixtrain_trainer.policy import AmenabilityPolicy  # noqa: E402
from mixtrain_trainer.sampler import plan_epoch  # noqa: E402
from mixtrain_trainer.step import pair_logits, pair_loss  # noqa: E402
from mixtrain_trainer.trainer import PATH_LOOKUP  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def train_step_seconds(model, device, batch: int, split: bool, amp, steps: int) -> float:
    """Median seconds of one forward+backward+SGD step on a batch of ``batch`` CutMix composites."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator(device).manual_seed(0)
    x1 = torch.randn(batch, 3, 32, 32, device=device)
    x2 = torch.randn(batch, 3, 32, 32, device=device)
    y1 = torch.randint(0, 10, (batch,), device=device)
    y2 = torch.randint(0, 10, (batch,), device=device)
    stride = model.feature_stride
    mask = mixing.half_grid_masks(batch, (32 // stride, 32 // stride), g, device)
    r = mixing.mask_ratio(mask)
    composites = mixing.cutmix(x1, x2, mask, stride)
    w, composite = torch.ones(batch, device=device), torch.ones(batch, dtype=torch.bool, device=device)

    def step():
        with torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False):
            o1, o2 = pair_logits(model, composites, mask, split)
        loss = pair_loss(o1, o2, y1, y2, r, w, composite, not split)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    timed(step, device, 5)  # warm-up
    return statistics.median(timed(step, device, steps))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=50000)
    p.add_argument("--model", default="resnet8")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" else None
    n, b = args.samples, args.batch_size
    model = create_model(args.model, 10, (3, 32, 32)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    # (3) split propagation vs the same composite batch unsplit, interleaved to cancel drift
    split_t, plain_t = [], []
    for _ in range(3):
        plain_t.append(train_step_seconds(model, device, b, False, amp, args.steps))
        split_t.append(train_step_seconds(model, device, b, True, amp, args.steps))
    step_plain, step_split = statistics.median(plain_t), statistics.median(split_t)

    # An epoch of unmixed training at n samples, from the unsplit step time (same batch size).
    epoch_seconds = step_plain * n / b

    # (1) policy decision + next epoch's plan, on realistic losses
    rng = torch.Generator().manual_seed(0)
    policy = AmenabilityPolicy("mixtrain", n, 1, device)
    trained = torch.ones(n, dtype=torch.bool, device=device)
    for _ in range(3):  # a few epochs so thresholds are defined and S_mix is populated
        loss = torch.rand(n, generator=rng).to(device) * 3
        policy.step(loss, loss < 1.0, policy.mix_next.clone(), trained)

    def decide_and_plan():
        loss = torch.rand(n, generator=rng).to(device) * 3
        policy.step(loss, loss < 1.0, policy.mix_next.clone(), trained)
        plan_epoch(policy.mix_next.cpu(), b, rng).to(device)

    policy_s = statistics.median(timed(decide_and_plan, device, 7))

    # (2) the one host copy + Parquet write of the epoch's per-sample history
    with tempfile.TemporaryDirectory() as tmp:
        writer = HistoryWriter(tmp, "bench", "t")
        state = {k: torch.zeros(n, device=device) for k in ("loss", "weight")}
        flags = {k: torch.zeros(n, dtype=torch.bool, device=device) for k in ("correct", "mixed", "mix_next", "skip")}
        ints = {"partner": torch.full((n,), -1, device=device), "region": torch.ones(n, dtype=torch.int8, device=device),
                "path": torch.ones(n, dtype=torch.int8, device=device)}
        ids = np.arange(n)

        def write(epoch=[0]):  # noqa: B006 - a counter
            host = {k: v.cpu().numpy() for k, v in {**state, **flags, **ints}.items()}
            writer.write_samples(epoch[0], {
                "sample_id": ids, "loss": host["loss"], "correct": host["correct"], "mixed": host["mixed"],
                "partner_id": host["partner"].astype(np.int64), "weight": host["weight"],
                "region": host["region"], "mix_next": host["mix_next"], "mix_path": PATH_LOOKUP[host["path"]],
                "skipped": host["skip"],
            })
            epoch[0] += 1

        history_s = statistics.median(timed(write, device, 7))

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}",
        "model": args.model, "samples": n, "batch_size": b,
        "step_unsplit_ms": step_plain * 1e3, "step_split_ms": step_split * 1e3,
        "split_overhead_pct": 100 * (step_split / step_plain - 1),
        "epoch_seconds_estimate": epoch_seconds,
        "policy_and_plan_ms": policy_s * 1e3, "history_write_ms": history_s * 1e3,
        "policy_and_plan_pct": 100 * policy_s / epoch_seconds,
        "history_pct": 100 * history_s / epoch_seconds,
        "policy_plus_history_pct": 100 * (policy_s + history_s) / epoch_seconds,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"overhead-{device.type}-{args.model}.json").write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        print(f"{k:>26}: {v:.3f}" if isinstance(v, float) else f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
