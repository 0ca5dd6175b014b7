"""Per-sample statistics of the summary, so that claims can reach them (all in percent, per trial, then
the mean over a group's finished seeds).

From the epoch table (cheap):
- ``region1_share`` / ``region3_share``: of all S_mix entries decided over the run (every epoch's
  decision but the last, which is never trained), the share that entered via Region 1 / via Region 3
  (Fig. 7 / 9a); blank where nothing was ever mixed.
- ``region3_frac_mean``: the share of all training samples mixed via Region 3, mean over those epochs
  (Fig. 9a's curve, averaged).
From the per-sample history (Parquet, only the needed columns):
- ``lmid_correct_below`` / ``lmid_incorrect_below``: of the unmixed, trained samples that were correct /
  incorrect in an epoch, the share with loss < L_mid, mean over the epochs where L_mid is defined (Fig. 6;
  the paper: > 95 % and < 10 %). ``orchestrate.analysis.lmid_separation`` per epoch.
  Blank for a trial whose L_mid was never defined (a run without the amenability thresholds).
- ``region3_incorrect_over70``: of the samples incorrect after the last epoch (set I), the share that
  spent at least 70 % of the epochs in Region 3 (Fig. 8a: "over half"); ``region3_correct_over60``: of
  the samples correct at the end (set C), the share in Region 3 for at least 60 % of the epochs (Fig. 8b:
  "around 4 %"). ``orchestrate.analysis.region3_occupancy``, whose bins are tenths.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["STAT_COLUMNS", "epoch_statistics", "mean_statistics", "sample_statistics", "sweep_statistics"]

EPOCH_STATS = ("region1_share", "region3_share", "region3_frac_mean")
SAMPLE_STATS = ("lmid_correct_below", "lmid_incorrect_below", "region3_incorrect_over70", "region3_correct_over60")
#: the per-sample statistics columns of the summary
STAT_COLUMNS = (*SAMPLE_STATS, *EPOCH_STATS)


def epoch_statistics(epochs: pd.DataFrame) -> dict[str, float]:
    """``EPOCH_STATS`` of one trial from its epoch-table rows."""
    out = dict.fromkeys(EPOCH_STATS, math.nan)
    need = {"epoch", "n_mix_next", "n_next_region1", "n_next_region3", "n_samples"}
    if not len(epochs) or not need <= set(epochs.columns):
        return out
    ep = epochs.sort_values("epoch")
    decided = ep[ep["epoch"] < ep["epoch"].max()]  # the decision after the last epoch is never trained
    total = float(decided["n_mix_next"].fillna(0).sum())
    if total > 0:
        out["region1_share"] = 100 * float(decided["n_next_region1"].fillna(0).sum()) / total
        out["region3_share"] = 100 * float(decided["n_next_region3"].fillna(0).sum()) / total
    n = decided["n_samples"].where(decided["n_samples"] > 0)
    if len(decided) and n.notna().any():
        out["region3_frac_mean"] = 100 * float((decided["n_next_region3"].fillna(0) / n).mean())
    return out


def sample_statistics(separation: pd.DataFrame, occupancy: pd.DataFrame) -> dict[str, float]:
    """``SAMPLE_STATS`` of one trial from its rows of ``analysis.lmid_separation`` (per epoch) and of
    ``analysis.region3_occupancy`` (per bin); NaN where a share has no sample to be over."""
    out = dict.fromkeys(SAMPLE_STATS, math.nan)
    for col, name in (("frac_correct_below", "lmid_correct_below"), ("frac_incorrect_below", "lmid_incorrect_below")):
        vals = separation[col].dropna() if col in separation else ()
        if len(vals):
            out[name] = 100 * float(vals.mean())
    for final, lowest, name in (("incorrect", 7, "region3_incorrect_over70"), ("correct", 6, "region3_correct_over60")):
        part = occupancy[occupancy["final"] == final] if len(occupancy) else occupancy
        total = int(part["count"].sum()) if len(part) else 0
        if total:
            out[name] = 100 * int(part.loc[part["bin"] >= lowest, "count"].sum()) / total
    return out


def sweep_statistics(root, sweep: str, epochs: dict[str, pd.DataFrame], with_samples: bool = True
                     ) -> dict[str, dict[str, float]]:
    """All ``STAT_COLUMNS`` of the trials in ``epochs`` (trial id -> its epoch-table rows), by trial id.
    The per-sample ones come from the Parquet files through ``orchestrate.analysis``'s file queries
    (DuckDB / Arrow scans: memory follows one epoch, not the history); NaN when ``with_samples`` is False,
    a trial has no per-sample history, or its thresholds were never defined (no L_mid, no regions)."""
    from orchestrate import analysis

    out = {tid: {**epoch_statistics(ep), **dict.fromkeys(SAMPLE_STATS, math.nan)} for tid, ep in epochs.items()}
    ids = [tid for tid, ep in epochs.items() if "l_mid" in ep and ep["l_mid"].notna().any()]
    if not with_samples or not ids:
        return out
    try:
        separation = analysis.lmid_separation_from_files(root, sweep, trials=ids)
        occupancy = analysis.region3_occupancy_from_files(root, sweep, trials=ids)
    except FileNotFoundError:  # no per-sample history at all
        return out
    for tid in ids:
        out[tid].update(sample_statistics(separation[separation["trial"].astype(str) == tid],
                                          occupancy[occupancy["trial"].astype(str) == tid]))
    return out


def mean_statistics(per_trial: list[dict[str, float]]) -> dict[str, float]:
    """Mean over trials of each statistic, ignoring blanks."""
    out = {}
    for col in STAT_COLUMNS:
        vals = [d[col] for d in per_trial if col in d and not math.isnan(d[col])]
        out[col] = float(np.mean(vals)) if vals else math.nan
    return out
