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
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "OCCUPANCY_BINS",
    "loss_change",
    "lmid_separation",
    "mix_fraction_by_path",
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
        for flag, name in ((True, "correct"), (False, "incorrect")):
            sel = (final == flag).to_numpy()
            counts = np.bincount(bins[sel], minlength=10)
            total = int(sel.sum())
            for b in range(10):
                rows.append({"trial": trial, "final": name, "bin": b, "bin_label": OCCUPANCY_BINS[b],
                             "count": int(counts[b]), "fraction": counts[b] / total if total else np.nan})
    return pd.DataFrame(rows, columns=["trial", "final", "bin", "bin_label", "count", "fraction"])


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
