"""Can the streamed imagefolder path feed the model? Images/s of the loader alone next to the model step's.

The script writes an ImageFolder of synthetic JPEGs (``--images`` of ``--min-side``..``--max-side`` px,
smooth random content, quality 90; nothing downloaded), then measures over one epoch's plan (every sample
once, batches of ``--batch-size``, 224 px crops):

- the loader alone: ``StreamedSource`` with ``decode: workers`` (PIL decode + random resized crop + flip
  in N workers) for each N of ``--workers``; and with ``decode: device`` on CUDA (workers read bytes,
  nvJPEG batch decode + roi_align crops + flip on the GPU);
- the model step: ``tv_resnet50`` at 224, forward + backward + SGD on ready batches (bf16 autocast +
  channels-last on CUDA, fp32 on CPU).

Target on a GPU: loader >= 1.5 x the ResNet-50 step's images/s.

    python bench/loader.py                                   # 20,000 images; CUDA when present
    python bench/loader.py --images 600 --workers 0 1 2 --model-steps 3 --batch-size 16   # this CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer.config import DatasetConfig  # noqa: E402
from mixtrain_trainer.data import load_dataset  # noqa: E402
from mixtrain_trainer.data.loader import StreamedSource  # noqa: E402
from mixtrain_trainer.models import create_model  # noqa: E402
from mixtrain_trainer.sampler import plan_epoch  # noqa: E402

SIZE = 224


def synthetic_jpeg(rng: np.random.Generator, min_side: int, max_side: int) -> np.ndarray:
    """A smooth random image (low-frequency colour field + noise) of random size: JPEG-realistic entropy."""
    h, w = rng.integers(min_side, max_side + 1, 2)
    coarse = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.uint8)
    from PIL import Image

    field = np.asarray(Image.fromarray(coarse).resize((int(w), int(h)), Image.BICUBIC), dtype=np.int16)
    return np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)


def make_folder(root: Path, images: int, classes: int, min_side: int, max_side: int, seed: int = 0) -> Path:
    """root/train/<class>/*.jpg (``images``) and root/val/<class>/*.jpg (a tenth); reused when present."""
    from PIL import Image

    stamp = root / f".done-{images}-{classes}-{min_side}-{max_side}"
    if stamp.exists():
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", images), ("val", max(classes, images // 10))):
        for i in range(n):
            folder = root / split / f"c{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_jpeg(rng, min_side, max_side)).save(folder / f"{i:06d}.jpg", quality=90)
    stamp.touch()
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device) -> float:
    """Wall seconds of one call, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def loader_images_per_second(root: Path, device: torch.device, decode: str, workers: int, batch: int,
                             limit: int | None) -> dict:
    cfg = DatasetConfig(name="imagefolder", root=str(root), image_size=SIZE, decode=decode, num_workers=workers)
    bundle = load_dataset(cfg)
    source = StreamedSource(bundle, device, channels_last=device.type == "cuda", num_workers=workers, pin=True)
    n = bundle.num_train if limit is None else min(limit, bundle.num_train)
    mix = torch.zeros(bundle.num_train, dtype=torch.bool)
    skip = torch.arange(bundle.num_train) >= n
    plan = plan_epoch(mix, batch, torch.Generator().manual_seed(0), skip=skip).to(device)
    gen = torch.Generator(device).manual_seed(0)
    # warm-up: start the persistent workers and take a few batches
    for i, _ in enumerate(source.epoch_batches(plan, gen)):
        if i == 3:
            break
    sync(device)
    t0 = time.perf_counter()
    seen = 0
    for _, _, _, x1, _ in source.epoch_batches(plan, gen):
        seen += x1.shape[0]
    sync(device)
    seconds = time.perf_counter() - t0
    return {"images": seen, "seconds": seconds, "images_per_s": seen / seconds}


def model_images_per_second(device: torch.device, batch: int, steps: int) -> dict:
    cuda = device.type == "cuda"
    model = create_model("tv_resnet50", 1000, (3, SIZE, SIZE)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 3, SIZE, SIZE, device=device, generator=g)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device, generator=g)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2 if not cuda else 10):
        step()
    med = statistics.median(seconds(step, device) for _ in range(steps))
    return {"batch": batch, "step_seconds_median": med, "images_per_s": batch / med,
            "precision": "bf16 autocast + channels-last" if cuda else "fp32"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--min-side", type=int, default=256)
    p.add_argument("--max-side", type=int, default=500)
    p.add_argument("--root", type=Path, default=Path("/tmp/mixtrain-loader-bench"))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, help="measure the loader on at most this many images")
    p.add_argument("--model-batch", type=int, help="the model step's batch (default: --batch-size)")
    p.add_argument("--model-steps", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    make_folder(args.root, args.images, args.classes, args.min_side, args.max_side)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "images": args.images, "sides": [args.min_side, args.max_side], "crop": SIZE,
              "batch": args.batch_size, "make_folder_seconds": time.perf_counter() - t0, "loader": {}}
    print(f"folder ready under {args.root} ({result['make_folder_seconds']:.0f} s)", flush=True)
    runs = [("workers", w) for w in args.workers] + ([("device", w) for w in args.workers] if device.type == "cuda"
                                                     else [])
    for decode, workers in runs:
        r = loader_images_per_second(args.root, device, decode, workers, args.batch_size, args.limit)
        result["loader"][f"{decode}/{workers}"] = r
        print(f"  loader decode={decode} workers={workers}: {r['images_per_s']:.0f} images/s", flush=True)
    m = model_images_per_second(device, args.model_batch or args.batch_size, args.model_steps)
    result["model_step"] = m
    print(f"  tv_resnet50 step ({m['precision']}, batch {m['batch']}): {m['images_per_s']:.1f} images/s")
    best = max(r["images_per_s"] for r in result["loader"].values())
    result["best_loader_over_model"] = best / m["images_per_s"]
    print(f"  best loader / model step: {result['best_loader_over_model']:.2f}x (target on a GPU: >= 1.5x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
