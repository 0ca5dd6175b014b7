"""A shared MLflow server with MLflow's basic-auth app (``infra/mlflow-server.sh up --auth``): requests
without (or with wrong) credentials are refused, a sweep and ``sync-mlflow`` track with the credentials
MLflow's client reads from the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request

import pytest

try:
    from tests.integration import infra_fixtures as infra
    from tests.integration import it_support as it
except ImportError:  # bare `pytest` (tests/integration/ itself on sys.path)
    import infra_fixtures as infra
    import it_support as it

pytestmark = pytest.mark.integration


def _get(uri: str, path: str, user: str | None = None, password: str | None = None) -> int:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{uri}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_basic_auth_refuses_strangers_and_tracks_a_sweep_with_credentials(tmp_path, monkeypatch):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF: pip install '.[auth]'")
    users = tmp_path / "users"
    users.write_text("admin:Adm1n-password-1\nalice:Al1ce-password-1\n")
    users.chmod(0o600)
    with infra.local_mlflow_server(extra_args=["--auth", "--users", str(users)]) as server:
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(server.uri, "/health") == 200  # liveness stays open
        assert _get(server.uri, search) == 401  # no credentials
        assert _get(server.uri, search, "alice", "wrong") == 401
        assert _get(server.uri, search, "mallory", "Al1ce-password-1") == 401
        assert _get(server.uri, search, "alice", "Al1ce-password-1") == 200  # made from the users file

        root = tmp_path / "results"
        path = it.write_sweep(tmp_path, "authed", uri=server.uri, root=root, base={"epochs": 2})

        # Without credentials: one line before anything runs.
        cli = it.run_cli(tmp_path, "sweep", "run", str(path), log="refused.log")
        assert cli.wait(120) == 2, cli.tail()
        assert "MLFLOW_TRACKING_USERNAME" in cli.output() and "refused" in cli.output(), cli.tail()
        assert not (root / "authed").exists()

        env = it.cli_env(tmp_path, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="Al1ce-password-1")
        cli = it.Cli(["sweep", "run", str(path)], cwd=tmp_path, env=env, log=tmp_path / "driver.log")
        assert cli.wait(400) == 0, cli.tail()
        # (on a loaded machine a request may time out and wait in the tracker's buffer: the sync below says
        # whether anything was finally missing)
        sync = it.Cli(["sync-mlflow", "authed", "--root", str(root)], cwd=tmp_path, env=env,
                      log=tmp_path / "sync.log")
        assert sync.wait(120) == 0, sync.tail()
        assert "0 epochs re-logged" in sync.output(), sync.tail()  # everything was tracked live

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Al1ce-password-1")
        client, exp, parents, children = it.mlflow_runs(server.uri, "authed")
        assert len(parents) == 1 and len(children) == 2
        for run in children:
            assert run.info.status == "FINISHED"
            it.assert_one_point_per_epoch(client, run, 2)
        assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        with pytest.raises(Exception, match="401|Unauthorized|credentials"):
            it.mlflow_runs(server.uri, "authed")
    assert os.stat(users).st_mode & 0o077 == 0  # the script never loosened it

