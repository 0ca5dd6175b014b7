"""Real deployment: a sweep on a 2-node Ray cluster started by ``infra/local-cluster.sh``, tracked to an
MLflow server on PostgreSQL started by ``infra/mlflow-server.sh``, and browsed in headless Chromium.

One sweep (module fixture ``cluster_sweep``) feeds the three tests: placement across nodes, what MLflow
holds, and what its UI shows.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    from tests.integration import it_support as it
except ImportError:  # bare `pytest` (tests/integration/ itself on sys.path)
    import it_support as it

pytestmark = pytest.mark.integration

SWEEP = "cluster-smoke"
EPOCHS = 3
SCREENSHOT = it.ARTIFACTS / "mlflow-ui-runs.png"


def _cluster_nodes(address: str) -> dict[str, str]:
    """{node id: node name} of the alive nodes, as Ray itself reports them (a fresh token-auth driver)."""
    code = ("import json, logging, ray\n"
            f"ray.init(address={address!r}, logging_level=logging.ERROR, log_to_driver=False)\n"
            "print(json.dumps({n['NodeID']: n.get('NodeName', '') for n in ray.nodes() if n['Alive']}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**it.cli_env(Path(tempfile.gettempdir())), "RAY_AUTH_MODE": "token"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster_sweep(ray_cluster, mlflow_server, tmp_path_factory):
    """Runs a 2-trial sweep with `mixtrain sweep run --address` on the cluster, tracked to the server."""
    from orchestrate.spec import expand, load_sweep

    tmp = tmp_path_factory.mktemp("cluster")
    root = tmp / "results"
    # 2 concurrent 1-CPU trials on a head with 1 CPU and a worker with 1 CPU: one trial per node.
    path = it.write_sweep(tmp, SWEEP, uri=mlflow_server, root=root,
                          base={"epochs": EPOCHS, "debug": {"sleep_per_epoch": 1.0}})
    nodes = _cluster_nodes(ray_cluster)
    # No RAY_AUTH_MODE in the driver's environment: the CLI must turn token auth on itself for --address.
    cli = it.run_cli(tmp, "sweep", "run", str(path), "--address", ray_cluster)
    code = cli.wait(300)
    assert code == 0, cli.tail()
    trials = [t.trial_id for t in expand(load_sweep(path))]
    return {"root": root, "uri": mlflow_server, "trials": trials, "nodes": nodes, "output": cli.output(),
            "address": ray_cluster}


def test_trials_ran_on_both_nodes(cluster_sweep):
    """Every trial reports the node it ran on; the two trials ran on the cluster's two different nodes."""
    nodes = cluster_sweep["nodes"]
    assert len(nodes) == 2 and sorted(nodes.values()) == ["mixtrain-head", "mixtrain-worker-1"], nodes
    root, trials = cluster_sweep["root"], cluster_sweep["trials"]
    placed = {}
    for trial_id in trials:
        result = root / SWEEP / "ray" / "tune" / trial_id / "result.json"
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        assert [r["epoch"] for r in rows] == list(range(EPOCHS)), (trial_id, rows)
        ids = {r["node_id"] for r in rows}
        assert len(ids) == 1, f"{trial_id} moved between nodes without a failure: {ids}"
        placed[trial_id] = ids.pop()
    assert set(placed.values()) <= set(nodes), f"node ids {placed} are not the cluster's {nodes}"
    assert len(set(placed.values())) == 2, f"both trials ran on one node: {placed}"
    it.assert_history_complete(root, SWEEP, trials, EPOCHS)


def test_mlflow_server_on_postgres_has_the_sweep(cluster_sweep):
    """One parent run, one nested run per trial (tags variant/sweep/trial_id), each epoch once at its step."""
    from mixtrain_trainer.history import load_epochs

    client, exp, parents, children = it.mlflow_runs(cluster_sweep["uri"], SWEEP)
    assert len(parents) == 1 and parents[0].info.run_name == SWEEP
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(cluster_sweep["trials"])
    epochs = load_epochs(cluster_sweep["root"], SWEEP)
    for run in children:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["sweep"] == SWEEP and tags["variant"] in ("baseline", "mixtrain-cutmix")
        assert tags["trial_id"].startswith(tags["variant"])
        assert run.info.status == "FINISHED" and tags["status"] == "done"
        assert run.data.params["epochs"] == str(EPOCHS) and run.data.params["model"] == "resnet8"
        it.assert_one_point_per_epoch(client, run, EPOCHS)
        history = client.get_metric_history(run.info.run_id, "test_acc")
        mine = epochs[epochs.trial == tags["trial_id"]]
        assert {m.step: m.value for m in history} == pytest.approx(dict(zip(mine.epoch, mine.test_acc)))
        assert run.data.metrics["final_test_acc"] == pytest.approx(mine.test_acc.iloc[-1])


