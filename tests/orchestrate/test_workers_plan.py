"""`workers: N` in sweep files: `sweep plan` shows workers and the trial's total resources, and refuses
(one line, exit 2, nothing written) what the cluster (`--address`; `local`: this machine's embedded Ray)
cannot hold; `sweep run` refuses the same before anything is written."""

from __future__ import annotations

import os

import pytest
import yaml

from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.errors import ConfigError
from orchestrate.cli import main
from orchestrate.spec import Trial, check_capacity, parse_sweep, worker_slots

BASE = {"dataset": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32, "image_size": 16},
        "model": "resnet8", "epochs": 1}


def _write(tmp_path, base=None, resources=None, grid=None):
    spec = {"name": "w", "base": {**BASE, **(base or {})}, "variants": ["baseline"],
            "resources": resources or {"cpu": 1}}
    if grid:
        spec["grid"] = grid
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _one_line(capsys, code, words):
    captured = capsys.readouterr()
    assert code == 2, captured
    err = captured.err.strip()
    assert err.startswith("mixtrain: error: ") and "\n" not in err and "Traceback" not in captured.err, err
    for word in words:
        assert word in err, (word, err)


def test_plan_prints_workers_and_total_resources(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, resources={"cpu": 1}, grid={"workers": [1, 2]})
    assert main(["sweep", "plan", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "per worker" in out[0]
    header = out[1].split()
    assert header[7:10] == ["workers", "cpu", "gpu"]
    rows = {int(line.split()[6]): line.split()[7:9] for line in out[2:]}
    assert rows == {1: ["1", "0"], 2: ["2", "0"]}
    assert sorted(os.listdir(tmp_path)) == ["sweep.yaml"]


CASES = [
    ("workers-0", {"workers": 0}, {"cpu": 1}, ["workers", "greater than or equal to 1"]),
    ("more-workers-than-cpus", {"workers": 64}, {"cpu": 1}, ["workers: 64", "at most", "lower workers"]),
    ("cpu-device-with-gpu", {"workers": 2, "device": "cpu"}, {"cpu": 1, "gpu": 1},
     ["resources.gpu", "device: cpu", "gpu: 0"]),
]


@pytest.mark.parametrize("case,base,resources,words", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_workers(request, tmp_path, monkeypatch, capsys, case, base, resources, words, command):
    request.getfixturevalue("ray_local")  # the cluster that `plan --address local` and `run` ask: 2 CPUs
    capsys.readouterr()  # its start-up chatter is not this command's output
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, base=base, resources=resources)
    before = sorted(os.listdir(tmp_path))
    code = main(["sweep", command, str(path)] + (["--address", "local"] if command == "plan" else []))
    _one_line(capsys, code, words + [str(path)])
    assert sorted(os.listdir(tmp_path)) == before


def test_capacity_counts_worker_bundles_per_node():
    # two nodes of 4 CPUs + 1 GPU: workers of 2 CPU + 0.5 GPU fit twice per node
    nodes = [{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}]
    assert worker_slots(nodes, 2, 0.5) == 4
    assert worker_slots(nodes, 3, 0) == 2  # a bundle never spans two nodes
    assert worker_slots(nodes, 1, 1) == 2
    spec = parse_sweep({"name": "s", "variants": ["baseline"], "resources": {"cpu": 2, "gpu": 0.5}})
    four = Trial("t4", RunConfig(workers=4), {})
    check_capacity(spec, [four], nodes, "s.yaml")  # fits exactly
    five = Trial("t5", RunConfig(workers=5), {})
    with pytest.raises(ConfigError, match=r"workers: 5 \(trial t5\) need 10 CPU \+ 2.5 GPU.*at most 4"):
        check_capacity(spec, [four, five], nodes, "s.yaml")


@pytest.mark.parametrize("variant,workers,words", [
    ("baseline", "0", ["--workers 0", "at least 1"]),
    ("selective-backprop", "2", ["workers: 2", "selective-backprop", "data-parallel", "run.yaml"]),
])
def test_train_workers_refused(tmp_path, monkeypatch, capsys, variant, workers, words):
    """`mixtrain train --workers N`: a bad N, and N > 1 for a strategy that cannot train across ranks yet."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"variant": variant, **BASE}))
    _one_line(capsys, main(["train", "--config", str(path), "--workers", workers]), words)
    assert sorted(os.listdir(tmp_path)) == ["run.yaml"]
