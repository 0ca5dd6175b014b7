"""Sweep files: typed models, validation before anything starts, and expansion into trials.

A trial is a fully resolved ``RunConfig`` plus a stable id (a hash of that configuration) and the labels
the report groups by (variant, model and every grid axis but the seed). Ray's searchers hand the
trainable a ``{"trial": ...}`` or ``{"run": ..., "search": ...}`` dict; ``resolve_trial`` turns either into
the same (RunConfig, trial id, labels), in the trainable and in the driver's tracker alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixtrain_trainer.config import (
    RunConfig,
    apply_overrides,
    did_you_mean,
    format_validation_error,
    load_yaml,
    normalise_shorthands,
    validate_run_config,
)
from mixtrain_trainer.errors import ConfigError, MixtrainError
from mixtrain_trainer.variants import VARIANTS

SMOKE_TRAIN_SUBSET = 256
SMOKE_TEST_SUBSET = 256
SMOKE_EPOCHS = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantEntry(_Strict):
    name: str
    label: str | None = None  # how the report names it; default: name (+ overrides)
    overrides: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}{did_you_mean(value, VARIANTS)}; "
                             f"choose one of {', '.join(sorted(VARIANTS))}")
        return value

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        if not self.overrides:
            return self.name
        return self.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items())) + "]"


class SearchSpace(_Strict):
    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchSpace:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} range needs low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs low > 0")
        return self


class SearchConfig(_Strict):
    kind: Literal["grid", "optuna"] = "grid"
    metric: str = "test_acc"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, gt=0)
    max_concurrent: int | None = Field(None, gt=0)
    seed: int = 0
    space: dict[str, SearchSpace] = {}

    @model_validator(mode="after")
    def _space_for_optuna(self) -> SearchConfig:
        if self.kind == "optuna" and not self.space:
            raise ValueError("space: an optuna search needs at least one key to search, e.g. optimizer.lr")
        return self


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"{value} GPUs: use a fraction <= 1 to share a GPU, or a whole number")
        return value


class Tracking(_Strict):
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str | None = None  # None: the sweep's name


class Storage(_Strict):
    root: str | None = None


class Claim(_Strict):
    """A claim of a paper as a check over the report's summary (orchestrate/report/claims.py)."""
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # MLflow tag claim.<id>
    text: str = ""  # the paper's words
    check: str

    @field_validator("check")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        from orchestrate.report.claims import parse_check

        parse_check(value)  # ValueError: one line saying what is wrong
        return value


class SweepSpec(_Strict):
    name: str
    description: str | None = None
    base: dict[str, Any] = {}
    variants: list[str | VariantEntry] = Field(min_length=1)
    grid: dict[str, list[Any]] = {}
    baseline_budgets: list[float] = []
    search: SearchConfig = SearchConfig()
    resources: Resources = Resources()  # per worker: a trial with `workers: N` holds N times these
    max_concurrent: int | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0)
    tracking: Tracking = Tracking()
    storage: Storage = Storage()
    claims: list[Claim] = []

    @field_validator("claims")
    @classmethod
    def _unique_ids(cls, value: list[Claim]) -> list[Claim]:
        ids = [c.id for c in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"claim id {dupes[0]!r} is used twice; ids name MLflow tags claim.<id>")
        return value

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain folder name (letters, digits, '-', '_')")
        return value

    @field_validator("variants")
    @classmethod
    def _entries(cls, value: list) -> list[VariantEntry]:
        entries = [VariantEntry(name=v) if isinstance(v, str) else v for v in value]
        labels = [e.display for e in entries]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(f"variant {sorted(dupes)[0]!r} is listed twice; give one a 'label'")
        return entries

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, value: dict) -> dict:
        for key, values in value.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values; give it at least one or remove it")
        return value

    @field_validator("baseline_budgets")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for b in value:
            if not 0 < b < 1:
                raise ValueError(f"budget {b} is not a fraction of the epochs in (0, 1)")
        return value

    @model_validator(mode="after")
    def _budgets_need_baseline(self) -> SweepSpec:
        if self.baseline_budgets and "baseline" not in [v.name for v in self.variants]:
            raise ValueError("baseline_budgets: the iso-time frontier needs 'baseline' among the variants")
        return self


@dataclasses.dataclass(frozen=True)
class Trial:
    trial_id: str
    config: RunConfig
    labels: dict[str, Any]

    @property
    def payload(self) -> dict:
        """What the Ray trainable receives (plain data)."""
        return {"trial_id": self.trial_id, "run": self.config.model_dump(), "labels": self.labels}


