"""`mixtrain report NAME --figures` on a real smoke sweep: every figure is a PNG in the report folder and an
artifact of the sweep's parent MLflow run."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrate.cli import main
from orchestrate.figures import FIGURES


def test_report_figures_on_smoke_sweep(ray_local, write_sweep, capsys):
    path, uri, root = write_sweep("figs", base={"epochs": 3})
    assert main(["sweep", "run", str(path), "--smoke-test", "--quiet"]) == 0
    assert main(["report", "figs", "--root", str(root), "--figures"]) == 0
    folder = root / "figs" / "report"
    for name in FIGURES:
        with Image.open(folder / name) as im:
            im.verify()
        with Image.open(folder / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200, name
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("figs")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mixtrain.sweep_parent") == "true"]
    logged = {a.path.split("/")[-1] for a in client.list_artifacts(parent[0].info.run_id, "report")}
    assert set(FIGURES) <= logged


def test_figures_without_history_is_one_line(write_sweep, tmp_path, capsys):
    import json

    root = tmp_path / "results"
    (root / "empty").mkdir(parents=True)
    (root / "empty" / "sweep.json").write_text(json.dumps({"spec": {"tracking": {"uri": None}}}))
    assert main(["report", "empty", "--root", str(root), "--figures", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--figures" in err[0] and "no sample history" in err[0]
