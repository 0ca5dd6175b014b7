"""Pytest fixtures that start real services with the scripts in ``infra/``.

* ``ray_cluster`` (session scope): ``infra/local-cluster.sh up --workers 1`` -- a Ray head
  (1 CPU) plus one worker node (1 CPU, custom resource ``mixtrain_worker``) on 127.0.0.1,
  token auth on. Yields the address string ``"127.0.0.1:PORT"``; ``down`` afterwards.
  It also sets ``RAY_AUTH_MODE=token`` in ``os.environ`` for the session, so that
  ``ray.init(address=...)`` in the test process (and subprocesses) can connect.
* ``mlflow_server`` (session scope): ``infra/mlflow-server.sh up`` on a free port with a
  temporary data dir (PostgreSQL backend, served artifacts). Yields the tracking URI
  ``"http://127.0.0.1:PORT"``; ``down --purge`` afterwards.

Both skip the test when the needed executables are missing (``ray``; ``mlflow`` and
PostgreSQL's ``initdb``/``pg_ctl``), and fail with the script's stderr otherwise.
For other shapes (more workers, a cluster a test may break) use the context managers
``local_ray_cluster(workers=2)`` / ``local_mlflow_server()``, which yield handles with the
address/URI and the state directory.

Use from ``tests/integration/conftest.py``::

    try:  # repository root on sys.path (python -m pytest, or rootdir conftest.py)
        from tests.integration.infra_fixtures import mlflow_server, ray_cluster  # noqa: F401
    except ImportError:  # bare `pytest`: rootdir-less prepend import puts tests/integration/ on sys.path
        from infra_fixtures import mlflow_server, ray_cluster  # noqa: F401

This module imports nothing but the standard library and pytest, so importing it costs
nothing when the fixtures are not used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
LOCAL_CLUSTER_SH = INFRA_DIR / "local-cluster.sh"
MLFLOW_SERVER_SH = INFRA_DIR / "mlflow-server.sh"

UP_TIMEOUT_S = 240
DOWN_TIMEOUT_S = 90

__all__ = [
    "MlflowServerHandle",
    "RayClusterHandle",
    "free_port",
    "local_mlflow_server",
    "local_ray_cluster",
    "mlflow_server",
    "ray_cluster",
]


class InfraScriptError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str, env_var: str) -> str | None:
    """The executable: $ENV_VAR, else next to this interpreter (venv), else on PATH."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def _postgres_available() -> bool:
    if os.environ.get("PG_BIN"):
        return (Path(os.environ["PG_BIN"]) / "initdb").exists()
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return True
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _run_script(script: Path, args: list[str], env: dict[str, str], timeout: float) -> str:
    """Runs an infra script; returns its stdout (stripped). Raises InfraScriptError with
    the script's stderr on a non-zero exit or a timeout."""
    cmd = ["bash", str(script), *args]
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise InfraScriptError(
            f"`{' '.join(cmd[1:])}` timed out after {timeout:.0f}s\n--- stderr ---\n{err}"
        ) from None
    if proc.returncode != 0:
        raise InfraScriptError(
            f"`{' '.join(cmd[1:])}` exited {proc.returncode}\n--- stderr ---\n{proc.stderr}"
            f"\n--- stdout ---\n{proc.stdout}"
        )
    return proc.stdout.strip()


def _last_line(stdout: str) -> str:
    return stdout.splitlines()[-1].strip() if stdout else ""


@dataclass
class RayClusterHandle:
    address: str  # "127.0.0.1:PORT"
    state_dir: Path  # MIXTRAIN_CLUSTER_STATE of this cluster (address, env, logs/, ray/)
    num_nodes: int
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def status(self) -> str:
        return _run_script(LOCAL_CLUSTER_SH, ["status"], self.env, 60)


@dataclass
class MlflowServerHandle:
    uri: str  # "http://127.0.0.1:PORT"
    data_dir: Path