def parse_sweep(data: Any, source: str = "sweep file", overrides: list[str] | None = None) -> SweepSpec:
    """Validate a sweep file's contents (``overrides``: the ``--set`` texts already applied, for blame)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with at least 'name' and 'variants'")
    misplaced = [k for k in data if k not in SweepSpec.model_fields and k in RunConfig.model_fields
                 and not did_you_mean(k, SweepSpec.model_fields)]  # `variant:` is a typo of `variants:`
    if misplaced:  # `epochs: 3` at the top level of a sweep file: a run key, it goes under base:
        key = misplaced[0]
        raise ConfigError(f"{source}: {key}: unknown key at the top level of a sweep file; it is a run key: "
                          f"put it under base: (base: {{{key}: {data[key]}}}) to apply it to every trial")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, SweepSpec, overrides)) from None


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file, with ``--set key=value`` overrides applied to it first (e.g.
    ``base.epochs=20``, ``grid.seed=[0]``); every trial's configuration is validated too."""
    from mixtrain_trainer.data import check_dataset

    data = load_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with at least 'name' and 'variants'")
        data = apply_overrides(data, overrides)
    spec = parse_sweep(data, str(path), overrides)
    # surfaces a bad trial configuration now, before anything starts
    trials = expand(spec, source=str(path), overrides=overrides)
    check_claims(spec, trials, str(path))
    checked = set()
    for t in trials:
        key = t.config.dataset.model_dump_json()
        if key not in checked:
            checked.add(key)
            try:
                check_dataset(t.config.dataset)
            except MixtrainError as err:
                raise type(err)(f"{path}: {err}") from None
    return spec


def claim_groups(trials: list[Trial]) -> tuple[list[dict], list[str]]:
    """The report's groups of these trials (as summary rows name them: variant, model, budget, grid axes
    but the seed) and the grid axes, for checking claims before anything runs."""
    groups, axes = {}, []
    for t in trials:
        budget = float(t.labels.get("budget", 1.0))
        variant = "baseline" if budget < 1.0 and t.config.variant == "baseline" else t.labels["variant"]
        other = {k: v for k, v in t.labels.items() if k not in ("variant", "model", "budget", "seed")}
        axes += [k for k in other if k not in axes]
        g = {"variant": variant, "model": t.labels.get("model", t.config.model), "budget": budget, **other}
        groups.setdefault(repr(sorted(g.items(), key=str)), g)
    return list(groups.values()), axes


def check_claims(spec: SweepSpec, trials: list[Trial], source: str) -> None:
    """Every claim's references name a known summary column and exactly one group of the sweep."""
    from orchestrate.report.claims import check_references, parse_check

    groups, axes = claim_groups(trials)
    for i, claim in enumerate(spec.claims):
        try:
            check_references(parse_check(claim.check), groups, axes)
        except ValueError as err:
            raise ConfigError(f"{source}: claims.{i}.check ({claim.id}): {err}") from None


def sweep_root(spec: SweepSpec) -> Path:
    """Absolute storage root: workers on other nodes or in other folders must find the same place."""
    root = spec.storage.root or os.environ.get("MIXTRAIN_STORAGE_ROOT") or "mixtrain-results"
    return Path(root).expanduser().resolve()


def smoke_overrides(base: dict) -> dict:
    """``--smoke-test``: a tiny stratified subset and 2 epochs, whatever the sweep says."""
    dataset = base.get("dataset") or {}
    dataset = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    dataset["train_subset"] = min(dataset.get("train_subset") or SMOKE_TRAIN_SUBSET, SMOKE_TRAIN_SUBSET)
    dataset["test_subset"] = min(dataset.get("test_subset") or SMOKE_TEST_SUBSET, SMOKE_TEST_SUBSET)
    if dataset.get("name", "digits") == "synthetic":
        dataset.pop("train_subset"), dataset.pop("test_subset")
        dataset["synthetic_train"], dataset["synthetic_test"] = SMOKE_TRAIN_SUBSET, SMOKE_TEST_SUBSET
    return {**base, "dataset": dataset, "epochs": SMOKE_EPOCHS}


def trial_id_for(label: str, cfg: RunConfig) -> str:
    from mixtrain_trainer.loop import config_digest

    digest = config_digest(cfg, {"trial_id", "storage", "name"})  # debug switches count: they change the run
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return f"{safe}-{digest}"


def _trial(spec: SweepSpec, base: dict, entry: VariantEntry, point: dict, budget: float, source: str,
           overrides: list[str] | None = None) -> Trial:
    data = apply_overrides(normalise_shorthands(base), entry.overrides)
    data = apply_overrides(data, point)
    data.update(variant=entry.name, name=spec.name, budget=budget)
    data["storage"] = {"root": str(sweep_root(spec))}
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and dataset.get("root") and "://" not in str(dataset["root"]):
        # relative to where `mixtrain` runs: Ray workers run elsewhere
        dataset["root"] = str(Path(dataset["root"]).expanduser().resolve())
    label = entry.display if budget == 1.0 else f"baseline@{budget:g}"
    cfg = validate_run_config(data, source=f"{source} (trial {label} {point or ''})".replace(" )", ")"),
                              overrides=overrides)
    labels = {"variant": label, "model": cfg.model}
    labels.update({k: v for k, v in point.items() if k != "seed"})
    if budget != 1.0:
        labels["budget"] = budget
    return Trial(trial_id_for(label, cfg), cfg, labels)


