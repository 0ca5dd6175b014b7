"""The numbers of a sweep's report, from its histories alone (CONTRACT.md, "Report" and "Additions").

``summarize(root, sweep)`` gives one row per group of trials (the trial labels minus the seed: model,
variant, every other grid axis; the iso-time baselines trained on a share ``budget`` < 1 of the epochs
are groups of their own); ``trial_table(root, sweep)`` one row per trial. Imports neither Ray nor MLflow.

How the numbers are compared (METHOD.md, "How results are compared"). **Every accuracy and every share
is a percentage** (0..100; the epoch table and MLflow's ``test_acc`` are fractions 0..1):
- Only trials with status ``done`` count; failed and still running ones are counted and listed.
- The reference of a group is the full-budget ``baseline`` group with the same model and the same other
  labels; if there is none, every full-budget ``baseline`` trial of the same model, pooled
  (``baseline_match`` says which: ``exact`` / ``model`` / empty when there is no baseline).
- ``top1`` / ``top1_std``: final test top-1 over seeds (sample std, blank for one seed); ``top5`` likewise;
  ``delta_top1``: ``top1`` minus the reference's, in points.
- ``wall_seconds``: mean over seeds of the training time (sum of ``epoch_seconds``; evaluation, policy
  and history writing excluded). ``speedup``: reference wall / group wall (ratio of the means).
- ``n_inputs`` / ``n_forward``: mean over seeds of the inputs forwarded and backpropagated / only
  forwarded, summed over epochs (raw counts, METHOD.md "Cost accounting"). ``inputs_ratio``:
  (``n_inputs`` + ``n_forward`` / 3) / the reference's ``n_inputs`` (hardware-free); ``inputs_speedup``:
  its inverse, the hardware-free counterpart of ``speedup``.
- ``iso_time_gain``: ``top1`` minus the baseline frontier's accuracy at the group's wall time. The
  frontier is the points (mean wall, mean top-1) of the budget baselines and the full baseline that match
  as above, sorted by wall time, linearly interpolated; blank outside its range or with fewer than two
  points (no budget baselines). The baselines themselves lie on it: 0.
- ``early_term_epoch``: the first epoch (0-based, as in the history) at which the reference's mean
  test-accuracy curve reaches the group's final mean top-1; ``early_term_speedup``: the reference's total
  time / its cumulative time up to and including that epoch (mean epoch times over seeds); blank if never.
  ``early_term_inputs_speedup``: the same with inputs instead of seconds (hardware-free; compare it with
  ``inputs_speedup`` where wall times are noisy).
- ``frac_mixed_final`` / ``frac_mixed_mean``: % of samples mixed in the last epoch / on average over
  epochs (means over seeds).
- ``peak_gpu_mem_mb`` / ``peak_rss_mb``: the largest over the group's trials of each trial's largest
  epoch value (epoch columns ``peak_gpu_mem_mb`` / ``rss_mb``; blank where the trainer did not record it).
- Per-sample statistics (``lmid_correct_below`` ...): see ``orchestrate.report.samples``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mixtrain_trainer.history import load_epochs, load_trial_records
from orchestrate.report.samples import STAT_COLUMNS, mean_statistics, sweep_statistics

__all__ = ["SUMMARY_COLUMNS", "TRIAL_COLUMNS", "summarize", "trial_table"]

BASELINE = "baseline"
#: the fixed columns of ``summarize`` (grid-axis label columns go after ``budget``)
SUMMARY_COLUMNS = [
    "model", "variant", "budget", "n_seeds", "n_failed", "n_running", "top1", "top1_std", "top5",
    "delta_top1", "wall_seconds", "speedup", "n_inputs", "n_forward", "inputs_ratio", "inputs_speedup",
    "iso_time_gain", "early_term_epoch", "early_term_speedup", "early_term_inputs_speedup", "frac_mixed_final", "frac_mixed_mean", "peak_gpu_mem_mb",
    "peak_rss_mb", *STAT_COLUMNS, "epochs", "seeds", "baseline_match", "missing",
]
#: ``trial_table``'s columns (grid-axis label columns go after ``seed``)
TRIAL_COLUMNS = ["trial_id", "model", "variant", "budget", "seed", "status", "top1", "wall_seconds", "n_inputs",
                 "epochs", "peak_gpu_mem_mb", "peak_rss_mb"]
_ID_LABELS = ("model", "variant", "budget", "seed")
_EPOCH_COLUMNS = ["epoch", "test_acc", "test_top5", "epoch_seconds", "n_inputs", "frac_mixed",
                  "n_samples", "n_next_region1", "n_next_region3", "n_mix_next"]
_MEMORY = {"peak_gpu_mem_mb": "peak_gpu_mem_mb", "peak_rss_mb": "rss_mb"}  # summary column -> epoch column


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
    inputs: float = math.nan  # forwarded and backpropagated, summed over epochs
    forward: float = math.nan  # only forwarded (0 when the epoch table has no n_forward)
    n_epochs: float = math.nan
    final_frac_mixed: float = math.nan  # percent
    mean_frac_mixed: float = math.nan  # percent
    peak: dict = field(default_factory=dict)  # summary memory column -> MB (NaN when not recorded)
    stats: dict = field(default_factory=dict)  # per-sample statistics (orchestrate.report.samples)

    @property
    def cost(self) -> float:
        """Inputs in forward+backward units (METHOD.md, "Cost accounting")."""
        return self.inputs + (0.0 if math.isnan(self.forward) else self.forward / 3)


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
    for col, source in _MEMORY.items():  # also while running or failed: memory is what kills trials
        values = epochs[source] if source in epochs and len(epochs) else pd.Series(dtype=float)
        t.peak[col] = float(values.max()) if values.notna().any() else math.nan
    if t.status != "done":
        return t
    final = record.get("final") or {}
    if len(epochs):
        last = epochs.iloc[-1]
        t.top1 = 100 * _float(last.get("test_acc"))
        t.top5 = 100 * _float(last.get("test_top5"))
        t.wall = float(epochs["epoch_seconds"].sum(min_count=1))
        t.inputs = float(epochs["n_inputs"].sum(min_count=1))
        t.forward = float(epochs["n_forward"].fillna(0).sum()) if "n_forward" in epochs else 0.0
        t.n_epochs = float(len(epochs))
        t.final_frac_mixed = 100 * _float(last.get("frac_mixed"))
        t.mean_frac_mixed = 100 * float(epochs["frac_mixed"].mean())
    else:  # no epoch table (say, written elsewhere): fall back on the record's final metrics
        t.top1 = 100 * _float(final.get("final_test_acc"))
        t.top5 = 100 * _float(final.get("final_test_top5"))
        t.wall = _float(final.get("total_train_seconds"))
        t.inputs = _float(final.get("total_inputs"))
        t.forward = _float(final.get("total_forward"), 0.0)
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


def _collect(root, sweep: str, with_samples: bool = True) -> tuple[list[_Group], pd.DataFrame, list[dict]]:
    """The trial records grouped (in a stable order: models as first seen, then the baseline, the budget
    baselines from the largest budget, then the other variants by name), the epoch table, the records.
    Finished trials get their per-sample statistics (reading the per-sample history if ``with_samples``)."""
    records = load_trial_records(root, sweep)
    epochs = _load_epochs(root, sweep)
    by_trial = {tid: df.sort_values("epoch").reset_index(drop=True) for tid, df in epochs.groupby("trial")}
    empty = epochs.iloc[0:0]
    groups: dict[tuple, _Group] = {}
    for rec in records:
        t = _trial(rec, by_trial.get(str(rec.get("trial_id", "")), empty))
        key = (t.model, t.variant, t.base_variant, t.budget, _hashable(t.extra))
        groups.setdefault(key, _Group(t.model, t.variant, t.base_variant, t.budget, t.extra)).trials.append(t)
    done = {t.trial_id: t for g in groups.values() for t in g.done}
    for tid, stats in sweep_statistics(root, sweep, {tid: t.epochs for tid, t in done.items()}, with_samples).items():
        done[tid].stats = stats
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
    """Per epoch: mean test accuracy (%), mean epoch seconds and inputs over the trials; their cumulative
    sums (``cum_seconds``, ``cum_inputs``)."""
    frames = [t.epochs[["epoch", "test_acc", "epoch_seconds", "n_inputs"]] for t in trials if len(t.epochs)]
    if not frames:
        return pd.DataFrame(columns=["epoch", "test_acc", "epoch_seconds", "n_inputs", "cum_seconds", "cum_inputs"])
    curve = pd.concat(frames).astype(float).groupby("epoch", sort=True).mean().reset_index()
    curve["test_acc"] = 100 * curve["test_acc"]
    curve["cum_seconds"] = curve["epoch_seconds"].cumsum()
    curve["cum_inputs"] = curve["n_inputs"].cumsum()
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

    @property
    def curve(self) -> pd.DataFrame:
        return _mean_curve(self.trials)


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


def _early(ref: _Reference, top1: float) -> tuple[float, float, float]:
    """(early-termination epoch, its wall-clock speedup, its inputs speedup); NaN when never reached."""
    curve = ref.curve
    if not len(curve) or math.isnan(top1):
        return math.nan, math.nan, math.nan
    reached = curve[curve["test_acc"] >= top1 - 1e-9]
    if not len(reached):
        return math.nan, math.nan, math.nan
    row = reached.iloc[0]
    return (float(row["epoch"]), _ratio(curve["cum_seconds"].iloc[-1], row["cum_seconds"]),
            _ratio(curve["cum_inputs"].iloc[-1], row["cum_inputs"]))


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


def _max(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(max(vals)) if vals else math.nan


def _summary(groups: list[_Group]) -> pd.DataFrame:
    extra_cols = list(dict.fromkeys(k for g in groups for k in sorted(g.extra)))
    rows = []
    for g in groups:
        done = g.done
        top1 = _mean(t.top1 for t in done)
        wall = _mean(t.wall for t in done)
        ref = _reference(groups, g)
        row = {
            "model": g.model, "variant": g.variant, "budget": g.budget,
            **{k: g.extra.get(k) for k in extra_cols},
            "n_seeds": len(done),
            "n_failed": sum(t.status == "failed" for t in g.trials),
            "n_running": sum(t.status not in ("done", "failed") for t in g.trials),
            "top1": top1, "top1_std": _std(t.top1 for t in done), "top5": _mean(t.top5 for t in done),
            "delta_top1": top1 - ref.top1 if ref else math.nan,
            "wall_seconds": wall,
            "speedup": _ratio(ref.wall, wall) if ref else math.nan,
            "n_inputs": _mean(t.inputs for t in done),
            "n_forward": _mean(t.forward for t in done),
            "inputs_ratio": _ratio(_mean(t.cost for t in done), ref.inputs) if ref else math.nan,
            "iso_time_gain": _iso_time_gain(_frontier(groups, g), wall, top1, g.is_baseline),
            "inputs_speedup": _ratio(ref.inputs, _mean(t.cost for t in done)) if ref else math.nan,
            "early_term_epoch": math.nan, "early_term_speedup": math.nan, "early_term_inputs_speedup": math.nan,
            "frac_mixed_final": _mean(t.final_frac_mixed for t in done),
            "frac_mixed_mean": _mean(t.mean_frac_mixed for t in done),
            **{col: _max(t.peak.get(col, math.nan) for t in g.trials) for col in _MEMORY},
            **mean_statistics([t.stats for t in done]),
            "epochs": _mean(t.n_epochs for t in done),
            "seeds": " ".join(str(t.seed) for t in sorted(done, key=lambda t: str(t.seed))),
            "baseline_match": ref.match if ref else "",
            "missing": _missing_note(g),
        }
        if ref:
            row["early_term_epoch"], row["early_term_speedup"], row["early_term_inputs_speedup"] = _early(ref, top1)
        rows.append(row)
    columns = SUMMARY_COLUMNS[:3] + extra_cols + SUMMARY_COLUMNS[3:]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("n_seeds", "n_failed", "n_running", "early_term_epoch"):
        table[col] = table[col].astype("Int64")
    return table


def summarize(root, sweep: str, with_samples: bool = True) -> pd.DataFrame:
    """One row per group of trials (labels minus seed); see the module docstring for every column.
    ``with_samples`` False: skip the per-sample history (its statistics stay blank)."""
    groups, _, _ = _collect(root, sweep, with_samples)
    return _summary(groups)


def _trial_table(groups: list[_Group]) -> pd.DataFrame:
    extra_cols = list(dict.fromkeys(k for g in groups for k in sorted(g.extra)))
    rows = [
        {"trial_id": t.trial_id, "model": t.model, "variant": t.variant, "budget": t.budget, "seed": t.seed,
         **{k: t.extra.get(k) for k in extra_cols}, "status": t.status, "top1": t.top1, "wall_seconds": t.wall,
         "n_inputs": t.inputs, "epochs": len(t.epochs) if len(t.epochs) else t.n_epochs, **t.peak}
        for g in groups for t in sorted(g.trials, key=lambda t: (str(t.seed), t.trial_id))
    ]
    columns = TRIAL_COLUMNS[:5] + extra_cols + TRIAL_COLUMNS[5:]
    return pd.DataFrame(rows, columns=columns)


def trial_table(root, sweep: str) -> pd.DataFrame:
    """One row per trial (finished or not): its labels, status, final top-1 (%), training seconds, inputs,
    epochs recorded and peak memory (the largest epoch value; NaN where not recorded)."""
    groups, _, _ = _collect(root, sweep, with_samples=False)
    return _trial_table(groups)
