"""`mixtrain ui`: the URL is printed only once the server answers /health; a busy port is one line and exit
2; SIGTERM to `mixtrain ui` leaves no MLflow process behind; no job runner, one worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from tests.integration.it_support import alive, cmdline, descendants
from tests.orchestrate.conftest import REPO, mixtrain_cmd


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}


def test_busy_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*mixtrain_cmd(), "ui", "--port", str(port), "--uri", f"sqlite:///{tmp_path}/m.db"],
                             capture_output=True, text=True, timeout=60, env=_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 2, out
    err = out.stderr.strip()
    assert "\n" not in err and f"127.0.0.1:{port} is already in use" in err and "--port 0" in err, err
    assert "http://" not in out.stdout  # no URL for a server that is not there
    assert not (tmp_path / "m.db").exists()


def test_ready_when_printed_and_no_orphan_after_sigterm(tmp_path):
    from orchestrate.tracking import SweepTracker

    experiment = SweepTracker(f"sqlite:///{tmp_path}/m.db", "a-sweep").experiment_id
    ui = subprocess.Popen([*mixtrain_cmd(), "ui", "--port", "0", "--uri", f"sqlite:///{tmp_path}/m.db"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                          cwd=tmp_path)
    try:
        line = ui.stdout.readline()  # blocks until `mixtrain ui` prints the URL
        match = re.search(r"at (http://127\.0\.0\.1:(\d+))", line)
        assert match, (line, ui.stderr.read() if ui.poll() is not None else "")
        url = match.group(1)
        link = ui.stdout.readline().strip()  # each sweep's trials, in the model-training chart view
        assert link == (f"a-sweep: {url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
                        "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true&compareRunsMode=CHART"), link
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # answers at once
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10) as r:
            assert r.status == 200  # the tracking store behind it works
        tree = descendants(ui.pid)
        assert tree, "no server process under `mixtrain ui`"
        commands = [" ".join(cmdline(p)) for p in tree]
        assert not any("huey" in c for c in commands), commands  # no job runner
        assert sum("uvicorn" in c or "mlflow.server" in c for c in commands) <= 2, commands  # one worker
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p, cmdline(p)) for p in tree if alive(p)]
        assert not left, f"orphaned after SIGTERM: {left}"
        with socket.socket() as s:  # the port is free again (no listener; TIME_WAIT allowed, as servers bind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(match.group(2))))
    finally:
        if ui.poll() is None:
            ui.kill()
        for p in descendants(ui.pid):
            os.kill(p, signal.SIGKILL)
