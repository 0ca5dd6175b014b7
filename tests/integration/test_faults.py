"""Reliability: faults injected into real runs, and what must hold afterwards (CONTRACT.md: files written
whole, a retried trial never leaves two rows for one (sample, epoch); MLflow one value per step).

* a trial's Ray worker process SIGKILLed mid-epoch: Ray retries it from its last checkpoint;
* a worker node of a 2-node cluster lost (its raylet SIGKILLed): its trial moves to the head and the sweep
  finishes;
* the MLflow server (not PostgreSQL) stopped mid-sweep: training goes on, buffered metrics are flushed when
  it is back; or, down until the sweep ends, ``mixtrain sync-mlflow`` re-logs exactly what is missing;
* a crash during a history write: stray temporaries are invisible to readers, a final file is never partial.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

try:
    from tests.integration import infra_fixtures as infra
    from tests.integration import it_support as it
except ImportError:  # bare `pytest` (tests/integration/ itself on sys.path)
    import infra_fixtures as infra
    import it_support as it

from mixtrain_trainer.history import (
    HistoryWriter,
    load_epochs,
    load_samples,
    load_trial_records,
    sample_files,
)
from orchestrate.spec import expand, load_sweep


def _trial_ids(path: Path) -> list[str]:
    return [t.trial_id for t in expand(load_sweep(path))]


def _records(root: Path, sweep: str) -> dict[str, dict]:
    return {t["trial_id"]: t for t in load_trial_records(root, sweep)}


# ============================================================================ (a) trial process killed
@pytest.mark.integration
def test_killed_trial_process_resumes_from_its_checkpoint(tmp_path):
    epochs = 5
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "results"
    path = it.write_sweep(tmp_path, "killed-worker", uri=uri, root=root, variants=["mixtrain-cutmix"],
                          base={"epochs": epochs, "debug": {"sleep_per_epoch": 2.0}})
    (trial_id,) = _trial_ids(path)
    cli = it.run_cli(tmp_path, "sweep", "run", str(path))
    try:
        # Reports are synchronous: epoch 1 only starts once Tune has taken epoch 0's checkpoint, so with 2
        # epochs written there is a checkpoint to resume from. The trainer sleeps at the start of each epoch:
        # the kill lands inside an epoch, before the last.
        it.wait_for(lambda: 2 <= it.epochs_written(root, "killed-worker", trial_id) <= epochs - 2, 240,
                    "the trial's second epoch", cli, interval=0.1)
        (worker,) = it.wait_for(lambda: it.trial_worker_pids(cli.pid), 30, "the trial's Ray worker", cli)
        title = it.cmdline(worker)[0]
        written = it.epochs_written(root, "killed-worker", trial_id)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        assert written < epochs, "the trial finished before it could be killed"
        code = cli.wait(300)
    finally:
        cli.kill()
    out = cli.output()
    assert code == 0, out[-4000:]
    assert title.startswith("ray::ImplicitFunc"), title
    assert f"{trial_id} crashed" in out and "retrying from its last checkpoint" in out, out[-4000:]
    assert time.monotonic() - killed_at < 200

    record = _records(root, "killed-worker")[trial_id]
    assert record["status"] == "done"
    assert 0 < record["started_epoch"] <= written, record  # resumed from a checkpoint, not restarted
    it.assert_history_complete(root, "killed-worker", [trial_id], epochs)
    client, _, parents, children = it.mlflow_runs(uri, "killed-worker")
    assert len(parents) == 1 and len(children) == 1
    assert children[0].info.status == "FINISHED"
    it.assert_one_point_per_epoch(client, children[0], epochs)


# ============================================================================ (b) worker node lost
def _raylets(state_dir: Path) -> dict[str, tuple[int, str]]:
    """{node name: (raylet pid, node id)} of the cluster whose Ray temp dir is under ``state_dir``."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        args = it.cmdline(int(proc.name))
        if not args or not args[0].endswith("raylet/raylet") or not any(str(state_dir) in a for a in args):
            continue
        opts = dict(a.lstrip("-").split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
        out[opts["node-name"]] = (int(proc.name), opts["node_id"])
    return out


def _node_per_epoch(root: Path, sweep: str, trial_id: str) -> list[tuple[int, str]]:
    result = root / sweep / "ray" / "tune" / trial_id / "result.json"
    try:
        lines = result.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # being written
            continue
        if "epoch" in row:
            rows.append((row["epoch"], row["node_id"]))
    return rows


@pytest.mark.integration
def test_lost_worker_node_trials_move_to_the_head(tmp_path):
    epochs = 6
    sweep = "node-lost"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "results"
    path = it.write_sweep(tmp_path, sweep, uri=uri, root=root,
                          base={"epochs": epochs, "debug": {"sleep_per_epoch": 2.0}})
    trial_ids = _trial_ids(path)
    with infra.local_ray_cluster(workers=1, cpus_per_node=1, head_cpus=1) as cluster:
        raylets = _raylets(cluster.state_dir)
        assert sorted(raylets) == ["mixtrain-head", "mixtrain-worker-1"], raylets
        worker_pid, worker_node = raylets["mixtrain-worker-1"]
        head_node = raylets["mixtrain-head"][1]
        cli = it.run_cli(tmp_path, "sweep", "run", str(path), "--address", cluster.address)
        try:
            def on_worker():
                for t in trial_ids:
                    rows = _node_per_epoch(root, sweep, t)
                    # >= 2 results: epoch 0's checkpoint is registered (reports are synchronous)
                    if 2 <= len(rows) <= epochs - 2 and rows[-1][1] == worker_node:
                        return t
                return None

            moved = it.wait_for(on_worker, 240, "a trial with 2 epochs done on the worker node", cli,
                                interval=0.2)
            killed = it.kill_tree(worker_pid)  # the raylet, its agents and its trial worker: the node is gone
            it.wait_for(lambda: not any(it.alive(p) for p in killed), 30, "the worker node's end")
            code = cli.wait(400)
        finally:
            cli.kill()
        out = cli.output()
        assert code == 0, out[-4000:]
        assert worker_pid not in [p for p, _ in _raylets(cluster.state_dir).values()]

    records = _records(root, sweep)
    assert sorted(records) == sorted(trial_ids), records
    assert all(r["status"] == "done" for r in records.values()), records
    assert f"{moved} crashed" in out, out[-4000:]
    # Its epochs ran on the worker until the node was lost, then on the head (the one node left), from the
    # epoch after its last checkpoint (kept in the shared storage, not on the lost node).
    placed = _node_per_epoch(root, sweep, moved)
    nodes = [n for _, n in placed]
    assert head_node in nodes, placed
    first_on_head = nodes.index(head_node)
    assert first_on_head >= 2 and set(nodes[:first_on_head]) == {worker_node}, placed
    assert set(nodes[first_on_head:]) == {head_node}, placed
    started = records[moved]["started_epoch"]
    assert 0 < started <= first_on_head, records[moved]
    assert [e for e, _ in placed[first_on_head:]] == list(range(started, epochs)), placed
    it.assert_history_complete(root, sweep, trial_ids, epochs)
    client, _, parents, children = it.mlflow_runs(uri, sweep)
    assert len(parents) == 1 and sorted(r.data.tags["trial_id"] for r in children) == sorted(trial_ids)
    for run in children:
        it.assert_one_point_per_epoch(client, run, epochs)


# ============================================================================ (c) MLflow server lost
@pytest.fixture(scope="module")
def mlflow_to_break():
    """An MLflow server of this module's own (the tests stop and restart it)."""
    with infra.local_mlflow_server() as server:
        yield server


def _stop_mlflow(server) -> None:
    """Stops the MLflow server only (PostgreSQL keeps running): the script starts it with setsid, so its pid
    file names the process group of the server and its uvicorn worker."""
    pid = int((server.data_dir / "mlflow.pid").read_text())
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while it.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert not it.alive(pid)
    assert not _answers(server.uri)


def _start_mlflow(server) -> None:
    port = server.uri.rsplit(":", 1)[1]
    env = {**os.environ, "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow")}
    args = ["up", "--port", port, "--data", str(server.data_dir)]
    uri = infra._run_script(infra.MLFLOW_SERVER_SH, args, env, 180)
    assert uri.splitlines()[-1] == server.uri
    assert _answers(server.uri)