def expand(spec: SweepSpec, smoke: bool = False, source: str | None = None,
           overrides: list[str] | None = None) -> list[Trial]:
    """Variants x grid points (+ the baseline at each budget): the sweep's trials, in a stable order.

    ``overrides``: the ``--set`` texts applied to the file, so a bad value is blamed on its ``--set``."""
    source = source or spec.name
    base = smoke_overrides(spec.base) if smoke else spec.base
    axes = sorted(spec.grid)
    points = [dict(zip(axes, combo)) for combo in itertools.product(*(spec.grid[a] for a in axes))] or [{}]
    trials = []
    for entry in spec.variants:
        for point in points:
            trials.append(_trial(spec, base, entry, point, 1.0, source, overrides))
            if entry.name == "baseline" and not entry.overrides:
                trials += [_trial(spec, base, entry, point, b, source, overrides) for b in spec.baseline_budgets]
    seen: dict[str, Trial] = {}
    for t in trials:
        seen.setdefault(t.trial_id, t)  # identical configurations run once
        if t.config.device == "cpu" and spec.resources.gpu > 0:
            raise ConfigError(
                f"{source}: resources.gpu: {spec.resources.gpu:g} per worker, but trial {t.trial_id} trains with "
                "device: cpu (gloo, no GPU); set resources.gpu: 0, or device: auto / cuda"
            )
    return list(seen.values())


# ---------------------------------------------------------------------------- resources per trial
def trial_resources(spec: SweepSpec, trial: Trial) -> dict[str, float]:
    """What one trial holds: ``workers`` data-parallel workers of ``spec.resources`` each."""
    w = trial.config.workers
    return {"workers": w, "cpu": w * spec.resources.cpu, "gpu": w * spec.resources.gpu}


def worker_slots(nodes: list[dict[str, float]], cpu: float, gpu: float) -> int:
    """How many workers of (cpu, gpu) the nodes can hold at once (each worker's bundle lives on one node)."""
    total = 0
    for node in nodes:
        fits = [node.get("CPU", 0.0) / cpu + 1e-9]
        if gpu > 0:
            fits.append(node.get("GPU", 0.0) / gpu + 1e-9)
        total += int(min(fits))
    return total


def check_capacity(spec: SweepSpec, trials: list[Trial], nodes: list[dict[str, float]], source: str,
                   where: str = "this cluster") -> None:
    """Refuse a trial the cluster can never place (Ray would wait forever): one line, before anything starts.

    ``nodes``: each node's total resources, ``{"CPU": .., "GPU": ..}``.
    """
    r = spec.resources
    max_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if r.gpu > max_gpu:
        raise ConfigError(
            f"{source}: resources.gpu: {r.gpu:g} per worker, but no node of {where} has more than {max_gpu:g} "
            "GPU(s); lower it (0 for CPU) or use a cluster with GPUs"
        )
    if r.cpu > max_cpu:
        raise ConfigError(
            f"{source}: resources.cpu: {r.cpu:g} per worker, but no node of {where} has more than {max_cpu:g} "
            "CPUs; lower it"
        )
    slots = worker_slots(nodes, r.cpu, r.gpu)
    for t in trials:
        need = trial_resources(spec, t)
        if need["workers"] > slots:
            cpus = sum(n.get("CPU", 0.0) for n in nodes)
            gpus = sum(n.get("GPU", 0.0) for n in nodes)
            raise ConfigError(
                f"{source}: workers: {need['workers']} (trial {t.trial_id}) need {need['cpu']:g} CPU + "
                f"{need['gpu']:g} GPU in workers of {r.cpu:g} CPU + {r.gpu:g} GPU, but {where} ({cpus:g} CPUs, "
                f"{gpus:g} GPUs on {len(nodes)} node(s)) holds at most {slots} such workers; lower workers or "
                "resources, or use a bigger cluster"
            )


def resolve_trial(payload: dict) -> tuple[RunConfig, str, dict]:
    """The trainable's and the tracker's view of one Ray trial config: (RunConfig, trial id, labels).

    Grid trials carry their resolved run; searched trials carry the base run plus the searcher's values.
    """
    trial = payload["trial"]
    if "search" not in payload:
        return validate_run_config(trial["run"], "trial"), trial["trial_id"], dict(trial["labels"])
    searched = dict(payload["search"])
    cfg = validate_run_config(apply_overrides(trial["run"], searched), "trial")
    labels = {**trial["labels"], **searched}
    label = labels["variant"] + "[" + ",".join(f"{k}={_short(v)}" for k, v in sorted(searched.items())) + "]"
    return cfg, trial_id_for(label, cfg), labels


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
