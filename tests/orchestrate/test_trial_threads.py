"""A trial trains with as many intra-op threads as CPUs Ray assigned to it (read in the worker)."""

from __future__ import annotations

from orchestrate.runner import run_sweep
from orchestrate.spec import expand, load_sweep, sweep_root


def test_cpu_2_trial_trains_with_2_threads(ray_local, write_sweep):
    path, uri, _ = write_sweep("threads", variants=["baseline"], base={"epochs": 1}, resources={"cpu": 2})
    spec = load_sweep(path)
    results = run_sweep(spec, expand(spec), sweep_root(spec), uri, quiet=True)
    (result,) = list(results)
    assert result.error is None
    assert result.metrics["torch_threads"] == 2
