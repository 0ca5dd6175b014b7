"""write_report: the folder, its CSV and Markdown, and PNGs that are real images."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from report_histories import epoch_rows, make_sweep, write_trial

from orchestrate.report import write_report

PNGS = ("accuracy_vs_speedup.png", "test_accuracy.png", "fraction_mixed.png")


def check_folder(folder, n_rows):
    for name in ("summary.csv", "summary.md", *PNGS):
        assert (folder / name).stat().st_size > 0, name
    for name in PNGS:
        with Image.open(folder / name) as im:
            im.verify()
        with Image.open(folder / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    csv = pd.read_csv(folder / "summary.csv")
    assert len(csv) == n_rows
    return csv, (folder / "summary.md").read_text()


def test_full_sweep_report(tmp_path):
    make_sweep(tmp_path)
    folder = write_report(tmp_path, "s1")
    assert folder == tmp_path / "s1" / "report"
    csv, md = check_folder(folder, 5)
    assert csv.loc[csv.variant == "mixtrain-cutmix", "speedup"].iloc[0] == pytest.approx(1.4)
    assert md.startswith("# Sweep `s1`")
    assert "9 trials (7 done, 2 failed)" in md
    assert "60.00 ± 2.83" in md and "Speedup (×)" in md and "Iso-time gain (pts)" in md
    assert "Iso-time gain:" in md and "Speedup:" in md  # the footnote
    assert "are **percentages**" in md and "`test_acc` metrics are fractions" in md
    assert "## Trials not finished" in md and "`mc-2`" in md and "boom at epoch 2" in md
    groups_md = md.split("\n## ")[0]  # the group table; then per-sample statistics, trials, unfinished trials
    assert "\n## Per-sample statistics" in md and "\n## Trials\n" in md
    table = [line for line in groups_md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 5  # header, rule, one line per group
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_minimal_sweep_report(tmp_path):
    """One variant and the baseline, one finished seed each, no budget baselines; a second seed still
    running (a partial epoch table) is counted and listed but not averaged."""
    write_trial(tmp_path, "tiny", "base", "baseline", 0, epoch_rows([0.5, 0.6], [2, 2], [10, 10]))
    write_trial(tmp_path, "tiny", "r1", "region1-only", 0,
                epoch_rows([0.5, 0.55], [2, 1], [10, 7], frac_mixed=[0.0, 0.6]))
    write_trial(tmp_path, "tiny", "r1-b", "region1-only", 1, epoch_rows([0.1], [9], [10]), status="running",
                epochs=2)
    csv, md = check_folder(write_report(tmp_path, "tiny"), 2)
    assert csv.iso_time_gain.isna().all() and csv.top1_std.isna().all()
    r1 = csv[csv.variant == "region1-only"].iloc[0]
    assert (r1.n_seeds, r1.n_running, r1.n_failed) == (1, 1, 0) and r1.top1 == pytest.approx(55.0)
    assert r1.speedup == pytest.approx(4 / 3) and "r1-b (running)" in r1.missing
    assert "3 trials (2 done, 1 running)" in md and "`r1-b` (region1-only, running)" in md
    assert "±" not in md.split("\n\n")[2]


def test_baseline_only_and_empty_sweeps(tmp_path):
    write_trial(tmp_path, "solo", "base", "baseline", 0, epoch_rows([0.5, 0.6], [2, 2], [10, 10]))
    check_folder(write_report(tmp_path, "solo"), 1)  # no mixing variant: fraction_mixed.png says so
    write_trial(tmp_path, "dead", "x", "mixtrain-cutmix", 0, [], status="failed", error="ValueError: bad")
    csv, md = check_folder(write_report(tmp_path, "dead"), 1)  # no epoch table at all
    assert csv.n_failed.tolist() == [1] and "ValueError: bad" in md


def test_noisy_frontier_is_flagged(tmp_path):
    """A budget baseline that took longer than the full one: the Markdown warns that timings are noisy."""
    write_trial(tmp_path, "noisy", "base", "baseline", 0, epoch_rows([0.5, 0.6], [2, 2], [10, 10]))
    write_trial(tmp_path, "noisy", "b50", "baseline", 0, epoch_rows([0.5], [5], [10]), budget=0.5)
    _, md = check_folder(write_report(tmp_path, "noisy"), 2)
    assert "**Warning**" in md and "budget 0.5 took 5.0 s" in md
    make_sweep(tmp_path)
    assert "**Warning**" not in (write_report(tmp_path, "s1") / "summary.md").read_text()


def test_trials_table_and_peak_memory(tmp_path):
    """Each trial's peak memory is the largest of its epoch values (``peak_gpu_mem_mb``, ``rss_mb``), in
    trials.csv and summary.md; a group shows the largest over its trials; blank where not recorded."""
    rows = epoch_rows([0.5, 0.6, 0.7], [2, 2, 2], [10, 10, 10])
    for row, gpu, rss in zip(rows, (100.0, 350.0, 300.0), (900.0, 950.0, 1200.0)):
        row.update(peak_gpu_mem_mb=gpu, rss_mb=rss)
    write_trial(tmp_path, "mem", "base-0", "baseline", 0, rows)
    rows = epoch_rows([0.5, 0.65, 0.7], [2, 2, 2], [10, 10, 10])
    for row, rss in zip(rows, (800.0, 1500.0, 1400.0)):
        row.update(peak_gpu_mem_mb=None, rss_mb=rss)
    write_trial(tmp_path, "mem", "base-1", "baseline", 1, rows)
    write_trial(tmp_path, "mem", "old", "region1-only", 0, epoch_rows([0.5, 0.6], [2, 2], [10, 10]))
    folder = write_report(tmp_path, "mem")
    trials = pd.read_csv(folder / "trials.csv").set_index("trial_id")
    assert trials.loc["base-0", "peak_gpu_mem_mb"] == 350 and trials.loc["base-0", "peak_rss_mb"] == 1200
    assert pd.isna(trials.loc["base-1", "peak_gpu_mem_mb"]) and trials.loc["base-1", "peak_rss_mb"] == 1500
    assert trials.loc[["old"], ["peak_gpu_mem_mb", "peak_rss_mb"]].isna().all(axis=None)
    csv = pd.read_csv(folder / "summary.csv").set_index("variant")
    assert csv.loc["baseline", "peak_gpu_mem_mb"] == 350 and csv.loc["baseline", "peak_rss_mb"] == 1500
    md = (folder / "summary.md").read_text()
    assert "| `base-0` | baseline | m | full | 0 | done | 70.00 | 6.0 | 3 | 350 | 1200 |" in md
    assert "| 350 / 1500 |" in md


def test_frontier_panel_says_when_there_is_none(tmp_path):
    from orchestrate.report.plots import plot_accuracy_vs_speedup
    from orchestrate.report.summary import _collect, _summary

    def right_panel(sweep):
        groups, _, _ = _collect(tmp_path, sweep)
        ax = plot_accuracy_vs_speedup(groups, _summary(groups), sweep).axes[1]
        return ax.get_title(), " ".join(t.get_text() for t in ax.texts)

    write_trial(tmp_path, "nof", "base", "baseline", 0, epoch_rows([0.5, 0.6], [2, 2], [10, 10]))
    write_trial(tmp_path, "nof", "r1", "region1-only", 0, epoch_rows([0.5, 0.55], [2, 1], [10, 7]))
    title, text = right_panel("nof")
    assert "no iso-time frontier" in title and "no budget baselines" in text and "baseline_budgets" in text
    make_sweep(tmp_path)
    title, text = right_panel("s1")
    assert title.endswith("(iso-time frontier)") and "no budget baselines" not in text
