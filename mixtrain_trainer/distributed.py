"""Data-parallel trials in plain ``torch.distributed``: process-group set-up, rank helpers and the few
collectives a trainer needs. Imports neither Ray nor MLflow.

Whoever starts the processes (a Ray Train worker, torch's launcher, ``mixtrain train --workers N``) ends
with an initialised default process group; this module only reads it. Without one (a one-process run)
every helper is the identity, so the trainer calls them unconditionally.

One global policy, not N local ones: every rank plans the same epoch from the same seeded generator and
trains its own share of each global step, so each training sample is written by exactly one rank. At
the epoch's end ``combine_rows`` merges the per-sample rows and the epoch sums in ONE ``all_reduce``
(a masked sum: a rank contributes only the rows it touched), after which every rank holds the same
per-sample state and takes the same S_mix decision; ``check_same`` verifies that, it does not assume it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket

import torch
import torch.distributed as dist
import torch.nn as nn


class RankDivergenceError(RuntimeError):
    """Ranks that must hold identical state do not (a bug, never a user error)."""


# ---------------------------------------------------------------------------- set-up
def backend_for(device: torch.device | str) -> str:
    """NCCL on CUDA, gloo on the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def init_process_group(device: torch.device | str, rank: int | None = None, world_size: int | None = None,
                       address: str | None = None, port: int | None = None, timeout_s: float = 600.0) -> bool:
    """Initialise the default process group unless one exists; True when the run is distributed.

    Explicit ``rank``/``world_size``/``address``/``port``, else torch's launcher variables (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). A world of one initialises nothing.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world_size = int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    rank = int(rank if rank is not None else os.environ["RANK"])
    address = address or os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(port if port is not None else os.environ["MASTER_PORT"])
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=f"tcp://{address}:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """An initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes history, records and checkpoints."""
    return rank() == 0


def local_device(requested: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:<LOCAL_RANK>`` when several ranks share a node."""
    if requested.type == "cuda" and requested.index is None and is_distributed():
        local = int(os.environ.get("LOCAL_RANK", rank() % max(torch.cuda.device_count(), 1)))
        return torch.device("cuda", local % max(torch.cuda.device_count(), 1))
    return requested


# ---------------------------------------------------------------------------- local processes
def _rank_entry(rank_: int, world: int, port: int, device: str, threads: int, fn, args, result_path) -> None:
    import pickle

    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", rank_ % max(torch.cuda.device_count(), 1))
    os.environ.update(RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(world))
    init_process_group(dev, rank=rank_, world_size=world, port=port)
    try:
        out = fn(*args)
        if rank_ == 0:  # a file, not a pipe: a large result would block a pipe until the parent reads it,
            with open(result_path, "wb") as f:  # and the parent reads only after every rank has exited
                pickle.dump(out, f)
    finally:
        destroy_process_group()


def spawn(fn, world: int, *args, device: str = "cpu", threads: int | None = None):
    """Run ``fn(*args)`` on ``world`` local processes joined in one process group (gloo on the CPU, NCCL
    on CUDA, rank r on GPU r); returns rank 0's result. A rank that fails fails the call (its traceback).

    ``threads``: intra-op threads per rank (default: this machine's CPUs shared evenly). The function
    and its arguments must be picklable (module-level): each rank is a fresh interpreter; so must the
    result (tensors in it are copied, not shared).
    """
    import pickle
    import tempfile

    import torch.multiprocessing as mp

    threads = threads or max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory(prefix="mixtrain-spawn-") as tmp:
        result_path = os.path.join(tmp, "rank0.pkl")
        mp.spawn(_rank_entry, args=(world, free_port(), device, threads, fn, args, result_path), nprocs=world,
                 join=True)
        if not os.path.exists(result_path):
            return None
        with open(result_path, "rb") as f:
            return pickle.load(f)


# ---------------------------------------------------------------------------- sharding
def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous share of ``n`` items (evaluation); shares differ by at most one item."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return slice(n * r // w, n * (r + 1) // w)


