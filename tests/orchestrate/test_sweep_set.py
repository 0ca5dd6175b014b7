"""`--set key=value` on sweep commands (CONTRACT.md Additions): applied to the file before validation,
trial ids follow the resolved configuration; a bad value is blamed on its --set."""

from __future__ import annotations

import yaml

from orchestrate.cli import main
from orchestrate.spec import expand, load_sweep


def _plan_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]


def test_set_on_sweep_plan_equals_the_edited_file(write_sweep, capsys):
    path, _, _ = write_sweep("setme", variants=["baseline"], grid={"seed": [0, 1, 2]})
    assert main(["sweep", "plan", str(path), "--set", "base.epochs=5", "--set", "grid.seed=[7]",
                 "--set", "base.optimizer.lr=0.2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep setme: 1 trials")
    edited = yaml.safe_load(path.read_text())
    edited["base"].update(epochs=5, optimizer={"lr": 0.2})
    edited["grid"] = {"seed": [7]}
    other = path.with_name("edited.yaml")
    other.write_text(yaml.safe_dump(edited))
    (trial,) = expand(load_sweep(other))
    assert trial.config.epochs == 5 and trial.config.seed == 7 and trial.config.optimizer.lr == 0.2
    assert _plan_ids(out) == [trial.trial_id]  # the ids follow the resolved configuration
    assert main(["sweep", "plan", str(path)]) == 0
    assert trial.trial_id not in capsys.readouterr().out  # and without --set they differ


def test_set_can_replace_variants(write_sweep, capsys):
    path, _, _ = write_sweep("setvar", variants=["baseline", "mixtrain-cutmix"])
    assert main(["sweep", "plan", str(path), "--set", "variants=[mixtrain-mixup]"]) == 0
    out = capsys.readouterr().out
    assert "mixtrain-mixup" in out and "baseline" not in out.split("\n", 2)[2]
