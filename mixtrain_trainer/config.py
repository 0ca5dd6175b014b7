"""The typed run configuration: every key has a default, validated once at the edge.

A run file (``mixtrain train --config RUN.yaml``) and one trial of a sweep are both a ``RunConfig``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixtrain_trainer.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Strict):
    name: str = "digits"
    root: str | None = None  # folder (or file) of the data set; unused by digits / synthetic
    train_subset: int | None = Field(None, gt=0)  # stratified, seeded by `seed` (or the run's seed)
    test_subset: int | None = Field(None, gt=0)
    seed: int | None = None  # subset seed; None: the run's seed
    download: bool = False  # cifar10 / cifar100 only
    image_size: int = Field(32, ge=8)  # digits and synthetic: output side; imagefolder: crop side
    image_column: str | None = None  # parquet: None finds the one binary column
    label_column: str | None = None  # parquet: None finds `label` / `labels` / `target` / `y`
    augment: bool = True  # random crop (pad 4) + horizontal flip; imagefolder: random resized crop + flip
    flip: bool | None = None  # None: flip unless the data set says otherwise (digits: no)
    num_classes: int = Field(10, ge=2)  # synthetic only
    synthetic_train: int = Field(512, gt=0)  # synthetic only
    synthetic_test: int = Field(256, gt=0)  # synthetic only
    device_resident: Literal["auto", "yes", "no"] = "auto"  # keep uint8 images on the training device
    num_workers: int = Field(4, ge=0)  # imagefolder decoding workers
    decode: Literal["auto", "workers", "device"] = "auto"  # imagefolder: auto = device (GPU) on CUDA
    stream: bool = False  # parquet: stream encoded bytes by row groups (as imagefolder) instead of decoding into memory
    skip_bad_images: bool = False  # imagefolder: leave out (and count) unreadable images instead of stopping
    cache_dir: str | None = None  # decoded uint8 cache; None: $MIXTRAIN_CACHE or ~/.cache/mixtrain


class OptimizerConfig(_Strict):
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    nesterov: bool = False


class ScheduleConfig(_Strict):
    kind: Literal["step", "cosine", "constant"] = "cosine"
    step_epochs: int = Field(10, gt=0)  # step: decay every step_epochs epochs
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up over the first epochs (per step)


class RivalConfig(_Strict):
    """Knobs of the rival methods (METHOD.md); ignored by the other variants."""

    sb_beta: float = Field(2.0, gt=0)  # selective-backprop: P(select) = percentile ** beta
    sb_history: int = Field(1024, gt=0)  # losses kept to compute the percentile
    staleness: int = Field(3, ge=1)  # stale-sb: refresh the cached losses every `staleness` epochs
    skip_fraction: float = Field(0.3, ge=0, lt=1)  # minibatch-skip: share of mini-batches skipped
    scale: float = Field(0.75, gt=0, le=1)  # input-scaling: side factor of the training inputs
    prune_ratio: float = Field(0.5, ge=0, lt=1)  # infobatch (and mixtrain-cutmix-prune): r, share pruned
    anneal: float = Field(0.875, gt=0, le=1)  # infobatch: nothing pruned from epoch ceil(anneal x epochs)
    mix_lr_fraction: float = Field(0.5, gt=0, le=1)  # mixtrain-cutmix-lrgate: mix once lr <= this x initial


class PolicyConfig(_Strict):
    """Amenability options (METHOD.md). The paper's variants use the defaults."""

    averaging: Literal["cumulative", "ema"] = "cumulative"
    ema_decay: float = Field(0.9, gt=0, lt=1)
    final_nomix_fraction: float = Field(0.0, ge=0, lt=1)  # share of the last epochs trained unmixed


class StorageConfig(_Strict):
    root: str | None = None  # None: $MIXTRAIN_STORAGE_ROOT or ./mixtrain-results


class DebugConfig(_Strict):
    """Test-only switches for fault injection; never set them in real runs."""

    crash_once_at_epoch: int | None = None  # raise once at the start of this epoch (marker file)
    nonfinite_at_epoch: int | None = None  # make the loss NaN in this epoch
    sleep_per_epoch: float = Field(0.0, ge=0)  # slow a trial down (seconds), to kill it mid-way
    kill_rank_once_at_epoch: int | None = None  # workers > 1: the last rank SIGKILLs itself once in this
    # epoch, after training its share and before the epoch's combine (marker file)


