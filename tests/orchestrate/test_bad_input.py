"""Bad input gets one line naming the problem and the fix, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from orchestrate.cli import main

GOOD_BASE = {"dataset": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32, "image_size": 16},
             "model": "resnet8", "epochs": 1}


def _sweep(**changes):
    spec = {"name": "bad", "base": dict(GOOD_BASE), "variants": ["baseline"]}
    for key, value in changes.items():
        if value is _DROP:
            spec.pop(key)
        elif key == "base":
            spec["base"] = {**spec["base"], **value}
        else:
            spec[key] = value
    return yaml.safe_dump(spec)


_DROP = object()


def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _parquet_root(tmp_path: Path, label: bool = True, sizes=(8, 8)) -> str:
    root = tmp_path / "pq"
    root.mkdir()
    for split in ("train", "test"):
        cols = {"image": [_png(s) for s in sizes]}
        if label:
            cols["label"] = pa.array([0, 1], pa.int64())
        pq.write_table(pa.table(cols), root / f"{split}.parquet")
    return str(root)


# (case id, sweep file text or callable(tmp_path) -> text, words the message must contain)
SWEEP_CASES = [
    ("bad-yaml", "name: bad\nvariants: [baseline\n", ["invalid YAML", "line"]),
    ("not-a-mapping", "- baseline\n", ["expected a mapping"]),
    ("missing-name", _sweep(name=_DROP), ["name", "missing"]),
    ("missing-variants", _sweep(variants=_DROP), ["variants", "missing"]),
    ("empty-variants", _sweep(variants=[]), ["variants"]),
    ("unknown-top-key", _sweep(epochs=3), ["epochs", "unknown key", "under base:", "base: {epochs: 3}"]),
    ("top-key-typo", _sweep(variant="baseline"), ["variant", "unknown key", "did you mean 'variants'?"]),
    ("unknown-variant", _sweep(variants=["mixtrain-cutmx"]),
     ["mixtrain-cutmx", "unknown variant", "did you mean 'mixtrain-cutmix'?"]),
    ("unknown-model-hint", _sweep(base={"model": "resnet188"}), ["resnet188", "did you mean 'resnet18'?"]),
    ("misspelt-base-key", _sweep(base={"epoch": 3}), ["epoch", "unknown key", "did you mean 'epochs'?"]),
    ("misspelt-nested-key", _sweep(base={"optimizer": {"weight_decy": 0.1}}),
     ["optimizer.weight_decy", "did you mean 'weight_decay'?"]),
    ("unknown-model", _sweep(base={"model": "resnet99"}), ["model", "resnet99"]),
    ("unknown-dataset", _sweep(base={"dataset": {"name": "mnist"}}), ["dataset.name", "mnist"]),
    ("wrong-type", _sweep(base={"epochs": "ten"}), ["epochs", "integer", "(got 'ten')"]),
    ("negative-epochs", _sweep(base={"epochs": -3}), ["epochs", "greater than 0"]),
    ("batch-size-0", _sweep(base={"batch_size": 0}), ["batch_size", "greater than 0"]),
    ("k-0", _sweep(base={"k": 0}), ["k", "greater than or equal to 1"]),
    ("gpu-1.5", _sweep(resources={"gpu": 1.5}), ["resources.gpu", "fraction"]),
    ("cpu-0", _sweep(resources={"cpu": 0}), ["resources.cpu", "greater than 0"]),
    ("empty-grid-axis", _sweep(grid={"seed": []}), ["grid", "seed", "no values"]),
    ("grid-unknown-key", _sweep(grid={"learning_rate": [0.1]}), ["learning_rate", "unknown key"]),
    ("budget-out-of-range", _sweep(baseline_budgets=[1.5]), ["baseline_budgets", "(0, 1)"]),
    ("budget-without-baseline", _sweep(variants=["mixtrain-cutmix"], baseline_budgets=[0.5]), ["baseline"]),
    ("optuna-no-space", _sweep(search={"kind": "optuna"}), ["space"]),
    ("unknown-base-key", _sweep(base={"lr": 0.1}), ["lr", "unknown key"]),
    ("unknown-override", _sweep(variants=[{"name": "baseline", "overrides": {"optimiser": {"lr": 1}}}]),
     ["optimiser", "unknown key"]),
    ("duplicate-variant", _sweep(variants=["baseline", "baseline"]), ["baseline", "twice"]),
    ("name-with-slash", _sweep(name="a/b"), ["name", "folder"]),
    ("cannot-split", _sweep(variants=["mixtrain-cutmix"], base={"model": "mlp"}), ["mlp", "feature map"]),
    ("root-missing", _sweep(base={"dataset": {"name": "parquet", "root": "/nonexistent/cifar"}}),
     ["/nonexistent/cifar", "does not exist"]),
    ("parquet-no-label", lambda tmp: _sweep(base={"dataset": {"name": "parquet", "root": _parquet_root(tmp, label=False)}}),
     ["label column", "dataset.label_column"]),
    ("cifar-folder-missing", lambda tmp: _sweep(base={"dataset": {"name": "cifar10", "root": str(tmp)}}),
     ["cifar-10-batches-py", "dataset.root"]),
    ("bad-search-range", _sweep(search={"kind": "optuna", "space": {"optimizer.lr": {"type": "loguniform", "low": 0, "high": 1}}}),
     ["low > 0"]),
]


def _assert_one_line(capsys, code, words):
    captured = capsys.readouterr()
    assert code == 2, captured
    err = captured.err.strip()
    assert err.startswith("mixtrain: error: ") and "\n" not in err, err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.mark.parametrize("case,text,words", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_malformed_sweep_file(tmp_path, monkeypatch, capsys, case, text, words, command):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(text(tmp_path) if callable(text) else text)
    before = sorted(p.name for p in tmp_path.iterdir())
    err = _assert_one_line(capsys, main(["sweep", command, str(path)]), words)
    assert str(path) in err  # names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written (no results, no mlflow.db)


RUN_GOOD = {"variant": "baseline", **GOOD_BASE}

RUN_CASES = [
    ("run-bad-yaml", "variant: [baseline\n", [], ["invalid YAML"]),
    ("run-unknown-variant", yaml.safe_dump({**RUN_GOOD, "variant": "mixup"}), [], ["variant", "mixup"]),
    ("run-unknown-key", yaml.safe_dump({**RUN_GOOD, "epoch": 2}), [], ["epoch", "unknown key", "did you mean 'epochs'?"]),
    ("run-unknown-model", yaml.safe_dump({**RUN_GOOD, "model": "resnet9"}), [], ["resnet9", "did you mean"]),
    ("set-without-equals", yaml.safe_dump(RUN_GOOD), ["--set", "epochs"], ["--set", "key=value"]),
    ("set-batch-0", yaml.safe_dump(RUN_GOOD), ["--set", "batch_size=0"], ["batch_size", "greater than 0"]),
    ("set-k-0", yaml.safe_dump(RUN_GOOD), ["--set", "k=0"], ["k", "greater than or equal to 1"]),
    ("run-root-missing", yaml.safe_dump({**RUN_GOOD, "dataset": {"name": "parquet", "root": "/no/such/dir"}}), [],
     ["/no/such/dir", "does not exist"]),
    ("run-mixed-sizes", lambda tmp: yaml.safe_dump({**RUN_GOOD, "dataset": {
        "name": "parquet", "root": _parquet_root(tmp, sizes=(8, 12)), "cache_dir": str(tmp / "cache")}}), [],
     ["mixed sizes", "resize"]),
    ("run-cannot-split", yaml.safe_dump({**RUN_GOOD, "variant": "mixtrain-cutmix", "model": "mlp"}), [],
     ["mlp", "feature map"]),
    ("run-missing-file", None, [], ["no such file"]),
]


# A bad --set value is blamed on the --set (and shows the value), not on the file that was fine.
SET_CASES = [
    ("set-epochs-abc", ["--set", "epochs=abc"], ["--set epochs=abc", "epochs", "integer", "(got 'abc')"]),
    ("set-nested", ["--set", "optimizer.lr=-1"], ["--set optimizer.lr=-1", "greater than 0", "(got -1)"]),
    ("set-unknown-key", ["--set", "optimizer.learning_rate=0.1"],
     ["--set optimizer.learning_rate=0.1", "unknown key"]),
    ("set-unknown-variant", ["--set", "variant=mixtrain-cutmx"], ["--set variant=mixtrain-cutmx", "did you mean"]),
]


@pytest.mark.parametrize("case,extra,words", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_blamed_on_the_set(tmp_path, monkeypatch, capsys, case, extra, words):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(RUN_GOOD))
    err = _assert_one_line(capsys, main(["train", "--config", str(path), *extra]), words)
    assert str(path) not in err  # the file is fine


@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_sweep_set_blamed_on_the_set(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(_sweep())
    before = sorted(p.name for p in tmp_path.iterdir())
    err = _assert_one_line(capsys, main(["sweep", command, str(path), "--set", "base.epochs=abc"]),
                           ["--set base.epochs=abc", "epochs", "(got 'abc')"])
    assert str(path) not in err
    err = _assert_one_line(capsys, main(["sweep", command, str(path), "--set", "grid.seed=[x]"]),
                           ["--set grid.seed=[x]", "seed", "(got 'x')"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("case,text,extra,words", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_malformed_run_config(tmp_path, monkeypatch, capsys, case, text, extra, words):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    if text is not None:
        path.write_text(text(tmp_path) if callable(text) else text)
    _assert_one_line(capsys, main(["train", "--config", str(path), *extra]), words)
    assert not (tmp_path / "mixtrain-results").exists()


CLI_CASES = [
    ("no-command", [], ["required"]),
    ("unknown-command", ["bogus"], ["invalid choice"]),
    ("run-without-file", ["sweep", "run"], ["sweep"]),
    ("unknown-flag", ["sweep", "plan", "x.yaml", "--fast"], ["--fast"]),
    ("resume-unknown", ["sweep", "resume", "nosuch"], ["no sweep named 'nosuch'"]),
    ("status-unknown", ["sweep", "status", "nosuch"], ["no sweep named 'nosuch'"]),
    ("report-unknown", ["report", "nosuch"], ["no sweep named 'nosuch'"]),
]


@pytest.mark.parametrize("case,argv,words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_arguments(tmp_path, monkeypatch, capsys, case, argv, words):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits
        code = exit_.code
    _assert_one_line(capsys, code, words)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_tracking_server(tmp_path, monkeypatch, capsys):
    """An MLflow server that does not answer: one error before any trial starts."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(_sweep(tracking={"uri": "http://127.0.0.1:9"}, storage={"root": str(tmp_path / "res")}))
    err = _assert_one_line(capsys, main(["sweep", "run", str(path)]), ["http://127.0.0.1:9", "unreachable"])
    assert "tracking.uri" in err
    assert not (tmp_path / "res").exists()


def test_more_gpus_than_the_cluster(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(_sweep(resources={"gpu": 1}, storage={"root": str(tmp_path / "res")},
                           tracking={"uri": f"sqlite:///{tmp_path / 'm.db'}"}))
    _assert_one_line(capsys, main(["sweep", "run", str(path)]), ["resources.gpu", "GPU"])
    assert not (tmp_path / "res").exists()
