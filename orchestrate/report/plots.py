"""The report's PNG plots (matplotlib, Agg backend): accuracy vs speedup and vs wall time (with the
iso-time frontier), test-accuracy curves, fraction mixed per epoch by entry path. Accuracies in %."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from orchestrate.report.summary import _frontier, _Group, _hashable, _mean_curve  # noqa: E402

__all__ = ["plot_accuracy_vs_speedup", "plot_fraction_mixed", "plot_test_accuracy"]


def _colors(groups: list[_Group]) -> dict[int, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {id(g): ("black" if g.is_baseline else cycle[i % len(cycle)]) for i, g in enumerate(groups)}


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_accuracy_vs_speedup(groups: list[_Group], summary: pd.DataFrame, sweep: str = "") -> Figure:
    """Left: top-1 (%) vs wall-clock speedup over the baseline, a point per group with ±1 std bars.
    Right: top-1 vs mean wall time (s), with the baseline frontier through the budget baselines; without
    budget baselines the panel says that there is no frontier."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    multi_model = len({g.model for g in groups}) > 1
    colors = _colors([g for g in groups if not g.is_baseline])
    drawn = False
    for g, (_, row) in zip(groups, summary.iterrows()):
        if math.isnan(row["top1"]):
            continue
        err = 0 if math.isnan(row["top1_std"]) else row["top1_std"]
        name = g.name(multi_model)
        if g.is_full_baseline:
            style = {"color": "black", "marker": "*", "ms": 14}
        elif g.is_baseline:
            style = {"color": "gray", "marker": "s", "ms": 6}
        else:
            style = {"color": colors[id(g)], "marker": "o", "ms": 7}
        if not math.isnan(row["speedup"]):
            left.errorbar(row["speedup"], row["top1"], yerr=err, capsize=3, ls="", label=name, **style)
            drawn = True
        walls = [t.wall for t in g.done]
        xerr = float(np.std(walls, ddof=1)) if len(walls) > 1 else 0
        right.errorbar(row["wall_seconds"], row["top1"], xerr=xerr, yerr=err, capsize=3, ls="", label=name,
                       **style)
    seen = set()
    frontiers = 0
    for g in groups:  # the frontier of each (model, other labels) that has a full baseline
        if not g.is_full_baseline or (g.model, _hashable(g.extra)) in seen:
            continue
        seen.add((g.model, _hashable(g.extra)))
        frontier = _frontier(groups, g)
        if frontier is not None:
            frontiers += 1
            label = "baseline frontier" + (f" ({g.name(multi_model)})" if len(seen) > 1 or multi_model else "")
            right.plot(*frontier, color="black", ls="--", lw=1, label=label)
    if drawn:
        left.axvline(1.0, color="gray", lw=0.8, ls=":")
    else:
        _no_data(left, "no baseline to compare with")
    if not right.get_legend_handles_labels()[0]:
        _no_data(right, "no finished trial")
    elif not frontiers:
        right.text(0.5, 0.04, "no iso-time frontier: this sweep has no budget baselines\n"
                   "(add baseline_budgets to the sweep file)", ha="center", va="bottom",
                   transform=right.transAxes, color="firebrick", fontsize="small")
    left.set_title("Accuracy vs speedup over baseline")
    left.set_xlabel("wall-clock speedup over baseline (×)")
    left.set_ylabel("final test top-1 (%), mean ± std over seeds")
    right.set_title("Accuracy vs training time (iso-time frontier)" if frontiers
                    else "Accuracy vs training time (no iso-time frontier)")
    right.set_xlabel("training wall time (s), mean over seeds")
    right.set_ylabel("final test top-1 (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"Sweep {sweep}: accuracy vs speed")
    return fig


def _model_axes(models: list[str], title: str):
    n = max(len(models), 1)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.5), constrained_layout=True, squeeze=False)
    fig.suptitle(title)
    return fig, dict(zip(models, axes[0])) if models else {"": axes[0][0]}


def plot_test_accuracy(groups: list[_Group], sweep: str = "") -> Figure:
    """Test top-1 (%) vs epoch per group, mean over finished seeds; one panel per model."""
    models = list(dict.fromkeys(g.model for g in groups))
    fig, axes = _model_axes(models, f"Sweep {sweep}: test accuracy per epoch (mean over seeds)")
    colors = _colors([g for g in groups if not g.is_baseline])
    for ax in axes.values():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
    for model, ax in axes.items():
        for g in (g for g in groups if g.model == model):
            curve = _mean_curve(g.done)
            if not len(curve):
                continue
            if g.is_full_baseline:
                style = {"color": "black", "lw": 2.2}
            elif g.is_baseline:
                style = {"color": "gray", "lw": 1, "ls": "--"}
            else:
                style = {"color": colors[id(g)], "lw": 1.5}
            ax.plot(curve["epoch"], curve["test_acc"], label=f"{g.name()} (n={len(g.done)})", **style)
        ax.set_title(model or "all trials")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            _no_data(ax, "no finished trial")
    return fig


def plot_fraction_mixed(groups: list[_Group], sweep: str = "") -> Figure:
    """Per mixing group: % of samples mixed in each epoch, and % of S_mix by entry path (Region 1 /
    Region 3 / other rule), drawn at the epoch they are mixed in (decided after the one before)."""
    mixing = []
    for g in groups:
        curves = [t.epochs for t in g.done if len(t.epochs)]
        if not curves:
            continue
        ep = pd.concat(curves)
        if (ep["frac_mixed"].fillna(0) > 0).any() or (ep["n_mix_next"].fillna(0) > 0).any():
            mixing.append((g, ep))
    multi_model = len({g.model for g in groups}) > 1
    n = max(len(mixing), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), constrained_layout=True,
                             squeeze=False, sharey=True)
    fig.suptitle(f"Sweep {sweep}: samples mixed per epoch, by entry path (mean over seeds)")
    flat = list(axes.flat)
    if not mixing:
        _no_data(flat[0], "no mixing variant in this sweep")
    for ax, (g, ep) in zip(flat, mixing):
        n_samples = ep["n_samples"].where(ep["n_samples"] > 0)
        ep = ep.assign(
            region1=100 * ep["n_next_region1"] / n_samples,
            region3=100 * ep["n_next_region3"] / n_samples,
            other=100 * (ep["n_mix_next"] - ep["n_next_region1"] - ep["n_next_region3"]) / n_samples,
            mixed=100 * ep["frac_mixed"],
        )
        m = ep.groupby("epoch", sort=True)[["region1", "region3", "other", "mixed"]].mean().reset_index()
        nxt = m[m["epoch"] < m["epoch"].max()]  # the decision after the last epoch is never trained
        ax.plot(m["epoch"], m["mixed"], color="black", lw=2, label="mixed in epoch")
        ax.plot(nxt["epoch"] + 1, nxt["region1"], color="tab:green", ls="--", label="S_mix via Region 1")
        ax.plot(nxt["epoch"] + 1, nxt["region3"], color="tab:red", ls="--", label="S_mix via Region 3")
        if (nxt["other"].fillna(0) > 0).any():
            ax.plot(nxt["epoch"] + 1, nxt["other"], color="tab:blue", ls=":", label="S_mix, other rule")
        ax.set_title(g.name(multi_model), fontsize="medium")
        ax.legend(fontsize="small")
    for ax in flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of training samples (%)")
        ax.grid(alpha=0.3)
    for ax in flat[len(mixing) if mixing else 1:]:
        ax.set_visible(False)
    return fig