def _answers(uri: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _progress(root: Path, sweep: str, trial_ids) -> int:
    return sum(it.epochs_written(root, sweep, t) for t in trial_ids)


def _mlflow_sweep(name: str, tmp_path: Path, uri: str, epochs: int):
    root = tmp_path / "results"
    # 3 trials, 2 at a time: the third starts (and needs its MLflow run) while the server may be down.
    path = it.write_sweep(tmp_path, name, uri=uri, root=root, max_concurrent=2,
                          variants=["baseline", "mixtrain-cutmix", "mixtrain-mixup"],
                          base={"epochs": epochs, "debug": {"sleep_per_epoch": 1.5}})
    return path, root, _trial_ids(path)


@pytest.mark.integration
def test_mlflow_lost_mid_sweep_buffers_and_flushes(mlflow_to_break, tmp_path):
    # 10 epochs: the sweep must outlast the restart below (a loaded machine takes 20-30 s to start MLflow)
    server, epochs, sweep = mlflow_to_break, 10, "mlflow-blip"
    path, root, trial_ids = _mlflow_sweep(sweep, tmp_path, server.uri, epochs)
    cli = it.run_cli(tmp_path, "sweep", "run", str(path))
    try:
        it.wait_for(lambda: _progress(root, sweep, trial_ids) >= 1, 240, "the first epoch", cli, interval=0.2)
        _stop_mlflow(server)
        stopped, at_stop = time.monotonic(), _progress(root, sweep, trial_ids)
        # Down for a few epochs: the trials must keep training meanwhile (the driver is not stalled).
        it.wait_for(lambda: _progress(root, sweep, trial_ids) >= at_stop + 4, 120,
                    "4 more epochs while MLflow is down", cli)
        assert time.monotonic() - stopped < 60
        _start_mlflow(server)
        code = cli.wait(300)
    finally:
        cli.kill()
        if not _answers(server.uri):
            _start_mlflow(server)
    out = cli.output()
    assert code == 0, out[-4000:]
    assert "sync-mlflow" not in out, out[-4000:]  # everything was flushed once the server was back
    assert all(r["status"] == "done" for r in _records(root, sweep).values())
    client, _, parents, children = it.mlflow_runs(server.uri, sweep)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trial_ids)
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "done"
        it.assert_one_point_per_epoch(client, run, epochs)
    it.assert_history_complete(root, sweep, trial_ids, epochs)


