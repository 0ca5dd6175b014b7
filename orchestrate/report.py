"""A sweep's comparison table and plots, from its histories alone (CONTRACT.md, "Report").

``summarize(root, sweep)`` gives one row per group of trials (the trial labels minus the seed: model,
variant, every other grid axis; the iso-time baselines trained on a share ``budget`` < 1 of the epochs
are groups of their own). ``write_report(root, sweep)`` writes ``<root>/<sweep>/report/``: summary.csv,
summary.md and the PNG plots. Reads only the epoch table and the trial records, never the per-sample
history, so it stays cheap on big sweeps. Imports neither Ray nor MLflow (the CLI logs the folder).

How the numbers are compared (METHOD.md, "How results are compared"); all accuracies in percent:
- Only trials with status ``done`` count; failed and still running ones are counted and listed.
- The reference of a group is the full-budget ``baseline`` group with the same model and the same other
  labels; if there is none, every full-budget ``baseline`` trial of the same model, pooled
  (``baseline_match`` says which: ``exact`` / ``model`` / empty when there is no baseline).
- ``top1_mean`` / ``top1_std``: final test top-1 over seeds (sample std, blank for one seed);
  ``delta_top1``: ``top1_mean`` minus the reference's, in points.
- ``wall_seconds``: mean over seeds of the training time (sum of ``epoch_seconds``; evaluation, policy
  and history writing excluded). ``speedup``: reference wall / group wall (ratio of the means).
- ``inputs_ratio``: mean inputs processed over all epochs / the reference's (hardware-free).
- ``iso_time_gain``: ``top1_mean`` minus the baseline frontier's accuracy at the group's wall time. The
  frontier is the points (mean wall, mean top-1) of the budget baselines and the full baseline that match
  as above, sorted by wall time, linearly interpolated; blank outside its range or with fewer than two
  points (no budget baselines). The baselines themselves lie on it: 0.
- ``early_epoch``: the first epoch (0-based, as in the history) at which the reference's mean test-accuracy
  curve reaches the group's final mean top-1; ``early_speedup``: the reference's total time / its
  cumulative time up to and including that epoch (mean epoch times over seeds); blank if never reached.
- ``final_frac_mixed`` / ``mean_frac_mixed``: share of samples mixed in the last epoch / on average over
  epochs (fractions 0..1, means over seeds).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mixtrain_trainer.history import load_epochs, load_trials, storage_root  # noqa: E402

__all__ = ["SUMMARY_COLUMNS", "summarize", "write_report"]

BASELINE = "baseline"
#: the fixed columns of ``summarize`` (grid-axis label columns go after ``budget``)
SUMMARY_COLUMNS = [
    "model", "variant", "budget", "n_seeds", "n_failed", "n_running", "top1_mean", "top1_std", "top5_mean",
    "delta_top1", "wall_seconds", "speedup", "inputs_ratio", "iso_time_gain", "early_epoch",
    "early_speedup", "final_frac_mixed", "mean_frac_mixed", "epochs", "seeds", "baseline_match", "missing",
]
_ID_LABELS = ("model", "variant", "budget", "seed")
_EPOCH_COLUMNS = ["epoch", "test_acc", "test_top5", "epoch_seconds", "n_inputs", "frac_mixed",
                  "n_samples", "n_next_region1", "n_next_region3", "n_mix_next"]


# ---------------------------------------------------------------- collecting trials into groups


@dataclass
class _Trial:
    trial_id: str
    status: str
    error: str
    model: str
    variant: str  # the label (a variant entry's display name)
    base_variant: str  # the METHOD.md variant it runs (config.variant)
    budget: float
    seed: object
    extra: dict  # the other labels (grid axes), dotted keys
    epochs: pd.DataFrame  # this trial's rows of the epoch table (maybe empty)
    top1: float = math.nan  # percent
    top5: float = math.nan
    wall: float = math.nan  # seconds
    inputs: float = math.nan
    n_epochs: float = math.nan
    final_frac_mixed: float = math.nan
    mean_frac_mixed: float = math.nan


@dataclass
class _Group:
    model: str
    variant: str
    base_variant: str
    budget: float
    extra: dict
    trials: list[_Trial] = field(default_factory=list)

    @property
    def done(self) -> list[_Trial]:
        return [t for t in self.trials if t.status == "done"]

    @property
    def is_baseline(self) -> bool:
        """On the baseline frontier: the plain ``baseline`` or one of its budget-scaled copies (a
        differently labelled baseline entry, with overrides say, is compared like any variant)."""
        return self.base_variant == BASELINE and (self.variant == BASELINE or self.budget < 1.0)

    @property
    def is_full_baseline(self) -> bool:
        return self.is_baseline and self.budget >= 1.0

    def name(self, with_model: bool = False) -> str:
        parts = [self.variant]
        if self.budget < 1.0:
            parts[0] += f" @ {self.budget:g} of epochs"
        parts += [f"{k}={v}" for k, v in sorted(self.extra.items())]
        if with_model:
            parts.insert(0, self.model)
        return ", ".join(parts)


def _hashable(value):
    return json.dumps(value, sort_keys=True, default=str)


def _float(value, default=math.nan) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _trial(record: dict, epochs: pd.DataFrame) -> _Trial:
    labels = dict(record.get("labels") or {})
    config = record.get("config") or {}
    tid = str(record.get("trial_id", ""))
    budget = _float(config.get("budget", labels.get("budget")), 1.0)
    budget = budget if 0 < budget <= 1 else 1.0
    base_variant = str(config.get("variant") or record.get("variant") or labels.get("variant") or "")
    variant = str(labels.get("variant") or base_variant)
    if budget < 1.0 and base_variant == BASELINE:
        variant = BASELINE  # labelled 'baseline@0.5' by the sweep; the budget column says which
    t = _Trial(
        trial_id=tid,
        status=str(record.get("status", "unknown")),
        error=str(record.get("error") or ""),
        model=str(labels.get("model") or config.get("model") or ""),
        variant=variant,
        base_variant=base_variant,
        budget=budget,
        seed=config.get("seed", labels.get("seed")),
        extra={k: v for k, v in labels.items() if k not in _ID_LABELS},
        epochs=epochs,
    )
    if t.status != "done":
        return t
    final = record.get("final") or {}
    if len(epochs):
        last = epochs.iloc[-1]
        t.top1 = 100 * _float(last.get("test_acc"))
        t.top5 = 100 * _float(last.get("test_top5"))
        t.wall = float(epochs["epoch_seconds"].sum(min_count=1))
        t.inputs = float(epochs["n_inputs"].sum(min_count=1))
        t.n_epochs = float(len(epochs))
        t.final_frac_mixed = _float(last.get("frac_mixed"))
        t.mean_frac_mixed = float(epochs["frac_mixed"].mean())
    else:  # no epoch table (say, written elsewhere): fall back on the record's final metrics
        t.top1 = 100 * _float(final.get("final_test_acc"))
        t.top5 = 100 * _float(final.get("final_test_top5"))
        t.wall = _float(final.get("total_train_seconds"))
        t.inputs = _float(final.get("total_inputs"))
        t.n_epochs = _float(final.get("epochs"))
    return t


def _load_epochs(root, sweep: str) -> pd.DataFrame:
    try:
        epochs = load_epochs(root, sweep)
    except FileNotFoundError:
        epochs = pd.DataFrame(columns=["trial", *_EPOCH_COLUMNS])
    epochs = epochs.copy()
    epochs["trial"] = epochs["trial"].astype(str)
    return epochs


def _collect(root, sweep: str) -> tuple[list[_Group], pd.DataFrame, list[dict]]:
    """The trial records grouped (in a stable order: models as first seen, then the baseline, the budget
    baselines from the largest budget, then the other variants by name), the epoch table, the records."""
    records = load_trials(root, sweep)
    epochs = _load_epochs(root, sweep)
    by_trial = {tid: df.sort_values("epoch").reset_index(drop=True) for tid, df in epochs.groupby("trial")}
    empty = epochs.iloc[0:0]
    groups: dict[tuple, _Group] = {}
    for rec in records:
        t = _trial(rec, by_trial.get(str(rec.get("trial_id", "")), empty))
        key = (t.model, t.variant, t.base_variant, t.budget, _hashable(t.extra))
        groups.setdefault(key, _Group(t.model, t.variant, t.base_variant, t.budget, t.extra)).trials.append(t)
    first_seen = {key: i for i, key in enumerate(groups)}
    model_order = {m: i for i, m in enumerate(dict.fromkeys(g.model for g in groups.values()))}

    def order(key):
        g = groups[key]
        return (model_order[g.model], 0 if g.is_baseline else 1, -g.budget, g.variant, first_seen[key])

    return [groups[k] for k in sorted(groups, key=order)], epochs, records


# ---------------------------------------------------------------- statistics of a set of trials


def _mean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _std(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def _mean_curve(trials: list[_Trial]) -> pd.DataFrame:
    """Per epoch: mean test accuracy (%) and mean epoch seconds over the trials; cumulative seconds."""
    frames = [t.epochs[["epoch", "test_acc", "epoch_seconds"]] for t in trials if len(t.epochs)]
    if not frames:
        return pd.DataFrame(columns=["epoch", "test_acc", "epoch_seconds", "cum_seconds"])
    curve = pd.concat(frames).groupby("epoch", sort=True).mean().reset_index()
    curve["test_acc"] = 100 * curve["test_acc"]
    curve["cum_seconds"] = curve["epoch_seconds"].cumsum()
    return curve


@dataclass
class _Reference:
    match: str
    trials: list[_Trial]

    @property
    def top1(self) -> float:
        return _mean(t.top1 for t in self.trials)

    @property
    def wall(self) -> float:
        return _mean(t.wall for t in self.trials)

    @property
    def inputs(self) -> float:
        return _mean(t.inputs for t in self.trials)


def _matching(groups: list[_Group], g: _Group, want) -> tuple[str, list[_Group]]:
    """Groups of g's model passing ``want``: those with g's other labels if any, else all of them."""
    same_model = [h for h in groups if h.model == g.model and want(h)]
    exact = [h for h in same_model if h.extra == g.extra]
    if exact:
        return "exact", exact
    return ("model", same_model) if same_model else ("", [])


def _reference(groups: list[_Group], g: _Group) -> _Reference | None:
    match, found = _matching(groups, g, lambda h: h.is_full_baseline)
    trials = [t for h in found for t in h.done]
    return _Reference(match, trials) if trials else None


def _frontier(groups: list[_Group], g: _Group) -> tuple[np.ndarray, np.ndarray] | None:
    """(wall seconds, top-1 %) of the baseline frontier matching g, sorted by wall; None if < 2 points."""
    _, found = _matching(groups, g, lambda h: h.is_baseline)
    by_budget: dict[float, list[_Trial]] = {}
    for h in found:
        by_budget.setdefault(h.budget, []).extend(h.done)
    points = [(_mean(t.wall for t in ts), _mean(t.top1 for t in ts)) for ts in by_budget.values()]
    points = sorted(p for p in points if not (math.isnan(p[0]) or math.isnan(p[1])))
    if len(points) < 2:
        return None
    walls, accs = zip(*points)
    return np.array(walls), np.array(accs)


def _frontier_warnings(groups: list[_Group]) -> list[str]:
    """A frontier whose wall times do not grow with the epoch budget: timings too noisy to interpolate."""
    notes = []
    for g in groups:
        if not g.is_full_baseline:
            continue
        _, found = _matching(groups, g, lambda h: h.is_baseline)
        by_budget: dict[float, list[_Trial]] = {}
        for h in found:
            by_budget.setdefault(h.budget, []).extend(h.done)
        walls = [(b, _mean(t.wall for t in ts)) for b, ts in sorted(by_budget.items())]
        walls = [(b, w) for b, w in walls if not math.isnan(w)]
        for (b1, w1), (b2, w2) in zip(walls, walls[1:]):
            if w2 <= w1:
                notes.append(f"{g.name(True)}: the baseline at budget {b1:g} took {w1:.1f} s, not less than the "
                             f"{w2:.1f} s at budget {b2:g}; wall times are noisy, so iso-time gains and speedups "
                             "of this model are unreliable.")
                break
    return notes


def _iso_time_gain(frontier, wall: float, top1: float, on_frontier: bool) -> float:
    if frontier is None or math.isnan(wall) or math.isnan(top1):
        return math.nan
    if on_frontier:
        return 0.0
    walls, accs = frontier
    if wall < walls[0] or wall > walls[-1]:
        return math.nan
    return float(top1 - np.interp(wall, walls, accs))


def _early(ref: _Reference, top1: float) -> tuple[float, float]:
    curve = _mean_curve(ref.trials)
    if not len(curve) or math.isnan(top1):
        return math.nan, math.nan
    reached = curve[curve["test_acc"] >= top1 - 1e-9]
    if not len(reached):
        return math.nan, math.nan
    row = reached.iloc[0]
    total = curve["cum_seconds"].iloc[-1]
    speedup = total / row["cum_seconds"] if row["cum_seconds"] > 0 else math.nan
    return float(row["epoch"]), float(speedup)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def _missing_note(g: _Group) -> str:
    notes = []
    for t in g.trials:
        if t.status == "done":
            continue
        note = f"{t.trial_id} ({t.status}"
        note += f": {t.error.splitlines()[0] if t.error else 'no error recorded'})" if t.status == "failed" else ")"
        notes.append(note)
    return "; ".join(notes)


# ---------------------------------------------------------------- the table


def _summary(groups: list[_Group]) -> pd.DataFrame:
    extra_cols = list(dict.fromkeys(k for g in groups for k in sorted(g.extra)))
    rows = []
    for g in groups:
        done = g.done
        top1 = _mean(t.top1 for t in done)
        wall = _mean(t.wall for t in done)
        inputs = _mean(t.inputs for t in done)
        ref = _reference(groups, g)
        row = {
            "model": g.model, "variant": g.variant, "budget": g.budget,
            **{k: g.extra.get(k) for k in extra_cols},
            "n_seeds": len(done),
            "n_failed": sum(t.status == "failed" for t in g.trials),
            "n_running": sum(t.status not in ("done", "failed") for t in g.trials),
            "top1_mean": top1, "top1_std": _std(t.top1 for t in done), "top5_mean": _mean(t.top5 for t in done),
            "delta_top1": top1 - ref.top1 if ref else math.nan,
            "wall_seconds": wall,
            "speedup": _ratio(ref.wall, wall) if ref else math.nan,
            "inputs_ratio": _ratio(inputs, ref.inputs) if ref else math.nan,
            "iso_time_gain": _iso_time_gain(_frontier(groups, g), wall, top1, g.is_baseline),
            "early_epoch": math.nan, "early_speedup": math.nan,
            "final_frac_mixed": _mean(t.final_frac_mixed for t in done),
            "mean_frac_mixed": _mean(t.mean_frac_mixed for t in done),
            "epochs": _mean(t.n_epochs for t in done),
            "seeds": " ".join(str(t.seed) for t in sorted(done, key=lambda t: str(t.seed))),
            "baseline_match": ref.match if ref else "",
            "missing": _missing_note(g),
        }
        if ref:
            row["early_epoch"], row["early_speedup"] = _early(ref, top1)
        rows.append(row)
    columns = SUMMARY_COLUMNS[:3] + extra_cols + SUMMARY_COLUMNS[3:]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("n_seeds", "n_failed", "n_running", "early_epoch"):
        table[col] = table[col].astype("Int64")
    return table


def summarize(root, sweep: str) -> pd.DataFrame:
    """One row per group of trials (labels minus seed); see the module docstring for every column."""
    groups, _, _ = _collect(root, sweep)
    return _summary(groups)


# ---------------------------------------------------------------- plots


def _colors(groups: list[_Group]) -> dict[int, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {id(g): ("black" if g.is_baseline else cycle[i % len(cycle)]) for i, g in enumerate(groups)}


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _plot_accuracy_vs_speedup(groups: list[_Group], summary: pd.DataFrame, sweep: str = "") -> Figure:
    """Left: top-1 (%) vs wall-clock speedup over the baseline, a point per group with ±1 std bars.
    Right: top-1 vs mean wall time (s), with the baseline frontier through the budget baselines."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    multi_model = len({g.model for g in groups}) > 1
    colors = _colors([g for g in groups if not g.is_baseline])
    drawn = False
    for g, (_, row) in zip(groups, summary.iterrows()):
        if math.isnan(row["top1_mean"]):
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
            left.errorbar(row["speedup"], row["top1_mean"], yerr=err, capsize=3, ls="", label=name, **style)
            drawn = True
        walls = [t.wall for t in g.done]
        xerr = float(np.std(walls, ddof=1)) if len(walls) > 1 else 0
        right.errorbar(row["wall_seconds"], row["top1_mean"], xerr=xerr, yerr=err, capsize=3, ls="", label=name,
                       **style)
    seen = set()
    for g in groups:  # the frontier of each (model, other labels) that has a full baseline
        if not g.is_full_baseline or (g.model, _hashable(g.extra)) in seen:
            continue
        seen.add((g.model, _hashable(g.extra)))
        frontier = _frontier(groups, g)
        if frontier is not None:
            label = "baseline frontier" + (f" ({g.name(multi_model)})" if len(seen) > 1 or multi_model else "")
            right.plot(*frontier, color="black", ls="--", lw=1, label=label)
    if drawn:
        left.axvline(1.0, color="gray", lw=0.8, ls=":")
    else:
        _no_data(left, "no baseline to compare with")
    if not right.get_legend_handles_labels()[0]:
        _no_data(right, "no finished trial")
    left.set_title("Accuracy vs speedup over baseline")
    left.set_xlabel("wall-clock speedup over baseline (×)")
    left.set_ylabel("final test top-1 (%), mean ± std over seeds")
    right.set_title("Accuracy vs training time (iso-time frontier)")
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