def _enable_ray_token_auth_in_process() -> None:
    """Drivers must run with RAY_AUTH_MODE=token. Ray reads it into its config when it is
    imported, so refresh that config if ray is already imported."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:
        try:
            from ray._raylet import Config  # type: ignore[attr-defined]

            Config.initialize("")
        except Exception:  # noqa: BLE001 -- internal API; best effort
            pass


@contextlib.contextmanager
def local_ray_cluster(
    workers: int = 1, cpus_per_node: int = 1, head_cpus: int | None = None, object_store_mb: int = 512
) -> Iterator[RayClusterHandle]:
    """A fresh Ray cluster (head + `workers` worker nodes) in its own state dir."""
    ray_bin = _tool("ray", "RAY_BIN")
    if not ray_bin:
        pytest.skip("no `ray` executable (pip install 'ray[tune]')")
    # short path: Ray's unix sockets live below it
    state_dir = Path(tempfile.mkdtemp(prefix="mxc-", dir="/tmp"))
    port = free_port()
    env = {**os.environ, "MIXTRAIN_CLUSTER_STATE": str(state_dir), "RAY_BIN": ray_bin}
    args = [
        "up",
        "--workers", str(workers),
        "--cpus-per-node", str(cpus_per_node),
        "--head-cpus", str(cpus_per_node if head_cpus is None else head_cpus),
        "--port", str(port),
        "--object-store-mb", str(object_store_mb),
        "--timeout", "120",
    ]  # fmt: skip
    try:
        error = None
        try:
            address = _last_line(_run_script(LOCAL_CLUSTER_SH, args, env, UP_TIMEOUT_S))
        except InfraScriptError as exc:
            error = str(exc)
        if error is not None:
            pytest.fail(f"local Ray cluster did not come up:\n{error}", pytrace=False)
        old_mode = os.environ.get("RAY_AUTH_MODE")
        _enable_ray_token_auth_in_process()
        try:
            yield RayClusterHandle(address=address, state_dir=state_dir, num_nodes=workers + 1, env=env)
        finally:
            if old_mode is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = old_mode
    finally:
        try:
            _run_script(LOCAL_CLUSTER_SH, ["down"], env, DOWN_TIMEOUT_S)
        except InfraScriptError as exc:  # never mask the test's own error
            sys.stderr.write(f"warning: local-cluster.sh down failed:\n{exc}\n")
        shutil.rmtree(state_dir, ignore_errors=True)


@contextlib.contextmanager
def local_mlflow_server(port: int | None = None, extra_args: list[str] | None = None
                        ) -> Iterator[MlflowServerHandle]:
    """A fresh MLflow server + PostgreSQL in a temporary data dir, purged afterwards (``extra_args``:
    more options for ``mlflow-server.sh up``, e.g. ``["--auth", "--users", FILE]``)."""
    mlflow_bin = _tool("mlflow", "MLFLOW_BIN")
    if not mlflow_bin:
        pytest.skip("no `mlflow` executable (pip install mlflow)")
    if not _postgres_available():
        pytest.skip("PostgreSQL server binaries missing (apt-get install -y postgresql)")
    # under /tmp and world-searchable: PostgreSQL runs as the `postgres` user when root
    base = Path(tempfile.mkdtemp(prefix="mxm-", dir="/tmp"))
    base.chmod(0o755)
    data_dir = base / "mlflow"
    env = {**os.environ, "MLFLOW_BIN": mlflow_bin}
    port = port or free_port()
    try:
        error = None
        try:
            out = _run_script(
                MLFLOW_SERVER_SH, ["up", "--port", str(port), "--data", str(data_dir), *(extra_args or [])], env,
                UP_TIMEOUT_S,
            )
        except InfraScriptError as exc:
            error = str(exc)
        if error is not None:
            pytest.fail(f"MLflow server did not come up:\n{error}", pytrace=False)
        yield MlflowServerHandle(uri=_last_line(out), data_dir=data_dir)
    finally:
        try:
            _run_script(MLFLOW_SERVER_SH, ["down", "--data", str(data_dir), "--purge"], env, DOWN_TIMEOUT_S)
        except InfraScriptError as exc:
            sys.stderr.write(f"warning: mlflow-server.sh down failed:\n{exc}\n")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Address ("127.0.0.1:PORT") of a 2-node local Ray cluster (head + 1 worker)."""
    with local_ray_cluster(workers=1) as cluster:
        yield cluster.address


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """Tracking URI ("http://127.0.0.1:PORT") of an MLflow server on PostgreSQL."""
    with local_mlflow_server() as server:
        yield server.uri
