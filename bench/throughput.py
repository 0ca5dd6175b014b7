"""Training throughput (images/s) of the data pipelines and precisions, on whatever device is here:

- device-resident uint8 data + batch augmentation on the device (ours) vs a standard torchvision
  DataLoader pipeline (per-sample transforms in worker processes, pinned memory);
- bf16 autocast + channels-last vs fp32 (CUDA only; on CPU only fp32 is measured).

    python bench/throughput.py --model resnet18 --steps 200     # GPU: ResNet-18 on full CIFAR-10
    python bench/throughput.py --model resnet8 --steps 40       # CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixtrain_trainer.config import DatasetConfig  # noqa: E402
from mixtrain_trainer.data import load_dataset  # noqa: E402
from mixtrain_trainer.data.loader import ResidentSource  # noqa: E402
from mixtrain_trainer.models import create_model  # noqa: E402


def run_steps(model, batches, steps: int, device, amp) -> float:
    """Images/s over ``steps`` SGD steps after 10 warm-up steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    it = iter(batches)
    seen, t0 = 0, None
    for i in range(steps + 10):
        if i == 10:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        x, y = next(it)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def resident_batches(bundle, device, batch: int, channels_last: bool):
    source = ResidentSource(bundle, device, augment=True, channels_last=channels_last)
    labels = torch.from_numpy(bundle.train_labels).to(device)
    g = torch.Generator(device).manual_seed(0)
    n = bundle.num_train
    while True:
        order = torch.randperm(n, device=device, generator=g)
        for lo in range(0, n - batch + 1, batch):
            idx = order[lo : lo + batch]
            yield source.fetch(idx, g), labels[idx]


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader_batches(bundle, device, batch: int, workers: int, channels_last: bool):
    import torchvision.transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(bundle.mean, bundle.std)])
    loader = torch.utils.data.DataLoader(
        _Images(bundle.train_images, bundle.train_labels, transform), batch_size=batch, shuffle=True,
        num_workers=workers, pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(device, non_blocking=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPU count, max 8)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    bundle = load_dataset(DatasetConfig(name="parquet", root=args.data))
    workers = args.workers if args.workers is not None else min(8, len(__import__("os").sched_getaffinity(0)))
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "device": torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()}",
              "model": args.model, "batch_size": args.batch_size, "workers": workers, "images_per_s": {}}
    settings = [("fp32", None, False)] + ([("bf16+channels_last", torch.bfloat16, True)] if cuda else [])
    for precision, amp, cl in settings:
        for pipeline in ("resident", "dataloader"):
            torch.manual_seed(0)
            model = create_model(args.model, 10, (3, 32, 32)).to(device)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            batches = (resident_batches(bundle, device, args.batch_size, cl) if pipeline == "resident"
                       else dataloader_batches(bundle, device, args.batch_size, workers, cl))
            ips = run_steps(model, batches, args.steps, device, amp)
            result["images_per_s"][f"{pipeline}/{precision}"] = ips
            print(f"{pipeline:>10} {precision:>20}: {ips:10.0f} images/s", flush=True)
    ips = result["images_per_s"]
    result["resident_over_dataloader"] = ips["resident/fp32"] / ips["dataloader/fp32"]
    if cuda:
        result["bf16_cl_over_fp32_resident"] = ips["resident/bf16+channels_last"] / ips["resident/fp32"]
        result["resident_over_dataloader_bf16"] = ips["resident/bf16+channels_last"] / ips["dataloader/bf16+channels_last"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput-{device.type}-{args.model}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("dataloader", "fp32_resident", "bf16"))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
