"""Claims in sweep files: the check language, verdicts on hand-made summaries, plan-time validation, the
report's files, MLflow tags and ``mixtrain report --check``."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import yaml
from report_histories import make_sweep

from mixtrain_trainer.errors import ConfigError
from orchestrate.cli import main
from orchestrate.report.claims import FAILS, HOLDS, NOT_MEASURED, evaluate_claims, parse_check

NAN = math.nan


@pytest.fixture
def summary():
    """Two models x k in {1, 2}: baseline and mixtrain-cutmix; the ResNet-34 k=2 cutmix group never
    finished (blank numbers); a budget baseline of resnet18 k=1."""
    rows = [
        ("resnet18", "baseline", 1.0, 1, 93.0, 1.0, 0.0),
        ("resnet18", "baseline", 0.5, 1, 91.0, 2.0, 0.0),
        ("resnet18", "mixtrain-cutmix", 1.0, 1, 93.4, 1.7, 68.0),
        ("resnet18", "mixtrain-cutmix", 1.0, 2, 93.1, 1.8, 70.0),
        ("resnet34", "baseline", 1.0, 1, 94.8, 1.0, 0.0),
        ("resnet34", "mixtrain-cutmix", 1.0, 1, 95.0, 1.6, 66.0),
        ("resnet34", "mixtrain-cutmix", 1.0, 2, NAN, NAN, NAN),
    ]
    return pd.DataFrame(rows, columns=["model", "variant", "budget", "k", "top1", "speedup", "frac_mixed_mean"])


def verdict(summary, check):
    (v,) = evaluate_claims([{"id": "c", "text": "", "check": check}], summary)
    return v


@pytest.mark.parametrize("check, expected", [
    ("mixtrain-cutmix{model=resnet18, k=1}.top1 >= baseline{model=resnet18, k=1}.top1", HOLDS),
    ("mixtrain-cutmix{model=resnet18,k=1}.top1 - baseline{model=resnet18,k=1}.top1 > 0.5", FAILS),  # 0.4
    ("1.5 <= mixtrain-cutmix{model=resnet18, k=2}.speedup <= 2", HOLDS),
    ("1.5 <= mixtrain-cutmix{model=resnet18, k=2}.speedup <= 1.75", FAILS),
    ("abs(mixtrain-cutmix{model=resnet18,k=2}.top1 - mixtrain-cutmix{model=resnet18,k=1}.top1) < 0.5", HOLDS),
    ("baseline{model=resnet18, k=1, budget=0.5}.top1 < baseline{model=resnet18, k=1}.top1", HOLDS),
    ("max(mixtrain-cutmix{model=resnet34,k=1}.frac_mixed_mean, 60) / 2 == 33", HOLDS),
    ("not mixtrain-cutmix{model=resnet34, k=1}.top1 > 96", HOLDS),
    ("-baseline{model=resnet34,k=1}.top1 + 100 < 5", FAILS),  # 5.2
    # the unfinished group: unknown, unless the rest of the check decides (Kleene logic)
    ("mixtrain-cutmix{model=resnet34, k=2}.top1 > 90", NOT_MEASURED),
    ("mixtrain-cutmix{model=resnet34, k=2}.top1 > 90 and baseline{model=resnet34,k=1}.top1 > 90", NOT_MEASURED),
    ("mixtrain-cutmix{model=resnet34, k=2}.top1 > 90 and baseline{model=resnet34,k=1}.top1 > 99", FAILS),
    ("mixtrain-cutmix{model=resnet34, k=2}.top1 > 90 or baseline{model=resnet34,k=1}.top1 > 90", HOLDS),
    ("not mixtrain-cutmix{model=resnet34, k=2}.top1 > 90", NOT_MEASURED),
    ("mixtrain-cutmix{model=resnet34, k=2}.speedup / 0 > 1", NOT_MEASURED),
    # a group the results do not have at all: not measured either
    ("infobatch{model=resnet18, k=1}.top1 > 0", NOT_MEASURED),
    # unqualified axes: the claim for every (model, k), references bound together; one failure fails it
    ("mixtrain-cutmix.speedup > 1.55", NOT_MEASURED),  # 1.7, 1.8, 1.6 and the unfinished resnet34 k=2
    ("mixtrain-cutmix.speedup > 1.65", FAILS),  # resnet34 k=1: 1.6
    ("mixtrain-cutmix{k=1}.top1 >= baseline{k=1}.top1", HOLDS),  # resnet18 93.4 >= 93, resnet34 95 >= 94.8
    ("mixtrain-cutmix{k=1}.top1 >= baseline{k=1}.top1 + 0.3", FAILS),  # resnet34: 95 < 95.1
    ("mixtrain-cutmix{model=resnet18}.speedup >= 1.7", HOLDS),  # k=1 and k=2
])
def test_verdicts(summary, check, expected):
    assert verdict(summary, check).verdict == expected


def test_measured_values_and_reasons(summary):
    v = verdict(summary, "mixtrain-cutmix{model=resnet18,k=1}.top1 >= baseline{k=1, model=resnet18}.top1 "
                         "and mixtrain-cutmix{model=resnet34,k=2}.top1 > 0")
    assert v.verdict == NOT_MEASURED
    assert v.values == {"mixtrain-cutmix{k=1, model=resnet18}.top1": 93.4,
                        "baseline{k=1, model=resnet18}.top1": 93.0, "mixtrain-cutmix{k=2, model=resnet34}.top1": None}
    assert "mixtrain-cutmix{k=2, model=resnet34}.top1: no value" in v.reason
    assert v.measured.startswith("mixtrain-cutmix{k=1, model=resnet18}.top1 = 93.4; ")


@pytest.mark.parametrize("check, message", [
    ("", "non-empty"),
    ("baseline.top1 >", "not a well-formed expression"),
    ("baseline.top1 ** 2 > 1", "Pow is not allowed"),  # parsed, then refused by the whitelist
    ("(lambda: 1)() > baseline.top1", "'lambda' in"),
    ("__import__('os').system('true')", "is not a reference"),
    ("baseline.top1 > top1", "'top1' in"),
    ("baseline.top1 > 'a'", "unexpected \"'\""),
    ("baseline.top1 if 1 else 2", "'if' in"),
    ("len(baseline.top1) > 1", "'len' in"),
    ("abs(x=baseline.top1) > 1", "'x' in"),
    ("baseline.top1 = 1", "unexpected '='"),
    ("abs() > 1", "only abs"),
    ("1 < 2", "reads no summary value"),
    ("baseline{model}.top1 > 1", "is not key=value"),
    ("baseline.top1 > 1; baseline.top1", "unexpected ';'"),
    ("baseline.top1[0] > 1", "unexpected '['"),
])
def test_malformed_checks(check, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_check(check)


def test_malformed_check_in_report_is_a_config_error(summary):
    with pytest.raises(ConfigError, match="claim 'bad'"):
        evaluate_claims([{"id": "bad", "text": "", "check": "baseline.top1 >"}], summary)
    with pytest.raises(ConfigError, match="unknown column 'accuracy'"):
        evaluate_claims([{"id": "bad", "text": "", "check": "baseline.accuracy > 1"}], summary)


# ---------------------------------------------------------------- sweep files: plan-time validation


def sweep_file(tmp_path, claims, grid=None, budgets=(0.5,)):
    data = {
        "name": "claims-plan",
        "base": {"dataset": {"name": "synthetic", "synthetic_train": 64, "synthetic_test": 32}, "model": "resnet8",
                 "epochs": 2},
        "variants": ["baseline", "mixtrain-cutmix", {"name": "mixtrain-cutmix", "label": "cm-k2",
                                                     "overrides": {"k": 2}}],
        "grid": grid or {"seed": [0, 1]},
        "baseline_budgets": list(budgets),
        "claims": claims,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def plan(path, capsys):
    code = main(["sweep", "plan", path])
    return code, capsys.readouterr()


def test_plan_accepts_valid_claims(tmp_path, capsys):
    path = sweep_file(tmp_path, [
        {"id": "acc", "text": "no accuracy loss", "check": "mixtrain-cutmix.top1 >= baseline.top1 - 0.5"},
        {"id": "k2", "check": "cm-k2.speedup > 1 and baseline{budget=0.5}.top1 < baseline.top1"},
        {"id": "stats", "check": "mixtrain-cutmix.lmid_correct_below > 95 and mixtrain-cutmix.region3_share < 50"},
    ])
    code, out = plan(path, capsys)
    assert code == 0, out.err


@pytest.mark.parametrize("check, grid, message", [
    ("mixtrain-cutmx.top1 > 1", None, "unknown label 'mixtrain-cutmx' in 'mixtrain-cutmx.top1'; labels: "
                                      "baseline, cm-k2, mixtrain-cutmix"),
    ("mixtrain-cutmix.accuracy > 1", None, "unknown column 'accuracy' in 'mixtrain-cutmix.accuracy'"),
    ("baseline{budget=0.8}.top1 > 1", None, "'baseline{budget=0.8}.top1' names no group of this sweep"),
    ("baseline{lr=0.1}.top1 > 1", None, "unknown qualifier 'lr'"),
    ("mixtrain-cutmix{model=resnet18}.top1 > 1", {"model": ["resnet8", "resnet20"], "seed": [0]},
     "'mixtrain-cutmix{model=resnet18}.top1' names no group of this sweep; groups: "),
    ("baseline.top1 >", None, "claims.0.check: 'baseline.top1 >' is not a well-formed expression"),
])
def test_plan_rejects_bad_claims(tmp_path, capsys, check, grid, message):
    path = sweep_file(tmp_path, [{"id": "c1", "check": check}], grid=grid)
    code, out = plan(path, capsys)
    assert code == 2 and out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith(f"mixtrain: error: {path}: claims.0")
    assert message in out.err


def test_plan_rejects_duplicate_claim_ids(tmp_path, capsys):
    path = sweep_file(tmp_path, [{"id": "a", "check": "baseline.top1 > 1"}, {"id": "a", "check": "baseline.top1 > 2"}])
    code, out = plan(path, capsys)
    assert code == 2 and "claim id 'a' is used twice" in out.err


def test_qualified_and_for_every_claims_plan_on_a_larger_grid(tmp_path, capsys):
    path = sweep_file(tmp_path, [{"id": "r20", "check": "mixtrain-cutmix{model=resnet20}.top1 >= "
                                                        "baseline{model=resnet20}.top1"},
                                 {"id": "each", "check": "mixtrain-cutmix.top1 >= baseline.top1"}],
                      grid={"model": ["resnet8", "resnet20"], "seed": [0]})
    assert plan(path, capsys)[0] == 0


def test_for_every_model_reports_each_instance(summary):
    v = verdict(summary, "mixtrain-cutmix{k=1}.top1 - baseline{k=1}.top1 > 0")
    assert v.verdict == HOLDS
    assert v.values == {"mixtrain-cutmix{k=1, model=resnet18}.top1": 93.4, "baseline{k=1, model=resnet18}.top1": 93.0,
                        "mixtrain-cutmix{k=1, model=resnet34}.top1": 95.0, "baseline{k=1, model=resnet34}.top1": 94.8}


# ---------------------------------------------------------------- the report: files, --check, MLflow tags

CLAIMS = [
    {"id": "speed", "text": "mixTrain is faster", "check": "mixtrain-cutmix.speedup > 1.2"},  # 1.4: holds
    {"id": "acc", "text": "no accuracy loss", "check": "mixtrain-cutmix.top1 >= baseline.top1 - 1"},  # 60 vs 82
    {"id": "mixup", "text": "MixUp too", "check": "mixtrain-mixup.speedup > 1"},  # its only trial failed
]


def record(root, claims):
    (root / "s1").mkdir(parents=True, exist_ok=True)
    (root / "s1" / "sweep.json").write_text(json.dumps({"spec": {"name": "s1", "claims": claims,
                                                                 "tracking": {"uri": None}}}))


def test_report_writes_verdicts_and_check_exit_code(tmp_path, capsys):
    make_sweep(tmp_path)
    record(tmp_path, CLAIMS)
    assert main(["report", "s1", "--root", str(tmp_path), "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "claim speed: holds (mixtrain-cutmix.speedup = 1.4)" in out
    claims = pd.read_csv(tmp_path / "s1" / "report" / "claims.csv").set_index("id")
    assert claims.verdict.to_dict() == {"speed": HOLDS, "acc": FAILS, "mixup": NOT_MEASURED}
    assert claims.loc["acc", "measured"] == "mixtrain-cutmix.top1 = 60; baseline.top1 = 82"
    assert "no value" in claims.loc["mixup", "reason"] and claims.loc["acc", "text"] == "no accuracy loss"
    md = (tmp_path / "s1" / "report" / "summary.md").read_text()
    assert "## Claims" in md and "3 claims of the sweep file: 1 holds, 1 fails, 1 not measured" in md
    assert "| `acc` | **fails** | `mixtrain-cutmix.top1 >= baseline.top1 - 1` |" in md

    assert main(["report", "s1", "--root", str(tmp_path), "--no-mlflow", "--check"]) == 1
    assert "1 claim(s) fail: acc" in capsys.readouterr().err
    record(tmp_path, [CLAIMS[0], CLAIMS[2]])  # holds + not measured: --check passes
    assert main(["report", "s1", "--root", str(tmp_path), "--no-mlflow", "--check"]) == 0
    assert "acc" not in pd.read_csv(tmp_path / "s1" / "report" / "claims.csv").id.tolist()
    record(tmp_path, [])
    assert main(["report", "s1", "--root", str(tmp_path), "--no-mlflow", "--check"]) == 0
    assert not (tmp_path / "s1" / "report" / "claims.csv").exists()


def test_claim_tags_on_the_parent_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrate.report import build_report, claim_tags, log_report

    make_sweep(tmp_path)
    report = build_report(tmp_path, "s1", CLAIMS, with_samples=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_report(report.folder, uri, "s1", tags=claim_tags(report.verdicts))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("s1")
    (parent,) = client.search_runs([exp.experiment_id])
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("claim.")} == {
        "claim.speed": HOLDS, "claim.acc": FAILS, "claim.mixup": NOT_MEASURED}
    assert "report/claims.csv" in [f.path for f in client.list_artifacts(parent.info.run_id, "report")]


def test_report_with_another_files_claims(tmp_path, capsys):
    """--claims FILE: that file's claims, checked on this sweep's results (the record's are ignored)."""
    make_sweep(tmp_path)
    record(tmp_path, CLAIMS)
    path = sweep_file(tmp_path, [{"id": "other", "check": "naive-cutmix.speedup > mixtrain-cutmix.speedup"}])
    assert main(["report", "s1", "--root", str(tmp_path), "--no-mlflow", "--check", "--claims", path]) == 0
    claims = pd.read_csv(tmp_path / "s1" / "report" / "claims.csv")
    assert claims.id.tolist() == ["other"] and claims.verdict.tolist() == [HOLDS]  # 42 / 15 > 1.4