class RunConfig(_Strict):
    name: str = "train"  # the sweep name (storage folder); `mixtrain train` uses "train"
    trial_id: str | None = None  # None: derived from the configuration
    variant: str = "baseline"
    dataset: DatasetConfig = DatasetConfig()
    model: str = "resnet8"
    model_width: int | None = Field(None, gt=0)  # resnet8/20: first-stage width (default 16)
    epochs: int = Field(12, gt=0)
    batch_size: int = Field(64, gt=0)
    k: int = Field(1, ge=1)  # the Region 3 period of METHOD.md
    seed: int = 0
    operator: Literal["cutmix", "mixup"] | None = None  # None: the variant's own operator
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    rival: RivalConfig = RivalConfig()
    policy: PolicyConfig = PolicyConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on CUDA only
    grad_accum: int = Field(1, ge=1)  # mini-batches whose gradients are summed before a step
    pin_memory: bool = True  # host batches pinned when the data is not device-resident
    compile: Literal["auto"] | bool = "auto"  # compile the train step; auto: on CUDA (CUDA graphs), eager on CPU
    eval_batch_size: int = Field(512, gt=0)
    workers: int = Field(1, ge=1)  # data-parallel workers of one trial, each training batch_size inputs per step
    sync_batchnorm: bool = False  # workers > 1: batch-norm statistics over the global batch, not per worker
    budget: float = Field(1.0, gt=0, le=1)  # share of `epochs` actually trained (schedule scaled to it)
    storage: StorageConfig = StorageConfig()
    debug: DebugConfig = DebugConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_folder(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."}:
            raise ValueError("must be a plain folder name (no '/')")
        return value

    @model_validator(mode="after")
    def _known_names(self) -> RunConfig:
        from mixtrain_trainer.data import DATASETS
        from mixtrain_trainer.models import MODELS
        from mixtrain_trainer.variants import VARIANTS

        for key, value, registry in (
            ("variant", self.variant, VARIANTS),
            ("model", self.model, MODELS),
            ("dataset.name", self.dataset.name, DATASETS),
        ):
            if value not in registry:
                raise ValueError(f"{key}: unknown name {value!r}{did_you_mean(value, registry)}; "
                                 f"choose one of {', '.join(sorted(registry))}")
        from mixtrain_trainer.models import NO_FEATURE_MAP
        from mixtrain_trainer.variants import resolve_variant

        if resolve_variant(self.variant, self.operator).operator == "cutmix" and self.model in NO_FEATURE_MAP:
            raise ValueError(
                f"model: {self.model!r} gives no feature map, which CutMix and split propagation "
                f"({self.variant}) need; choose a CNN or ViT model, or a MixUp variant"
            )
        return self

    @property
    def trained_epochs(self) -> int:
        """Epochs actually trained: ``epochs`` scaled by ``budget`` (the iso-time frontier's baselines)."""
        return max(1, round(self.epochs * self.budget))


def did_you_mean(word: Any, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""`` when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(model: type[BaseModel] | None, loc: list[str]) -> list[str] | None:
    """The keys a pydantic model accepts at ``loc`` (the parent of an unknown key), or None if unknown."""
    for part in loc:
        field = model.model_fields.get(part) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(model.model_fields) if model is not None else None


def _blame(key: str, overrides: list[str] | None) -> str | None:
    """The ``--set`` override that set ``key`` (or a parent or child of it), if any."""
    for text in overrides or []:
        set_key = text.split("=", 1)[0].strip()
        for candidate in {set_key, set_key.removeprefix("base."), set_key.removeprefix("grid.")}:
            if key == candidate or key.startswith(candidate + ".") or candidate.startswith(key + "."):
                return text
    return None


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None,
                            overrides: list[str] | None = None) -> str:
    """pydantic's first error as one line: ``source: dotted.key: what is wrong (got VALUE)``.

    ``model`` (the validated class) lets an unknown key get a "did you mean"; a key set by one of
    ``overrides`` (``--set key=value`` texts) is blamed on that ``--set``, not on ``source``.
    """
    first = err.errors()[0]
    # union members (str | VariantEntry) and validators add their own names to the location: drop them
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("str", "VariantEntry", "function-"))]
    key = ".".join(loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1]) if loc else None
        hint = did_you_mean(loc[-1], known) if known else ""
        msg = f"unknown key{hint}" if hint else "unknown key; remove it or check its spelling"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "value_error" and ":" in msg and key == "(top level)":
        key, msg = msg.split(":", 1)  # model-level validators name the key themselves
        msg = msg.strip()
    elif not isinstance(first.get("input"), (dict, list)) and "input" in first:
        msg += f" (got {first['input']!r})"
    blamed = _blame(key, overrides)
    return f"--set {blamed}: {key}: {msg}" if blamed else f"{source}: {key}: {msg}"


def validate_run_config(data: dict[str, Any], source: str = "run config", overrides: list[str] | None = None
                        ) -> RunConfig:
    """Build a RunConfig from a plain dict; a bad value raises ConfigError with one clear line (blamed
    on the ``--set`` in ``overrides`` that set it, if one did)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, RunConfig, overrides)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set optimizer.lr=0.1")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides applied (``--set`` or a sweep's grid point)."""
    out = copy.deepcopy(data)
    items = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else [(k.split("."), v) for k, v in overrides.items()]
    )
    for path, value in items:
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and part == "dataset":  # `dataset: digits` shorthand
                child = node[part] = {"name": child}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return out


def normalise_shorthands(data: dict[str, Any]) -> dict[str, Any]:
    """``dataset: digits`` is short for ``dataset: {name: digits}``."""
    if isinstance(data.get("dataset"), str):
        data = {**data, "dataset": {"name": data["dataset"]}}
    return data


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing file or bad YAML raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; check the path")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of run keys at the top level")
    data = normalise_shorthands(data)
    data = apply_overrides(data, overrides or [])
    return validate_run_config(data, source=str(path), overrides=overrides)