def step_share(lo: int, hi: int, rank_: int | None = None, world: int | None = None,
               per_rank: int | None = None) -> slice:
    """This rank's inputs of one global step covering inputs ``lo:hi`` of the epoch's plan.

    Each rank takes ``per_rank`` consecutive inputs (the run's ``batch_size``); the last, shorter global
    step is cut evenly so that no rank idles while another trains.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    n = hi - lo
    if per_rank is not None and n == per_rank * w:
        return slice(lo + r * per_rank, lo + (r + 1) * per_rank)
    return slice(lo + n * r // w, lo + n * (r + 1) // w)


PLAN_INPUT_FIELDS = ("first", "second", "first_host", "second_host")  # EpochPlan fields indexed by input


def shard_plan(plan, per_rank: int, rank_: int | None = None, world: int | None = None):
    """This rank's share of a global epoch plan: the same EpochPlan type, one mini-batch per global step.

    ``plan`` was cut into global steps of ``world x per_rank`` inputs (``plan_epoch(mix, world *
    batch_size, generator)``, the same on every rank); each global step's inputs are split with
    ``step_share`` and the rank keeps its slice, singles still first (a global step lists its singles
    first, so a slice does too). Every input of the epoch lands on exactly one rank and every rank has
    the same number of steps; a rank's share is empty only in a last global step of fewer than
    ``world`` inputs (it must still join that step's gradient all-reduce).
    """
    import dataclasses

    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if w == 1:
        return plan
    index, bounds, singles = [], [0], []
    for b, n_single in enumerate(plan.singles):
        lo, hi = plan.bounds[b], plan.bounds[b + 1]
        part = step_share(lo, hi, r, w, per_rank)
        index.append(torch.arange(part.start, part.stop))
        bounds.append(bounds[-1] + part.stop - part.start)
        singles.append(min(max(lo + n_single - part.start, 0), part.stop - part.start))
    index = torch.cat(index) if index else torch.zeros(0, dtype=torch.int64)
    fields = {}
    for name in PLAN_INPUT_FIELDS:
        value = getattr(plan, name, None)
        if value is not None:
            fields[name] = value[index.to(value.device)]
    return dataclasses.replace(plan, bounds=bounds, singles=singles, **fields)


def grad_weights(plan, mine) -> list[float]:
    """Per step, the factor on this rank's mean loss that makes the averaged gradient the mean over the
    global step's inputs: (my inputs x world) / (the step's inputs); 1 except on an uneven last step."""
    w = world_size()
    if w == 1:
        return [1.0] * plan.num_batches
    return [(mine.bounds[b + 1] - mine.bounds[b]) * w / max(plan.bounds[b + 1] - plan.bounds[b], 1)
            for b in range(plan.num_batches)]


# ---------------------------------------------------------------------------- collectives
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity in a one-process run)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def combine_rows(per_sample: dict[str, torch.Tensor], touched: torch.Tensor,
                 summed: dict[str, torch.Tensor] | None = None, counts: dict[str, float] | None = None):
    """Merge one epoch's outcome across ranks in one ``all_reduce``.

    per_sample: name -> (N,) tensor (bool, integer or float) of which each rank wrote only the rows it
    ``touched`` ((N,) bool); rows nobody touched keep this rank's value (every rank starts the epoch from
    the same defaults, so they agree). summed: name -> tensor added across ranks (the epoch sums);
    counts: name -> host number added across ranks (inputs trained, inputs forwarded).

    Everything travels as float64 in one flat buffer: exact for bool, for integers below 2**53 and for
    float32 values; a NaN or inf in a touched row stays NaN or inf. Returns (per_sample, summed, counts,
    owners) where ``owners`` (N,) int64 counts the ranks that touched each row (1 for a trained sample).
    """
    summed = summed or {}
    counts = counts or {}
    if not is_distributed():
        return dict(per_sample), dict(summed), dict(counts), touched.long()
    n = touched.shape[0]
    parts = [touched.double()]
    for v in per_sample.values():
        parts.append(torch.where(touched, v.double(), torch.zeros((), dtype=torch.float64, device=v.device)))
    parts += [v.double().reshape(-1) for v in summed.values()]
    parts.append(torch.tensor([float(c) for c in counts.values()], dtype=torch.float64, device=touched.device))
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    owners = flat[:n].round().long()
    anyone = owners > 0
    out, at = {}, n
    for name, v in per_sample.items():
        merged = flat[at: at + n]
        at += n
        if v.dtype == torch.bool:
            merged = merged > 0.5
        elif not v.dtype.is_floating_point:
            merged = merged.round()
        out[name] = torch.where(anyone, merged.to(v.dtype), v)
    sums = {}
    for name, v in summed.items():
        sums[name] = flat[at: at + v.numel()].reshape(v.shape).to(v.dtype)
        at += v.numel()
    host = flat[at:].tolist()
    totals = {name: type(c)(h) if isinstance(c, int) else h for (name, c), h in zip(counts.items(), host)}
    return out, sums, totals, owners


def combine_outcome(out):
    """An epoch's ``outcome.Outcome`` merged across ranks (one ``all_reduce``; identity on one process):
    its ``PER_SAMPLE`` rows from the rank that touched them, its ``SUMMED`` tensors and ``HOST_COUNTS``
    added, and its ``bad_step`` the first non-finite step any rank saw. Every rank then holds the same
    outcome. Raises RankDivergenceError when a trained sample was written by more than one rank."""
    import dataclasses

    if not is_distributed():
        return out
    bad = torch.zeros(world_size(), dtype=torch.float64, device=out.sums.device)
    bad[rank()] = out.bad_step.double() + 1  # 0: none on that rank
    per_sample = {name: getattr(out, name) for name in out.PER_SAMPLE if name != "touched"}
    summed = {name: getattr(out, name) for name in out.SUMMED}
    counts = {name: getattr(out, name) for name in out.HOST_COUNTS}
    rows, sums, totals, owners = combine_rows(per_sample, out.touched, {**summed, "bad": bad}, counts)
    steps = sums.pop("bad")
    steps = steps[steps > 0]
    bad_step = (steps.min() - 1).long() if steps.numel() else out.bad_step
    n = out.num_samples
    if bool((owners[:n] > 1).any()):  # one host read per epoch
        raise RankDivergenceError("a training sample was trained on more than one rank in one epoch")
    return dataclasses.replace(out, **rows, **sums, **totals, touched=owners > 0, bad_step=bad_step)


def rank_seed(seed: int, epoch: int) -> int:
    """A seed for this rank's device generator in ``epoch`` (augmentation, CutMix boxes): distinct per
    rank and epoch, and recomputable on resume without any per-rank saved state."""
    return (seed * 1_000_003 + epoch * 7919 + rank() * 104_729 + 3) % (2**63)


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha1 of the tensors' bytes (names in order): equal digests mean identical state."""
    h = hashlib.sha1()
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order ([obj] in a one-process run)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_same(tensors: dict[str, torch.Tensor], what: str) -> list[str]:
    """Each rank's digest of ``tensors``; raise RankDivergenceError when they differ. Returns the digests."""
    digests = gather_objects(digest(tensors))
    if len(set(digests)) > 1:
        raise RankDivergenceError(f"{what}: ranks disagree (digests {digests}); data-parallel state diverged")
    return digests


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(params) -> None:
    """Average the parameters' gradients over ranks in one flat ``all_reduce`` (DDP's arithmetic)."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:  # a rank with an empty share of a step has no gradients: it contributes zeros
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    at = 0
    for g in grads:
        g.copy_(flat[at: at + g.numel()].view_as(g))
        at += g.numel()


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers on every rank (identical start, as DDP does)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


# ---------------------------------------------------------------------------- batch norm over the global batch
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the global batch (every rank's inputs), on any device.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one sums (count, sum, sum of squares) per channel
    with an autograd-aware ``all_reduce`` (gloo or NCCL), so forward and backward equal one batch norm
    over the concatenated global batch. Outside training, or without a process group, it is plain
    batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([count, xf.sum(dims), (xf * xf).sum(dims)])
        stats = all_reduce(stats)
        c = x.shape[1]
        total = stats[0]
        mean = stats[1: 1 + c] / total
        var = (stats[1 + c:] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm*d of ``module`` by a GlobalBatchNorm with the same parameters and buffers."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_batchnorm(child))
    return out