def _tracked(uri: str, sweep: str) -> bool:
    """Whether MLflow already holds a trial run of the sweep."""
    try:
        return bool(it.mlflow_runs(uri, sweep)[3])
    except Exception:  # noqa: BLE001 - no experiment yet, or a slow server: not yet
        return False


def _sync(tmp_path: Path, args: list[str]) -> tuple[int, str]:
    cli = it.run_cli(tmp_path, *args, log=f"sync-{time.monotonic_ns()}.log")
    code = cli.wait(120)
    return code, cli.output()


def _relogged(out: str) -> int:
    match = re.search(r"(\d+) epochs re-logged", out)
    assert match, out[-2000:]
    return int(match.group(1))


@pytest.mark.integration
def test_mlflow_down_until_the_end_then_sync(mlflow_to_break, tmp_path):
    server, epochs, sweep = mlflow_to_break, 4, "mlflow-gone"
    path, root, trial_ids = _mlflow_sweep(sweep, tmp_path, server.uri, epochs)
    cli = it.run_cli(tmp_path, "sweep", "run", str(path))
    try:
        it.wait_for(lambda: _progress(root, sweep, trial_ids) >= 1, 240, "the first epoch", cli, interval=0.2)
        # Lost once the sweep is tracked (on a loaded machine the driver may log its first result after the
        # first epoch file appears): the server then misses the rest of the sweep.
        it.wait_for(lambda: _tracked(server.uri, sweep), 120, "the sweep's first MLflow run", cli, interval=0.2)
        _stop_mlflow(server)
        code = cli.wait(300)
        _start_mlflow(server)
    finally:
        cli.kill()
        if not _answers(server.uri):
            _start_mlflow(server)
    out = cli.output()
    assert code == 0, out[-4000:]
    hint = re.search(r"`mixtrain (sync-mlflow [^`]+)`", out)
    assert hint and hint.group(1) == f"sync-mlflow {sweep} --root {root}", out[-4000:]  # a command that works
    assert all(r["status"] == "done" for r in _records(root, sweep).values())

    def logged() -> dict[str, list[int]]:
        client, _, _, children = it.mlflow_runs(server.uri, sweep)
        history = client.get_metric_history
        return {r.data.tags["trial_id"]: sorted(m.step for m in history(r.info.run_id, "test_acc"))
                for r in children}

    before = logged()
    missing = len(trial_ids) * epochs - sum(len(s) for s in before.values())
    assert missing > 0, before  # the server really missed part of the sweep

    code, out = _sync(tmp_path, hint.group(1).split())
    assert code == 0, out[-3000:]
    assert _relogged(out) == missing
    client, _, parents, children = it.mlflow_runs(server.uri, sweep)
    assert len(parents) == 1
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trial_ids)
    epochs_table = load_epochs(root, sweep)
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "done"
        it.assert_one_point_per_epoch(client, run, epochs)
        mine = epochs_table[epochs_table.trial == run.data.tags["trial_id"]]
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert {m.step: m.value for m in history} == pytest.approx(dict(zip(mine.epoch, mine.test_acc)))

    code, out = _sync(tmp_path, hint.group(1).split())  # idempotent
    assert code == 0 and _relogged(out) == 0, out[-3000:]
    client, _, _, children = it.mlflow_runs(server.uri, sweep)
    assert len(children) == len(trial_ids)
    for run in children:
        it.assert_one_point_per_epoch(client, run, epochs)


