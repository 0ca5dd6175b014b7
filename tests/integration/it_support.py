"""Helpers of the integration tests: sweep files, the ``mixtrain`` CLI in a subprocess (its own process
group, output to a log file), process trees from /proc, and MLflow/history checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

# Metrics every epoch of every trial logs (the others, e.g. l_mid, are absent while undefined).
ALWAYS_LOGGED = ("train_loss", "train_acc", "test_acc", "test_top5", "test_loss", "epoch_seconds", "n_inputs",
                 "frac_mixed", "lr", "total_train_seconds")


def mixtrain_cmd() -> list[str]:
    """The installed console script (as users run it), else the module."""
    script = Path(sys.executable).parent / "mixtrain"
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrate.cli"]


def write_sweep(folder: Path, name: str, *, uri: str, root: Path, **fields) -> Path:
    """A small synthetic sweep file; ``base`` entries are merged, other keys replace."""
    spec = {
        "name": name,
        "base": {
            "dataset": {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 64, "image_size": 16},
            "model": "resnet8", "model_width": 4, "epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.05},
        },
        "variants": ["baseline", "mixtrain-cutmix"],
        "resources": {"cpu": 1},
        "max_failures": 2,
        "tracking": {"uri": uri},
        "storage": {"root": str(root)},
    }
    for key, value in fields.items():
        if key == "base":
            spec["base"].update(value)
        else:
            spec[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The driver's environment: nothing Ray- or MLflow-specific inherited from the test process (the CLI
    must set token auth itself for --address, and use the sweep file's tracking URI)."""
    dropped = ("RAY_AUTH_MODE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("MLFLOW_HTTP")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", MIXTRAIN_CACHE=str(tmp_path / "cache"),
               RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


class Cli:
    """``mixtrain ...`` in its own session; stdout+stderr go to a file (a pipe could fill and block it)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.log = log
        self.started = time.monotonic()
        self._out = open(log, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen([*mixtrain_cmd(), *args], cwd=cwd, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 4000) -> str:
        return self.output()[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.pid)
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._out.close()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"`mixtrain` did not finish within {timeout:.0f}s; its output:\n{self.tail()}",
                        pytrace=False)
        self._out.close()
        return code


def run_cli(tmp_path: Path, *args: str, log: str = "driver.log") -> Cli:
    """``mixtrain ARGS`` started in ``tmp_path`` with the drivers' environment."""
    return Cli(list(args), cwd=tmp_path, env=cli_env(tmp_path), log=tmp_path / log)


def wait_for(predicate, timeout: float, what: str, cli: Cli | None = None, interval: float = 0.3):
    """Polls ``predicate`` until it returns something truthy (returned); fails with the driver's output."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if cli is not None and not cli.alive():
            pytest.fail(f"the driver exited ({cli.proc.returncode}) while waiting for {what}:\n{cli.tail()}",
                        pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}"
                        + (f"; driver output:\n{cli.tail()}" if cli else ""), pytrace=False)
        time.sleep(interval)


# ------------------------------------------------------------------ processes (/proc; no psutil here)
def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _parents() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            out[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for p, pp in parents.items():
        children.setdefault(pp, []).append(p)
    out, queue = [], [pid]
    while queue:
        for c in children.get(queue.pop(), []):
            out.append(c)
            queue.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signals ``pid`` and everything below it (children first collected, then all signalled)."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, sig)
    return pids


def trial_worker_pids(ancestor: int) -> list[int]:
    """Ray worker processes below ``ancestor`` running a trial (process title ``ray::ImplicitFunc.train``)."""
    return [p for p in descendants(ancestor) if (cmdline(p) or [""])[0].startswith("ray::ImplicitFunc")]


# ------------------------------------------------------------------ history and MLflow
def epochs_written(root: Path, sweep: str, trial_id: str) -> int:
    path = root / sweep / "history" / "epochs" / f"trial={trial_id}" / "part-0.parquet"
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return 0


def mlflow_runs(uri: str, sweep: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    assert exp is not None, f"no MLflow experiment {sweep!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixtrain.sweep_parent") == "true"]
    children = [r for r in runs if "trial_id" in r.data.tags]
    return client, exp, parents, children


def metric_steps(client, run) -> dict[str, list[int]]:
    history = client.get_metric_history
    return {key: sorted(m.step for m in history(run.info.run_id, key)) for key in run.data.metrics}


def assert_one_point_per_epoch(client, run, epochs: int) -> None:
    """Every epoch metric has exactly one value at each step 0..epochs-1: no gaps, no duplicates."""
    steps = metric_steps(client, run)
    name = run.data.tags.get("trial_id", run.info.run_id)
    for key in ALWAYS_LOGGED:
        assert steps.get(key) == list(range(epochs)), f"{name}: {key} steps {steps.get(key)}"
    for key, values in steps.items():
        dupes = [s for s, n in Counter(values).items() if n > 1]
        assert not dupes, f"{name}: {key} has several values at steps {dupes}"
        assert set(values) <= set(range(epochs)), f"{name}: {key} steps {values}"


def assert_history_complete(root: Path, sweep: str, trial_ids, epochs: int, n_train: int = 128) -> None:
    from mixtrain_trainer.history import load_epochs, load_samples

    samples = load_samples(root, sweep, columns=["sample_id"])
    assert not samples.duplicated(["trial", "epoch", "sample_id"]).any(), "two rows for one (sample, epoch)"
    per = samples.groupby(["trial", "epoch"]).size()
    assert sorted(per.index.get_level_values(0).unique()) == sorted(trial_ids)
    assert set(per.values) == {n_train} and len(per) == epochs * len(trial_ids), per.to_dict()
    table = load_epochs(root, sweep)
    for trial_id in trial_ids:
        assert table[table.trial == trial_id].epoch.tolist() == list(range(epochs)), trial_id


def chromium_binary() -> str | None:
    if os.environ.get("MIXTRAIN_CHROMIUM"):  # an explicit choice: that one or none
        return shutil.which(os.environ["MIXTRAIN_CHROMIUM"])
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None
