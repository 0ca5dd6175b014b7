"""Every sweeps/paper/ file plans, carries claims that validate, and so does the CPU proxy command in its
header (the same file shrunk with --set)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orchestrate.cli import main
from orchestrate.spec import load_sweep

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "sweeps" / "paper").glob("*.yaml"))


def proxy_command(path: Path) -> list[str]:
    """The header's `mixtrain sweep run ...` command (continued over comment lines ending in '\\')."""
    lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("mixtrain sweep run"))
    text = ""
    for line in lines[start:]:
        text += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            break
    return shlex.split(text)


def test_paper_files_exist():
    names = {p.stem for p in PAPER}
    assert {"table2", "interference", "regions", "k", "thresholds", "region1_vs_region3", "sec43",
            "selective_backprop"} <= names


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_sweep_plans_with_claims(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # dataset roots are relative to the repository root, where mixtrain runs
    spec = load_sweep(path)
    assert spec.claims, f"{path.name} has no claims"
    assert spec.baseline_budgets, f"{path.name}: no iso-time frontier"
    assert spec.base["epochs"] == 90 and spec.base["optimizer"]["lr"] == 0.05  # the paper's CIFAR-10 schedule
    assert main(["sweep", "plan", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()

    cmd = proxy_command(path)
    assert cmd[:4] == ["mixtrain", "sweep", "run", str(path.relative_to(REPO))]
    rest = cmd[3:]
    keep = [a for i, a in enumerate(rest) if a != "--new-name" and not (i and rest[i - 1] == "--new-name")]
    args = ["sweep", "plan", *keep]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "resnet8" in out and " 24 " in out and "resnet18" not in out  # the proxy: small model, 24 epochs
