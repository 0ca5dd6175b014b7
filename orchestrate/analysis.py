"""Post-hoc analysis of per-sample histories: the paper's figures rebuilt from what the trainer wrote.

Every function takes DataFrames as returned by ``mixtrain_trainer.history.load_samples`` /
``load_epochs`` (one row per (trial, epoch, sample) / per (trial, epoch)) and returns a DataFrame; each
has a ``plot_*`` twin that draws it with matplotlib (Agg backend) and returns the Figure.

| function | paper figure |
| --- | --- |
| ``mix_fraction_by_path`` | Fig. 7 and Fig. 9a: S_mix by entry path (Region 1 / Region 3) per epoch |
| ``lmid_separation`` | Fig. 6: correct vs incorrect unmixed samples below L_mid |
| ``region3_occupancy`` | Fig. 8: share of epochs in Region 3 of samples that end correct (C) or incorrect (I) |
| ``loss_change`` | Fig. 13: change in average per-sample loss between consecutive epochs |
| ``trajectories`` | per-sample loss, region and mixing over epochs |

Loading only the needed columns keeps large histories cheap, e.g.
``load_samples(root, sweep, trials=[t], columns=["sample_id", "mixed", "mix_next", "mix_path"])``.

At any size (10^8 rows and more) use the ``*_from_files(root, sweep, trials=None)`` twins: they read the
Parquet files directly and return the same small DataFrames as the pandas functions. They open only the
partitions (trial, epoch) asked for and only the columns each figure needs: DuckDB aggregates for Fig. 6,
7 / 9a and the trajectories; an epoch-by-epoch Arrow scan with one dense per-sample array for Fig. 8 and
13, whose memory is O(samples of one epoch), not O(rows).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mixtrain_trainer.history import load_epochs, sample_files  # noqa: E402

__all__ = [
    "OCCUPANCY_BINS",
    "loss_change",
    "lmid_separation",
    "lmid_separation_from_files",
    "loss_change_from_files",
    "mix_fraction_by_path",
    "mix_fraction_by_path_from_files",
    "region3_occupancy_from_files",
    "trajectories_from_files",
    "plot_lmid_separation",
    "plot_loss_change",
    "plot_mix_fraction_by_path",
    "plot_region3_occupancy",
    "plot_trajectories",
    "region3_occupancy",
    "trajectories",
]

#: bin labels of ``region3_occupancy``: the share of epochs in Region 3, in steps of 10 %
OCCUPANCY_BINS = [f"{10 * i}-{10 * (i + 1)}%" for i in range(10)]


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what} needs columns {missing}; load them with load_samples(..., columns=[...])")


def _trial_label(trial: str, labels: dict[str, str] | None) -> str:
    return (labels or {}).get(trial, str(trial))


# ---------------------------------------------------------------- Fig. 7 / 9a: S_mix by entry path


def mix_fraction_by_path(samples: pd.DataFrame) -> pd.DataFrame:
    """Per (trial, epoch E): fractions of all training samples.

    ``next_region1`` / ``next_region3`` / ``next_other``: in S_mix for epoch E + 1 (``mix_next``) having
    entered via Region 1 / via Region 3 / any other way (``accuracy``, ``avgloss`` thresholds, naive
    pairing, which records no path); ``next_total``: all of S_mix for E + 1 (the three summed).
    ``mixed``: trained as a constituent in epoch E itself; ``skipped``: not trained in E.
    For ``skip-region3`` the Region 3 path skips instead of mixing: those samples have ``mix_path``
    ``region3`` but ``mix_next`` False, so they are not counted here (``skipped`` of E + 1 shows them).
    Also ``n_samples`` (rows of that epoch).
    """
    _require(samples, ["trial", "epoch", "mix_next", "mix_path", "mixed"], "mix_fraction_by_path")
    path = samples["mix_path"].fillna("").astype(str)
    nxt = samples["mix_next"].astype(bool)
    frame = pd.DataFrame({
        "trial": samples["trial"].astype(str),
        "epoch": samples["epoch"].astype(int),
        "next_region1": nxt & (path == "region1"),
        "next_region3": nxt & (path == "region3"),
        "next_other": nxt & ~path.isin(["region1", "region3"]),
        "next_total": nxt,
        "mixed": samples["mixed"].astype(bool),
        "skipped": samples["skipped"].astype(bool) if "skipped" in samples else False,
    })
    grouped = frame.groupby(["trial", "epoch"], sort=True)
    out = grouped.mean().astype(float)
    out["n_samples"] = grouped.size()
    return out.reset_index()


def plot_mix_fraction_by_path(fractions: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Fig. 7 / 9a: % of samples in S_mix per epoch by entry path, one colour per trial.

    The fractions decided after epoch E are drawn at E + 1 (the epoch they are mixed in); the solid line is
    the fraction actually mixed in each epoch. ``labels`` maps trial ids to legend names.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (trial, df) in enumerate(fractions.groupby("trial", sort=True)):
        c = colors[i % len(colors)]
        name = _trial_label(trial, labels)
        nxt = df[df["epoch"] < df["epoch"].max()]  # the decision after the last epoch is never trained
        ax.plot(df["epoch"], 100 * df["mixed"], color=c, lw=2, label=f"{name}: mixed in epoch")
        ax.plot(nxt["epoch"] + 1, 100 * nxt["next_region1"], color=c, ls="--", label=f"{name}: via Region 1")
        ax.plot(nxt["epoch"] + 1, 100 * nxt["next_region3"], color=c, ls=":", label=f"{name}: via Region 3")
        if nxt["next_other"].any():
            ax.plot(nxt["epoch"] + 1, 100 * nxt["next_other"], color=c, ls="-.", label=f"{name}: other rule")
    ax.set_title("Samples in S_mix by entry path (Fig. 7 / 9a)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("share of training samples (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- Fig. 6: efficacy of L_mid


def lmid_separation(samples: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per (trial, epoch): how well L_mid separates correct from incorrect among **unmixed** samples.

    ``frac_correct_below``: share of unmixed, trained, correct samples with loss < L_mid;
    ``frac_incorrect_below``: the same for incorrect ones (the paper wants > 95 % and < 10 %);
    ``n_correct`` / ``n_incorrect``: how many samples each share is over; ``l_mid`` from ``epochs``.
    NaN where L_mid is undefined (epoch 0) or there is no such sample.
    """
    _require(samples, ["trial", "epoch", "loss", "correct", "mixed"], "lmid_separation")
    _require(epochs, ["trial", "epoch", "l_mid"], "lmid_separation")
    keep = ~samples["mixed"].astype(bool)
    if "skipped" in samples:
        keep &= ~samples["skipped"].astype(bool)
    s = samples.loc[keep, ["trial", "epoch", "loss", "correct"]].copy()
    s["trial"] = s["trial"].astype(str)
    s["epoch"] = s["epoch"].astype(int)
    th = epochs[["trial", "epoch", "l_mid"]].copy()
    th["trial"] = th["trial"].astype(str)
    th["epoch"] = th["epoch"].astype(int)
    s = s.merge(th, on=["trial", "epoch"], how="left")
    s["below"] = s["loss"].astype(float) < s["l_mid"].astype(float)
    s["correct"] = s["correct"].astype(bool)
    keys = samples[["trial", "epoch"]].astype({"trial": str, "epoch": int}).drop_duplicates()
    out = keys.merge(th, on=["trial", "epoch"], how="left")
    for flag, name in ((True, "correct"), (False, "incorrect")):
        part = s[s["correct"] == flag].groupby(["trial", "epoch"])
        stats = pd.DataFrame({f"n_{name}": part.size(), f"_below_{name}": part["below"].sum()}).reset_index()
        out = out.merge(stats, on=["trial", "epoch"], how="left")
        n = out[f"n_{name}"].fillna(0).astype(int)
        out[f"n_{name}"] = n
        frac = out[f"_below_{name}"] / n.where(n > 0)
        out[f"frac_{name}_below"] = frac.where(out["l_mid"].notna()).astype(float)
        out = out.drop(columns=f"_below_{name}")
    cols = ["trial", "epoch", "l_mid", "frac_correct_below", "frac_incorrect_below", "n_correct", "n_incorrect"]
    return out[cols].sort_values(["trial", "epoch"]).reset_index(drop=True)