# ============================================================================ (d) partial files
def _columns(n: int, epoch: int) -> dict:
    return {
        "sample_id": pa.array(range(n), pa.int64()), "loss": pa.array([0.5 + epoch] * n, pa.float32()),
        "correct": pa.array([True] * n), "mixed": pa.array([False] * n),
        "partner_id": pa.array([-1] * n, pa.int64()),
        "weight": pa.array([1.0] * n, pa.float32()), "region": pa.array([0] * n, pa.int8()),
        "mix_next": pa.array([False] * n), "mix_path": pa.array([""] * n), "skipped": pa.array([False] * n),
    }


def _epoch_row(epoch: int) -> dict:
    return {"epoch": epoch, "n_samples": 10, "n_inputs": 10, "train_loss": 1.0, "test_acc": 0.1 * epoch}


def test_readers_ignore_stray_temporaries(tmp_path):
    writer = HistoryWriter(tmp_path, "partial", "t0")
    for epoch in range(2):
        writer.write_samples(epoch, _columns(10, epoch))
    writer.write_epochs([_epoch_row(0), _epoch_row(1)])
    rows_before = len(load_samples(tmp_path, "partial")), len(load_epochs(tmp_path, "partial"))
    files_before = sample_files(tmp_path, "partial")

    # What a crash mid-write leaves: the writer's temporary (garbage, or the first half of a real file).
    complete = (writer.samples_dir / "epoch=1" / "part-0.parquet").read_bytes()
    (writer.samples_dir / "epoch=1" / ".part-0.parquet.1234.tmp").write_bytes(b"\x00garbage" * 100)
    (writer.samples_dir / "epoch=0" / ".part-0.parquet.5678.tmp").write_bytes(complete[: len(complete) // 2])
    (writer.samples_dir / "epoch=2").mkdir()  # a crash before the epoch's first file was renamed in
    (writer.samples_dir / "epoch=2" / ".part-0.parquet.999.tmp").write_bytes(complete[:100])
    (writer.epochs_path.parent / ".part-0.parquet.4321.tmp").write_bytes(b"PAR1 half")

    rows = len(load_samples(tmp_path, "partial")), len(load_epochs(tmp_path, "partial"))
    assert rows == rows_before == (20, 2)
    assert sample_files(tmp_path, "partial") == files_before
    assert load_samples(tmp_path, "partial", epochs=[2]).empty
    assert sorted(load_samples(tmp_path, "partial").epoch.unique()) == [0, 1]


def test_history_writes_never_expose_a_partial_file(tmp_path, monkeypatch):
    writer = HistoryWriter(tmp_path, "partial", "t0")
    writer.write_samples(0, _columns(10, 0))
    writer.write_epochs([_epoch_row(0)])
    old_samples = (writer.samples_dir / "epoch=0" / "part-0.parquet").read_bytes()
    old_epochs = writer.epochs_path.read_bytes()

    real_write = pq.write_table
    attempts = []

    def dies_half_way(table, where, *args, **kwargs):
        buffer = io.BytesIO()
        real_write(table, buffer, *args, **kwargs)
        data = buffer.getvalue()
        Path(where).write_bytes(data[: len(data) // 2])  # half the file is on disk...
        attempts.append(Path(where))
        raise OSError(28, "No space left on device")  # ...when the writer dies

    monkeypatch.setattr(pq, "write_table", dies_half_way)
    with pytest.raises(OSError):
        writer.write_samples(1, _columns(10, 1))  # a new epoch
    with pytest.raises(OSError):
        writer.write_samples(0, _columns(10, 5))  # a rewrite of an existing one (a resumed trial)
    with pytest.raises(OSError):
        writer.write_epochs([_epoch_row(0), _epoch_row(1)])
    monkeypatch.setattr(pq, "write_table", real_write)

    assert len(attempts) == 3 and all(p.name.startswith(".") for p in attempts), attempts
    assert not (writer.samples_dir / "epoch=1" / "part-0.parquet").exists()
    assert (writer.samples_dir / "epoch=0" / "part-0.parquet").read_bytes() == old_samples
    assert writer.epochs_path.read_bytes() == old_epochs
    samples = load_samples(tmp_path, "partial")
    assert samples.epoch.unique().tolist() == [0] and len(samples) == 10
    assert samples.loss.tolist() == pytest.approx([0.5] * 10)  # the previous complete version
    assert load_epochs(tmp_path, "partial").epoch.tolist() == [0]

    writer.write_samples(1, _columns(10, 1))  # the retry after the crash: complete, and the leftovers ignored
    assert len(load_samples(tmp_path, "partial")) == 20