def _plot_test_accuracy(groups: list[_Group], sweep: str = "") -> Figure:
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


def _plot_fraction_mixed(groups: list[_Group], sweep: str = "") -> Figure:
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


# ---------------------------------------------------------------- the report folder


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{value}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _signed(value, digits: int = 2) -> str:
    return "—" if value is None or value is pd.NA or math.isnan(value) else f"{value:+.{digits}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _markdown(sweep: str, summary: pd.DataFrame, records: list[dict], warnings: list[str] = ()) -> str:
    statuses = pd.Series([str(r.get("status", "unknown")) for r in records], dtype=object)
    counts = ", ".join(f"{n} {s}" for s, n in statuses.value_counts().sort_index().items()) or "none"
    extra_cols = [c for c in summary.columns if c not in SUMMARY_COLUMNS]
    headers = ["Model", "Variant", "Epoch budget", *extra_cols, "Seeds", "Top-1 (%)", "Δ top-1 (pts)",
               "Wall time (s)", "Speedup (×)", "Inputs ratio", "Iso-time gain (pts)", "Early-term. epoch",
               "Early-term. speedup (×)", "Mixed: last / mean epoch (%)"]
    lines = [
        f"# Sweep `{sweep}`: summary",
        "",
        f"{_plural(len(records), 'trial')} ({counts}) in {_plural(len(summary), 'group')} "
        "(model × variant × other grid axes; seeds averaged).",
        "",
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + " |",
    ]
    for _, r in summary.iterrows():
        top1 = _fmt(r["top1_mean"])
        if top1 != "—" and not math.isnan(r["top1_std"]):
            top1 += f" ± {r['top1_std']:.2f}"
        seeds = f"{r['n_seeds']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")
        mixed = "—" if math.isnan(r["final_frac_mixed"]) else (
            f"{100 * r['final_frac_mixed']:.1f} / {100 * r['mean_frac_mixed']:.1f}")
        cells = [
            str(r["model"]), str(r["variant"]), "full" if r["budget"] >= 1 else f"{r['budget']:g}",
            *("—" if pd.isna(r[c]) else str(r[c]) for c in extra_cols),
            seeds, top1, _signed(r["delta_top1"]), _fmt(r["wall_seconds"], 1), _fmt(r["speedup"], 2),
            _fmt(r["inputs_ratio"], 3), _signed(r["iso_time_gain"]), _fmt(r["early_epoch"]),
            _fmt(r["early_speedup"], 2), mixed,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        "Top-1: final test accuracy after the last epoch, mean ± sample std over finished seeds. "
        "Δ top-1: difference from the full-budget `baseline` of the same model (and the same other grid "
        "values when such a baseline exists), in percentage points. "
        "Speedup: the baseline's mean training wall-clock time divided by this group's (training epochs "
        "only; evaluation excluded); >1 is faster. Inputs ratio: inputs processed (a composite counts as "
        "one) relative to the baseline, a hardware-free measure of the saving. "
        "Iso-time gain: this group's top-1 minus the accuracy of the baseline frontier (baselines trained "
        "with their schedule scaled to fewer epochs, plus the full baseline) interpolated linearly at this "
        "group's wall time; negative means training the baseline for fewer epochs would have done better; "
        "— outside the frontier's range or without budget baselines. "
        "Early-term.: the first epoch (0-based) at which the baseline's mean test-accuracy curve reaches this "
        "group's final top-1, and the baseline's total time over its time up to that epoch. "
        "Mixed: share of training samples trained as a constituent of a composite.",
    ]
    lines += [f"\n> **Warning**: {w}" for w in warnings]
    failed = [r for r in records if r.get("status") != "done"]
    if failed:
        lines += ["", "## Trials not finished", ""]
        for r in failed:
            err = str(r.get("error") or "").strip().splitlines()
            why = f": {err[0]}" if err else ""
            lines.append(f"- `{r.get('trial_id')}` ({r.get('variant', '')}, {r.get('status', 'unknown')}){why}")
    return "\n".join(lines) + "\n"


def write_report(root, sweep: str) -> Path:
    """Write ``<root>/<sweep>/report/`` (summary.csv, summary.md, accuracy_vs_speedup.png,
    test_accuracy.png, fraction_mixed.png) and return the folder. ``root`` None: the default storage."""
    groups, _, records = _collect(root, sweep)
    summary = _summary(groups)
    folder = storage_root(str(root) if root else None) / sweep / "report"
    folder.mkdir(parents=True, exist_ok=True)
    summary.round(6).to_csv(folder / "summary.csv", index=False)
    (folder / "summary.md").write_text(_markdown(sweep, summary, records, _frontier_warnings(groups)))
    for name, fig in (
        ("accuracy_vs_speedup.png", _plot_accuracy_vs_speedup(groups, summary, sweep)),
        ("test_accuracy.png", _plot_test_accuracy(groups, sweep)),
        ("fraction_mixed.png", _plot_fraction_mixed(groups, sweep)),
    ):
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    return folder