def plot_lmid_separation(separation: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Fig. 6: % of correct (solid) and incorrect (dashed) unmixed samples with loss below L_mid."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (trial, df) in enumerate(separation.groupby("trial", sort=True)):
        c = colors[i % len(colors)]
        name = _trial_label(trial, labels)
        ax.plot(df["epoch"], 100 * df["frac_correct_below"], color=c, marker="o", ms=3,
                label=f"{name}: correct samples")
        ax.plot(df["epoch"], 100 * df["frac_incorrect_below"], color=c, ls="--", marker="x", ms=3,
                label=f"{name}: incorrect samples")
    ax.set_title("Efficacy of L_mid: unmixed samples with loss < L_mid (Fig. 6)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("share of unmixed samples below L_mid (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- Fig. 8: Region 3 occupancy


def region3_occupancy(samples: pd.DataFrame) -> pd.DataFrame:
    """Fig. 8 as a table: per trial, a histogram of each sample's share of epochs spent in Region 3.

    A sample's share = (epochs with ``region == 3``) / (epochs of the trial in ``samples``); it falls in
    bin i when i/10 <= share < (i+1)/10, the last bin including 100 %. Samples are split into the set C
    (correct in the trial's last epoch) and I (incorrect then). Rows: trial, ``final`` ('correct' |
    'incorrect'), ``bin`` (0..9), ``bin_label`` ('0-10%' ...), ``count``, ``fraction`` (of the samples in
    that set, 0..1; NaN for an empty set). Every (trial, final, bin) is present, empty bins with count 0.
    """
    _require(samples, ["trial", "epoch", "sample_id", "region", "correct"], "region3_occupancy")
    rows = []
    for trial, df in samples.groupby(samples["trial"].astype(str), sort=True):
        n_epochs = df["epoch"].nunique()
        last = df["epoch"].max()
        in3 = (df["region"].astype(int) == 3).groupby(df["sample_id"]).sum()
        final = df.loc[df["epoch"] == last].set_index("sample_id")["correct"].astype(bool)
        final = final.reindex(in3.index)
        # integer arithmetic: a share of exactly k/10 lands in bin k
        bins = np.minimum((in3.to_numpy() * 10) // n_epochs, 9)
        rows += _occupancy_rows(trial, bins, (final == True).to_numpy(), (final == False).to_numpy())  # noqa: E712
    return pd.DataFrame(rows, columns=["trial", "final", "bin", "bin_label", "count", "fraction"])


def _occupancy_rows(trial: str, bins: np.ndarray, correct: np.ndarray, incorrect: np.ndarray) -> list[dict]:
    """The 20 rows of one trial: ``bins`` per sample, ``correct`` / ``incorrect`` its membership of C / I."""
    rows = []
    for sel, name in ((correct, "correct"), (incorrect, "incorrect")):
        counts = np.bincount(bins[sel], minlength=10)
        total = int(sel.sum())
        for b in range(10):
            rows.append({"trial": trial, "final": name, "bin": b, "bin_label": OCCUPANCY_BINS[b],
                         "count": int(counts[b]), "fraction": counts[b] / total if total else np.nan})
    return rows


def plot_region3_occupancy(occupancy: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Fig. 8: (a) samples incorrect at the end (I), (b) correct at the end (C); bars per trial."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True, sharey=True)
    trials = sorted(occupancy["trial"].unique())
    width = 0.8 / max(len(trials), 1)
    x = np.arange(10)
    for ax, final, title in ((axes[0], "incorrect", "(a) set I: incorrect after training"),
                             (axes[1], "correct", "(b) set C: correct after training")):
        for i, trial in enumerate(trials):
            df = occupancy[(occupancy["trial"] == trial) & (occupancy["final"] == final)].sort_values("bin")
            ax.bar(x - 0.4 + width * (i + 0.5), 100 * df["fraction"].fillna(0), width,
                   label=_trial_label(trial, labels))
        ax.set_xticks(x, OCCUPANCY_BINS, rotation=45, fontsize="small")
        ax.set_xlabel("share of epochs spent in Region 3")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of samples in the set (%)")
    axes[1].legend(fontsize="small")
    fig.suptitle("Region 3 occupancy (Fig. 8)")
    return fig


# ---------------------------------------------------------------- Fig. 13: loss change


def loss_change(samples: pd.DataFrame) -> pd.DataFrame:
    """Fig. 13: per (trial, epoch E): ``mean_loss`` over samples, and for E >= 1 the mean over samples
    present in both E-1 and E of loss(E) - loss(E-1) (``mean_change``) and of its absolute value
    (``mean_abs_change``); NaN at a trial's first epoch. ``n_samples``: samples with both losses."""
    _require(samples, ["trial", "epoch", "sample_id", "loss"], "loss_change")
    s = samples[["trial", "epoch", "sample_id", "loss"]].copy()
    s["trial"] = s["trial"].astype(str)
    s["epoch"] = s["epoch"].astype(int)
    s["loss"] = s["loss"].astype(float)
    means = s.groupby(["trial", "epoch"])["loss"].mean().rename("mean_loss").reset_index()
    prev = s.assign(epoch=s["epoch"] + 1).rename(columns={"loss": "prev_loss"})
    pairs = s.merge(prev, on=["trial", "epoch", "sample_id"], how="inner")
    pairs["change"] = pairs["loss"] - pairs["prev_loss"]
    pairs["abs_change"] = pairs["change"].abs()
    g = pairs.groupby(["trial", "epoch"])
    changes = pd.DataFrame({"mean_change": g["change"].mean(), "mean_abs_change": g["abs_change"].mean(),
                            "n_samples": g.size()}).reset_index()
    out = means.merge(changes, on=["trial", "epoch"], how="left")
    out["n_samples"] = out["n_samples"].fillna(0).astype(int)
    return out.sort_values(["trial", "epoch"]).reset_index(drop=True)


def plot_loss_change(changes: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Fig. 13: mean loss per epoch (top) and its mean per-sample change between epochs (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, constrained_layout=True)
    for trial, df in changes.groupby("trial", sort=True):
        name = _trial_label(trial, labels)
        top.plot(df["epoch"], df["mean_loss"], marker="o", ms=3, label=name)
        bottom.plot(df["epoch"], df["mean_change"], marker="o", ms=3, label=f"{name}: mean change")
        bottom.plot(df["epoch"], df["mean_abs_change"], ls="--", label=f"{name}: mean |change|")
    top.set_title("Per-sample loss across epochs (Fig. 13)")
    top.set_ylabel("mean per-sample loss (nats)")
    bottom.axhline(0, color="gray", lw=0.8)
    bottom.set_ylabel("loss(E) - loss(E-1) (nats)")
    bottom.set_xlabel("epoch E")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- per-sample trajectories


def trajectories(samples: pd.DataFrame, sample_ids: Iterable[int]) -> pd.DataFrame:
    """Loss, region, correctness and mixing of the chosen samples over epochs, one row per
    (trial, sample_id, epoch), sorted so; columns that ``samples`` lacks are left out."""
    ids = [int(i) for i in sample_ids]
    _require(samples, ["trial", "epoch", "sample_id"], "trajectories")
    cols = [c for c in ("trial", "sample_id", "epoch", "loss", "correct", "region", "mixed", "partner_id",
                        "weight", "mix_next", "mix_path", "skipped") if c in samples.columns]
    out = samples.loc[samples["sample_id"].isin(ids), cols]
    return out.sort_values(["trial", "sample_id", "epoch"]).reset_index(drop=True)


def plot_trajectories(traj: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Loss vs epoch per (trial, sample); filled markers where the sample was mixed, marker colour by
    region (0 grey: thresholds undefined, 1 green, 2 orange, 3 red)."""
    _require(traj, ["trial", "sample_id", "epoch", "loss"], "plot_trajectories")
    region_colors = {0: "#999999", 1: "#2ca02c", 2: "#ff7f0e", 3: "#d62728"}
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for (trial, sid), df in traj.groupby(["trial", "sample_id"], sort=True):
        ax.plot(df["epoch"], df["loss"], lw=1.2, label=f"{_trial_label(trial, labels)} #{sid}")
        if "region" in df:
            colors = [region_colors.get(int(r), "k") for r in df["region"]]
            mixed = df["mixed"].astype(bool).to_numpy() if "mixed" in df else np.zeros(len(df), bool)
            if mixed.any():
                ax.scatter(df["epoch"][mixed], df["loss"][mixed], marker="o", s=30, zorder=3,
                           c=[c for c, m in zip(colors, mixed) if m])
            if (~mixed).any():
                ax.scatter(df["epoch"][~mixed], df["loss"][~mixed], marker="o", s=30, zorder=3,
                           facecolors="none", edgecolors=[c for c, m in zip(colors, mixed) if not m])
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", color=c, label=f"Region {r}" if r else "no thresholds yet")
                for r, c in region_colors.items()]
    handles += [Line2D([], [], ls="", marker="o", color="k", label="mixed"),
                Line2D([], [], ls="", marker="o", mfc="none", color="k", label="unmixed")]
    ax.legend(handles=handles, fontsize="small", ncol=2)
    ax.set_title("Per-sample loss trajectories")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("per-sample loss (nats)")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- the same figures from the Parquet files


def _partitions(root, sweep: str, trials=None) -> dict[str, list[tuple[int, str]]]:
    """trial -> [(epoch, file)] sorted by epoch: the sample files a query reads (partition pruning)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for path in sample_files(root, sweep, trials=trials):
        parts = dict(p.split("=", 1) for p in Path(path).parts[-3:-1])
        out.setdefault(parts["trial"], []).append((int(parts["epoch"]), path))
    return {t: sorted(files) for t, files in sorted(out.items())}


def _connect():
    """An in-memory DuckDB with bounded memory; temporary files spill to the system temp folder."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {max(1, min(os.cpu_count() or 1, 8))}")
    con.execute("SET memory_limit = '2GB'")
    con.execute("SET preserve_insertion_order = false")
    return con


_SAMPLES = ("read_parquet($files, hive_partitioning = true, "
            "hive_types = {'trial': 'VARCHAR', 'epoch': 'INTEGER'})")


def _query(root, sweep: str, trials, sql: str, params: dict | None = None) -> pd.DataFrame | None:
    """Run ``sql`` (which reads the sample files as ``{samples}``) over the chosen trials' files; None when
    there are none."""
    files = [f for parts in _partitions(root, sweep, trials).values() for _, f in parts]
    if not files:
        return None
    con = _connect()
    try:
        return con.execute(sql.format(samples=_SAMPLES), {"files": files, **(params or {})}).df()
    finally:
        con.close()


def mix_fraction_by_path_from_files(root, sweep: str, trials=None) -> pd.DataFrame:
    """``mix_fraction_by_path`` from an epoch-by-epoch scan with Arrow (``mix_next``, ``mix_path`` as a
    dictionary, ``mixed``, ``skipped``): counts per epoch file, no query engine (DuckDB's group-by over the
    string column cost ~40% more CPU at 1.28 M x 90 x 2)."""
    cols = ["trial", "epoch", "next_region1", "next_region3", "next_other", "next_total", "mixed", "skipped",
            "n_samples"]
    rows = []
    for trial, parts in _partitions(root, sweep, trials).items():
        for epoch, path in parts:
            c = _path_counts(path)
            n = c.pop("n_samples")
            rows.append({"trial": trial, "epoch": epoch, **{k: v / n if n else np.nan for k, v in c.items()},
                         "n_samples": n})
    return pd.DataFrame(rows, columns=cols).astype({"epoch": int, "n_samples": int})


def _path_counts(path: str) -> dict[str, int]:
    """One sample file's counts for ``mix_fraction_by_path``: mix_next by path (null path: other), mixed,
    skipped (absent or null: False) and rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    wanted = [c for c in ("mix_next", "mix_path", "mixed", "skipped") if c in names]
    table = pq.read_table(path, columns=wanted, read_dictionary=["mix_path"] if "mix_path" in names else None)
    table = table.unify_dictionaries()  # one dictionary over the row groups

    def count(mask) -> int:
        return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)

    nxt = pc.fill_null(table.column("mix_next"), False)
    total = count(nxt)
    by_path = {"region1": 0, "region3": 0}
    if "mix_path" in names:
        arr = table.column("mix_path").combine_chunks()
        dictionary = arr.dictionary.to_pylist()
        for name in by_path:
            if name in dictionary:
                by_path[name] = count(pc.and_(nxt, pc.equal(arr.indices, dictionary.index(name))))
    return {"next_region1": by_path["region1"], "next_region3": by_path["region3"],
            "next_other": total - by_path["region1"] - by_path["region3"], "next_total": total,
            "mixed": count(table.column("mixed")),
            "skipped": count(table.column("skipped")) if "skipped" in names else 0,
            "n_samples": table.num_rows}


def lmid_separation_from_files(root, sweep: str, trials=None) -> pd.DataFrame:
    """``lmid_separation`` computed by DuckDB over the sample files joined with the epoch table."""
    cols = ["trial", "epoch", "l_mid", "frac_correct_below", "frac_incorrect_below", "n_correct", "n_incorrect"]
    th = load_epochs(root, sweep, trials=trials, columns=["l_mid"])[["trial", "epoch", "l_mid"]]
    th = th.astype({"trial": str, "epoch": "int32", "l_mid": float})
    sql = """
        WITH s AS (
            SELECT trial, epoch, correct, loss
            FROM {samples} WHERE NOT mixed AND NOT coalesce(skipped, false)),
        g AS (
            SELECT s.trial, s.epoch,
                   count(*) FILTER (WHERE correct) AS n_correct,
                   count(*) FILTER (WHERE NOT correct) AS n_incorrect,
                   count(*) FILTER (WHERE correct AND loss < th.l_mid) AS below_correct,
                   count(*) FILTER (WHERE NOT correct AND loss < th.l_mid) AS below_incorrect
            FROM s LEFT JOIN th ON s.trial = th.trial AND s.epoch = th.epoch
            GROUP BY s.trial, s.epoch),
        keys AS (SELECT DISTINCT trial, epoch FROM {samples})
        SELECT keys.trial, keys.epoch, th.l_mid,
               CASE WHEN th.l_mid IS NOT NULL AND g.n_correct > 0
                    THEN g.below_correct / g.n_correct END AS frac_correct_below,
               CASE WHEN th.l_mid IS NOT NULL AND g.n_incorrect > 0
                    THEN g.below_incorrect / g.n_incorrect END AS frac_incorrect_below,
               coalesce(g.n_correct, 0) AS n_correct, coalesce(g.n_incorrect, 0) AS n_incorrect
        FROM keys LEFT JOIN th ON keys.trial = th.trial AND keys.epoch = th.epoch
                  LEFT JOIN g ON keys.trial = g.trial AND keys.epoch = g.epoch
        ORDER BY keys.trial, keys.epoch"""
    files = [f for parts in _partitions(root, sweep, trials).values() for _, f in parts]
    if not files:
        return pd.DataFrame(columns=cols)
    con = _connect()
    try:
        con.register("th", th)
        out = con.execute(sql.format(samples=_SAMPLES), {"files": files}).df()
    finally:
        con.close()
    out = out.astype({"epoch": int, "n_correct": int, "n_incorrect": int, "l_mid": float,
                      "frac_correct_below": float, "frac_incorrect_below": float})
    return out[cols].reset_index(drop=True)


def trajectories_from_files(root, sweep: str, sample_ids: Iterable[int], trials=None) -> pd.DataFrame:
    """``trajectories`` computed by DuckDB: only rows of the chosen samples leave the scan."""
    ids = [int(i) for i in sample_ids]
    cols = ["trial", "sample_id", "epoch", "loss", "correct", "region", "mixed", "partner_id", "weight",
            "mix_next", "mix_path", "skipped"]
    sql = f"SELECT {', '.join(cols)} FROM {{samples}} WHERE sample_id IN (SELECT unnest($ids)) " \
          "ORDER BY trial, sample_id, epoch"
    out = _query(root, sweep, trials, sql, {"ids": ids}) if ids else None
    if out is None:
        return pd.DataFrame(columns=cols)
    return out.astype({"epoch": "int32"}).reset_index(drop=True)


def _epoch_columns(path: str, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _dense(ids: np.ndarray, size: int) -> int:
    return max(size, int(ids.max()) + 1 if len(ids) else 0)


def _grow(array: np.ndarray, size: int, fill) -> np.ndarray:
    if len(array) >= size:
        return array
    return np.concatenate([array, np.full(size - len(array), fill, dtype=array.dtype)])


def region3_occupancy_from_files(root, sweep: str, trials=None) -> pd.DataFrame:
    """``region3_occupancy`` from an epoch-by-epoch scan (``sample_id``, ``region``; ``correct`` of the
    last epoch): one counter per sample id, so memory follows one epoch, not the whole history."""
    rows = []
    for trial, parts in _partitions(root, sweep, trials).items():
        in3 = np.zeros(0, np.int64)
        seen = np.zeros(0, bool)
        for _, path in parts:
            cols = _epoch_columns(path, ["sample_id", "region"])
            ids = cols["sample_id"].astype(np.int64)
            size = _dense(ids, len(in3))
            in3, seen = _grow(in3, size, 0), _grow(seen, size, False)
            in3[ids] += cols["region"] == 3  # one row per (sample, epoch): ids are unique
            seen[ids] = True
        last = _epoch_columns(parts[-1][1], ["sample_id", "correct"])
        final = np.full(len(in3), -1, np.int8)  # -1: not in the last epoch, in neither set
        final[last["sample_id"].astype(np.int64)] = last["correct"].astype(np.int8)
        bins = np.minimum((in3 * 10) // len(parts), 9)
        rows += _occupancy_rows(trial, bins, seen & (final == 1), seen & (final == 0))
    return pd.DataFrame(rows, columns=["trial", "final", "bin", "bin_label", "count", "fraction"])


def loss_change_from_files(root, sweep: str, trials=None) -> pd.DataFrame:
    """``loss_change`` from an epoch-by-epoch scan (``sample_id``, ``loss``): epoch E is paired with E - 1
    through a dense per-sample array, never a join over the whole history."""
    rows = []
    for trial, parts in _partitions(root, sweep, trials).items():
        prev_epoch, prev_loss, prev_seen = None, np.zeros(0), np.zeros(0, bool)
        for epoch, path in parts:
            cols = _epoch_columns(path, ["sample_id", "loss"])
            ids = cols["sample_id"].astype(np.int64)
            loss = cols["loss"].astype(np.float64)
            row = {"trial": trial, "epoch": epoch, "mean_loss": loss.mean() if len(loss) else np.nan,
                   "mean_change": np.nan, "mean_abs_change": np.nan, "n_samples": 0}
            if prev_epoch == epoch - 1 and len(ids):
                inside = ids < len(prev_seen)
                both = np.zeros(len(ids), bool)
                both[inside] = prev_seen[ids[inside]]
                if both.any():
                    change = loss[both] - prev_loss[ids[both]]
                    row.update(mean_change=change.mean(), mean_abs_change=np.abs(change).mean(),
                               n_samples=int(both.sum()))
            rows.append(row)
            size = _dense(ids, 0)
            prev_loss, prev_seen = np.zeros(size), np.zeros(size, bool)
            prev_loss[ids], prev_seen[ids] = loss, True
            prev_epoch = epoch
    out = pd.DataFrame(rows, columns=["trial", "epoch", "mean_loss", "mean_change", "mean_abs_change",
                                      "n_samples"])
    return out.astype({"epoch": int, "n_samples": int})
