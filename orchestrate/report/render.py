"""The report folder: Markdown and CSV files, the PNG plots, and the MLflow artifacts and tags.

``write_report(root, sweep)`` writes ``<root>/<sweep>/report/``: summary.csv, summary.md, trials.csv,
claims.csv (when the sweep has claims) and the PNG plots; ``build_report`` does the same and also returns
the summary and the claims' verdicts. ``log_report(folder, uri, sweep, ...)`` logs that folder as
artifacts of the sweep's parent MLflow run through the tracking adapter (``orchestrate.tracking``), with
the ``claim.<id>`` tags (``claim_tags``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mixtrain_trainer.history import storage_root
from orchestrate.report.claims import HOLDS, Verdict, evaluate_claims, verdict_table
from orchestrate.report.plots import plot_accuracy_vs_speedup, plot_fraction_mixed, plot_test_accuracy
from orchestrate.report.samples import STAT_COLUMNS
from orchestrate.report.summary import (
    SUMMARY_COLUMNS,
    TRIAL_COLUMNS,
    _collect,
    _frontier_warnings,
    _summary,
    _trial_table,
)

__all__ = ["PLOTS", "Report", "build_report", "claim_tags", "log_report", "write_report"]

#: the PNG files of a report folder
PLOTS = ("accuracy_vs_speedup.png", "test_accuracy.png", "fraction_mixed.png")


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if _missing(value):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{value}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _signed(value, digits: int = 2) -> str:
    return "—" if _missing(value) else f"{value:+.{digits}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _memory(gpu, rss) -> str:
    return "—" if _missing(gpu) and _missing(rss) else f"{_fmt(gpu, 0)} / {_fmt(rss, 0)}"


NOTE = (
    "All accuracies and shares in this report are **percentages** (0-100); the epoch table and MLflow's "
    "`test_acc` metrics are fractions (0-1). "
    "Top-1: final test accuracy after the last epoch, mean ± sample std over finished seeds. "
    "Δ top-1: difference from the full-budget `baseline` of the same model (and the same other grid "
    "values when such a baseline exists), in percentage points. "
    "Speedup: the baseline's mean training wall-clock time divided by this group's (training epochs "
    "only; evaluation excluded); >1 is faster. Inputs ratio: inputs processed (a composite counts as "
    "one; an input only forwarded counts a third) relative to the baseline, a hardware-free measure of "
    "the saving. "
    "Iso-time gain: this group's top-1 minus the accuracy of the baseline frontier (baselines trained "
    "with their schedule scaled to fewer epochs, plus the full baseline) interpolated linearly at this "
    "group's wall time; negative means training the baseline for fewer epochs would have done better; "
    "— outside the frontier's range or without budget baselines. "
    "Early-term.: the first epoch (0-based) at which the baseline's mean test-accuracy curve reaches this "
    "group's final top-1, and the baseline's total time over its time up to that epoch. "
    "Mixed: share of training samples trained as a constituent of a composite. "
    "Peak memory: the largest per-epoch peak over the group's trials, GPU / process RSS in MB."
)


def _summary_lines(summary: pd.DataFrame) -> list[str]:
    extra_cols = [c for c in summary.columns if c not in SUMMARY_COLUMNS]
    headers = ["Model", "Variant", "Epoch budget", *extra_cols, "Seeds", "Top-1 (%)", "Δ top-1 (pts)",
               "Wall time (s)", "Speedup (×)", "Inputs ratio", "Iso-time gain (pts)", "Early-term. epoch",
               "Early-term. speedup (×)", "Mixed: last / mean epoch (%)", "Peak mem. GPU / RSS (MB)"]
    lines = [_row(headers), "| " + " | ".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + " |"]
    for _, r in summary.iterrows():
        top1 = _fmt(r["top1"])
        if top1 != "—" and not _missing(r["top1_std"]):
            top1 += f" ± {r['top1_std']:.2f}"
        seeds = f"{r['n_seeds']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")
        mixed = "—" if _missing(r["frac_mixed_final"]) else (
            f"{r['frac_mixed_final']:.1f} / {r['frac_mixed_mean']:.1f}")
        lines.append(_row([
            r["model"], r["variant"], "full" if r["budget"] >= 1 else f"{r['budget']:g}",
            *("—" if pd.isna(r[c]) else r[c] for c in extra_cols),
            seeds, top1, _signed(r["delta_top1"]), _fmt(r["wall_seconds"], 1), _fmt(r["speedup"], 2),
            _fmt(r["inputs_ratio"], 3), _signed(r["iso_time_gain"]), _fmt(r["early_term_epoch"]),
            _fmt(r["early_term_speedup"], 2), mixed, _memory(r["peak_gpu_mem_mb"], r["peak_rss_mb"]),
        ]))
    return lines


_STAT_HEADERS = {
    "lmid_correct_below": "Correct < L_mid", "lmid_incorrect_below": "Incorrect < L_mid",
    "region3_incorrect_over70": "I in R3 ≥70% of epochs", "region3_correct_over60": "C in R3 ≥60% of epochs",
    "region1_share": "S_mix via R1", "region3_share": "S_mix via R3", "region3_frac_mean": "Mixed via R3 / epoch",
}


def _stat_lines(summary: pd.DataFrame) -> list[str]:
    """The per-sample statistics of the groups that have any (percent)."""
    rows = summary[summary[list(STAT_COLUMNS)].notna().any(axis=1)] if len(summary) else summary
    if not len(rows):
        return []
    extra_cols = [c for c in summary.columns if c not in SUMMARY_COLUMNS]
    headers = ["Model", "Variant", "Epoch budget", *extra_cols, *(_STAT_HEADERS[c] + " (%)" for c in STAT_COLUMNS)]
    lines = ["", "## Per-sample statistics", "",
             "Means over finished seeds, in percent (the columns of summary.csv named in brackets): "
             + "; ".join(f"{_STAT_HEADERS[c]} [`{c}`]" for c in STAT_COLUMNS)
             + ". Definitions: `orchestrate/report/samples.py`.", "",
             _row(headers), "| " + " | ".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + " |"]
    for _, r in rows.iterrows():
        lines.append(_row([r["model"], r["variant"], "full" if r["budget"] >= 1 else f"{r['budget']:g}",
                           *("—" if pd.isna(r[c]) else r[c] for c in extra_cols),
                           *(_fmt(r[c], 1) for c in STAT_COLUMNS)]))
    return lines


def _claim_lines(verdicts: list[Verdict]) -> list[str]:
    if not verdicts:
        return []
    counts = {v: sum(x.verdict == v for x in verdicts) for v in ("holds", "fails", "not measured")}
    lines = ["", "## Claims", "",
             f"{_plural(len(verdicts), 'claim')} of the sweep file: "
             + ", ".join(f"{n} {v}" for v, n in counts.items()) + ". A check is evaluated on the table above "
             "(`label.column`; percentages); `not measured`: a value it needs is missing.", "",
             _row(["Claim", "Verdict", "Check", "Measured", "Paper"]), "| --- | --- | --- | --- | --- |"]
    for v in verdicts:
        verdict = f"**{v.verdict}**" if v.verdict != HOLDS else v.verdict
        measured = v.measured + (f" ({v.reason})" if v.reason else "")
        lines.append(_row([f"`{v.id}`", verdict, f"`{v.check}`", measured, v.text.strip()]))
    return lines


def _trial_lines(trials: pd.DataFrame) -> list[str]:
    extra_cols = [c for c in trials.columns if c not in TRIAL_COLUMNS]
    headers = ["Trial", "Variant", "Model", "Epoch budget", "Seed", *extra_cols, "Status", "Top-1 (%)",
               "Wall time (s)", "Epochs", "Peak GPU mem. (MB)", "Peak RSS (MB)"]
    lines = [_row(headers), "| " + " | ".join(["---"] * 3 + ["---:"] * (len(headers) - 3)) + " |"]
    for _, t in trials.iterrows():
        lines.append(_row([
            f"`{t['trial_id']}`", t["variant"], t["model"], "full" if t["budget"] >= 1 else f"{t['budget']:g}",
            t["seed"], *("—" if pd.isna(t[c]) else t[c] for c in extra_cols), t["status"], _fmt(t["top1"]),
            _fmt(t["wall_seconds"], 1), _fmt(t["epochs"], 0), _fmt(t["peak_gpu_mem_mb"], 0),
            _fmt(t["peak_rss_mb"], 0),
        ]))
    return lines


def markdown(sweep: str, summary: pd.DataFrame, trials: pd.DataFrame, records: list[dict],
             warnings: list[str] = (), claim_lines: list[str] = ()) -> str:
    """summary.md: the group table, its notes, the claims' verdicts, warnings, the per-trial table and the
    unfinished trials."""
    statuses = pd.Series([str(r.get("status", "unknown")) for r in records], dtype=object)
    counts = ", ".join(f"{n} {s}" for s, n in statuses.value_counts().sort_index().items()) or "none"
    lines = [
        f"# Sweep `{sweep}`: summary",
        "",
        f"{_plural(len(records), 'trial')} ({counts}) in {_plural(len(summary), 'group')} "
        "(model × variant × other grid axes; seeds averaged).",
        "",
        *_summary_lines(summary),
        "",
        NOTE,
    ]
    lines += [f"\n> **Warning**: {w}" for w in warnings]
    lines += list(claim_lines)
    lines += _stat_lines(summary)
    if len(trials):
        lines += ["", "## Trials", "", *_trial_lines(trials)]
    failed = [r for r in records if r.get("status") != "done"]
    if failed:
        lines += ["", "## Trials not finished", ""]
        for r in failed:
            err = str(r.get("error") or "").strip().splitlines()
            why = f": {err[0]}" if err else ""
            lines.append(f"- `{r.get('trial_id')}` ({r.get('variant', '')}, {r.get('status', 'unknown')}){why}")
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    folder: Path
    summary: pd.DataFrame
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "fails"]


def sweep_claims(root, sweep: str) -> list[dict]:
    """The claims of the sweep file a sweep ran (its record, ``sweep.json``); none without a record."""
    path = storage_root(str(root) if root else None) / sweep / "sweep.json"
    if not path.is_file():
        return []
    return list((json.loads(path.read_text()).get("spec") or {}).get("claims") or [])


def build_report(root, sweep: str, claims=None, with_samples: bool = True) -> Report:
    """Write ``<root>/<sweep>/report/`` (summary.csv, summary.md, trials.csv, claims.csv when there are
    claims, and the PNGs of ``PLOTS``). ``claims``: ``{id, text, check}`` entries (default: the sweep
    record's); ``root`` None: the default storage; ``with_samples`` False: no per-sample statistics."""
    import matplotlib.pyplot as plt

    groups, _, records = _collect(root, sweep, with_samples)
    summary = _summary(groups)
    trials = _trial_table(groups)
    claims = sweep_claims(root, sweep) if claims is None else list(claims)
    verdicts = evaluate_claims(claims, summary)
    folder = storage_root(str(root) if root else None) / sweep / "report"
    folder.mkdir(parents=True, exist_ok=True)
    summary.round(6).to_csv(folder / "summary.csv", index=False)
    trials.round(6).to_csv(folder / "trials.csv", index=False)
    if verdicts:
        verdict_table(verdicts).to_csv(folder / "claims.csv", index=False)
    else:
        (folder / "claims.csv").unlink(missing_ok=True)
    (folder / "summary.md").write_text(
        markdown(sweep, summary, trials, records, _frontier_warnings(groups), _claim_lines(verdicts)))
    for name, fig in zip(PLOTS, (
        plot_accuracy_vs_speedup(groups, summary, sweep),
        plot_test_accuracy(groups, sweep),
        plot_fraction_mixed(groups, sweep),
    )):
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    return Report(folder, summary, verdicts)


def write_report(root, sweep: str, claims=None, with_samples: bool = True) -> Path:
    """``build_report``'s folder."""
    return build_report(root, sweep, claims, with_samples).folder


def claim_tags(verdicts: list[Verdict]) -> dict[str, str]:
    """MLflow tags of the parent run: ``claim.<id>`` = holds / fails / not measured."""
    return {f"claim.{v.id}": v.verdict for v in verdicts}


def log_report(folder: Path, uri: str, sweep: str, experiment: str | None = None,
               tags: dict[str, str] | None = None) -> None:
    """The report folder as artifacts (``report/``) of the sweep's parent MLflow run, plus ``tags`` on
    that run. Raises ``MixtrainError`` (``TrackingError``) when the server cannot be reached."""
    from orchestrate.tracking import SweepTracker, check_reachable

    check_reachable(uri)
    tracker = SweepTracker(uri, sweep, experiment)
    tracker.log_artifacts(folder)
    if tags:
        tracker.set_parent_tags(tags)