def _chromium(binary: str, *args: str, timeout: float = 120, budget_ms: int = 15000) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="mxchrome-") as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args],
            capture_output=True, timeout=timeout, check=False,
        )


def _page_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def _dump_until(binary: str, url: str, wanted: list[str], attempts: int = 3, budget_ms: int = 15000) -> str:
    """The rendered page's text; retried while the React app has not shown every wanted string yet."""
    text = ""
    for _ in range(attempts):
        done = _chromium(binary, "--dump-dom", url, timeout=240, budget_ms=budget_ms)
        text = _page_text(done.stdout.decode(errors="replace"))
        if all(w in text for w in wanted):
            return text
    return text


def test_mlflow_ui_in_headless_chromium_lists_the_runs(cluster_sweep):
    """The MLflow UI, rendered by a real browser, lists the sweep's runs; a screenshot is kept."""
    binary = it.chromium_binary()
    if binary is None:
        pytest.skip("no Chromium (apt-get install -y chromium) for the MLflow UI test")
    from PIL import Image

    client, exp, parents, children = it.mlflow_runs(cluster_sweep["uri"], SWEEP)
    base = f"{cluster_sweep['uri']}/#/experiments/{exp.experiment_id}/runs"

    # As a user opens it: nested trial runs are folded under the sweep's parent run.
    text = _dump_until(binary, base, [SWEEP, "matching runs"])
    assert SWEEP in text and "Training runs" in text, text[:3000]
    assert re.search(rf"\b{len(children) + 1} matching runs", text), text[:3000]

    # Sorted by run name the table is flat: every trial's run is a row.
    flat = base + "?orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    names = [r.info.run_name for r in children]
    text = _dump_until(binary, flat, [*names, SWEEP])
    for run in children:
        assert run.info.run_name in text, f"run {run.info.run_name!r} not in the runs table: {text[:3000]}"
        assert run.data.tags["trial_id"][-8:] in run.info.run_name

    it.ARTIFACTS.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    shot = _chromium(binary, f"--screenshot={SCREENSHOT}", "--window-size=1400,900", "--hide-scrollbars",
                     flat)
    assert SCREENSHOT.is_file(), shot.stderr.decode(errors="replace")[-2000:]
    with Image.open(SCREENSHOT) as image:
        assert image.format == "PNG" and image.size == (1400, 900)
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 16, f"blank screenshot: {len(colours)} colours"


def test_mlflow_ui_opens_as_model_training_with_every_trials_charts(cluster_sweep):
    """The experiment is marked as model training, and the page `mixtrain ui` links to shows the runs table
    and the metric charts of every trial at once (not MLflow's GenAI views, not folded under the parent);
    a screenshot is kept (test-artifacts/mlflow-ui-charts.png)."""
    binary = it.chromium_binary()
    if binary is None:
        pytest.skip("no Chromium (apt-get install -y chromium) for the MLflow UI test")
    from PIL import Image

    from orchestrate.tracking import EXPERIMENT_KIND_TAG, runs_url

    client, exp, parents, children = it.mlflow_runs(cluster_sweep["uri"], SWEEP)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    url = runs_url(cluster_sweep["uri"], exp.experiment_id)
    names = [r.info.run_name for r in children]
    text = _dump_until(binary, url, [*names, "Model metrics", "Step"], budget_ms=60000)  # charts load late
    assert "Model training" in text and "Evaluation runs" not in text, text[:3000]  # not the GenAI side bar
    for name in names:
        assert name in text, f"{name!r} not on the page: {text[:3000]}"
    charts_count = re.search(r"Model metrics \((\d+)\)", text)
    assert charts_count and int(charts_count.group(1)) >= 10, text[:3000]  # a chart per logged metric
    # the first chart is drawn (the others render as they scroll into view), one curve per trial, unfolded
    first = re.search(r"Step (.*?) System metrics", text)
    assert first and all(f"{name} (" in first.group(1) for name in names), text[:3000]

    charts = it.ARTIFACTS / "mlflow-ui-charts.png"
    it.ARTIFACTS.mkdir(exist_ok=True)
    charts.unlink(missing_ok=True)
    # the charts load their data after the page: a longer (virtual) wait than the table needs
    shot = _chromium(binary, f"--screenshot={charts}", "--window-size=1400,900", "--hide-scrollbars", url,
                     timeout=240, budget_ms=60000)
    assert charts.is_file(), shot.stderr.decode(errors="replace")[-2000:]
    with Image.open(charts) as image:
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 64, "a screenshot without charts"
