"""Per-sample and per-epoch histories as hive-partitioned Parquet (CONTRACT.md), written whole.

Layout under ``<storage root>/<sweep>/``:
  history/samples/trial=<trial_id>/epoch=<E>/part-0.parquet   one row per training sample
  history/epochs/trial=<trial_id>/part-0.parquet              one row per epoch
  trials/<trial_id>.json                                      the trial's configuration and status

Every file is written to a hidden temporary name and renamed, so readers never see half a file; readers
ignore names starting with '.' or '_' (pyarrow's default), so stray temporaries left by a crash are
invisible. A resumed run rewrites epoch partitions whole: never two rows for one (sample, epoch).
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SAMPLES_SCHEMA = pa.schema([
    ("sample_id", pa.int64()),
    ("loss", pa.float32()),
    ("correct", pa.bool_()),
    ("mixed", pa.bool_()),
    ("partner_id", pa.int64()),
    ("weight", pa.float32()),
    ("region", pa.int8()),
    ("mix_next", pa.bool_()),
    ("mix_path", pa.string()),
    ("skipped", pa.bool_()),
])

EPOCHS_SCHEMA = pa.schema([
    ("epoch", pa.int32()),
    ("l_corr", pa.float64()),
    ("l_incorr", pa.float64()),
    ("l_mid", pa.float64()),
    ("n_samples", pa.int64()),
    ("n_mixed", pa.int64()),
    ("n_inputs", pa.int64()),
    ("n_skipped", pa.int64()),
    ("n_mix_next", pa.int64()),
    ("n_next_region1", pa.int64()),
    ("n_next_region3", pa.int64()),
    ("frac_mixed", pa.float64()),
    ("train_loss", pa.float64()),
    ("train_acc", pa.float64()),
    ("test_acc", pa.float64()),
    ("test_top5", pa.float64()),
    ("test_loss", pa.float64()),
    ("epoch_seconds", pa.float64()),
    ("policy_seconds", pa.float64()),
    ("history_seconds", pa.float64()),
    ("lr", pa.float64()),
    # second round (CONTRACT.md "Additions"); null in files written before them
    ("n_forward", pa.int64()),
    ("n_next_skip", pa.int64()),
    ("peak_gpu_mem_mb", pa.float64()),
    ("rss_mb", pa.float64()),
    ("gpu_util", pa.float64()),
])

SAMPLES_PARTITIONING = ds.partitioning(pa.schema([("trial", pa.string()), ("epoch", pa.int32())]), flavor="hive")
EPOCHS_PARTITIONING = ds.partitioning(pa.schema([("trial", pa.string())]), flavor="hive")


def storage_root(configured: str | None = None) -> Path:
    """``storage.root``, else $MIXTRAIN_STORAGE_ROOT, else ./mixtrain-results."""
    return Path(configured or os.environ.get("MIXTRAIN_STORAGE_ROOT") or "mixtrain-results")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def write_table_atomic(table: pa.Table, path: Path, **options) -> None:
    """``options``: passed to ``pyarrow.parquet.write_table``."""
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp, **options))


#: columns worth dictionary-encoding (few distinct values); on the others (ids, losses: ~1 value per row)
#: pyarrow's default tries a dictionary first and falls back, which doubled the write time at 1.28 M rows
DICTIONARY_COLUMNS = ["region", "mix_path"]


def write_json_atomic(data: dict, path: Path) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


class HistoryWriter:
    """Writes one trial's histories; every call replaces whole files."""

    def __init__(self, root: str | Path, sweep: str, trial_id: str):
        self.sweep_dir = Path(root) / sweep
        self.trial_id = trial_id
        self.samples_dir = self.sweep_dir / "history" / "samples" / f"trial={trial_id}"
        self.epochs_path = self.sweep_dir / "history" / "epochs" / f"trial={trial_id}" / "part-0.parquet"
        self.trial_path = self.sweep_dir / "trials" / f"{trial_id}.json"

    def write_samples(self, epoch: int, columns: dict) -> Path:
        path = self.samples_dir / f"epoch={epoch}" / "part-0.parquet"
        write_table_atomic(pa.table(columns, schema=SAMPLES_SCHEMA), path, use_dictionary=DICTIONARY_COLUMNS)
        return path

    def write_epochs(self, rows: Sequence[dict]) -> None:
        table = pa.Table.from_pylist([{k: r.get(k) for k in EPOCHS_SCHEMA.names} for r in rows], schema=EPOCHS_SCHEMA)
        write_table_atomic(table, self.epochs_path)

    def drop_epochs_from(self, epoch: int) -> None:
        """Remove sample partitions >= epoch (a resumed run rewrites them; none may linger from a crash)."""
        if not self.samples_dir.exists():
            return
        for part in self.samples_dir.glob("epoch=*"):
            if int(part.name.split("=", 1)[1]) >= epoch:
                for f in part.iterdir():
                    f.unlink()
                part.rmdir()

    def read_trial(self) -> dict:
        return json.loads(self.trial_path.read_text()) if self.trial_path.exists() else {}

    def write_trial(self, data: dict) -> None:
        write_json_atomic(data, self.trial_path)


# ---------------------------------------------------------------- loading


def _as_list(value) -> list | None:
    if value is None:
        return None
    if isinstance(value, (str, numbers.Integral)):  # numbers.Integral: NumPy integers too (df.epoch.max())
        return [value]
    return list(value)


def _filter(trials: Iterable[str] | None, epochs: Iterable[int] | None):
    expr = None
    if trials is not None:
        expr = ds.field("trial").isin([str(t) for t in trials])
    if epochs is not None:
        cond = ds.field("epoch").isin([int(e) for e in epochs])
        expr = cond if expr is None else expr & cond
    return expr


def samples_dataset(root: str | Path | None, sweep: str) -> ds.Dataset:
    path = storage_root(str(root) if root else None) / sweep / "history" / "samples"
    if not path.exists():
        raise FileNotFoundError(f"no sample history at {path}; has sweep {sweep!r} run under this storage root?")
    return ds.dataset(path, format="parquet", partitioning=SAMPLES_PARTITIONING, schema=_with_parts(SAMPLES_SCHEMA))


def _with_parts(schema: pa.Schema, epoch: bool = True) -> pa.Schema:
    fields = list(schema) + [pa.field("trial", pa.string())]
    return pa.schema(fields + ([pa.field("epoch", pa.int32())] if epoch else []))


def sample_files(root, sweep: str, trials=None, epochs=None) -> list[str]:
    """The Parquet files a ``load_samples`` call with these filters reads (partition pruning)."""
    dataset = samples_dataset(root, sweep)
    return [f.path for f in dataset.get_fragments(filter=_filter(_as_list(trials), _as_list(epochs)))]


def load_samples(root=None, sweep: str = "train", trials=None, epochs=None, columns=None):
    """Per-sample history as a pandas DataFrame, one row per (trial, epoch, sample).

    ``trials``/``epochs`` filter on the partitions, so only the matching files are opened; ``columns``
    selects columns (``trial`` and ``epoch`` are always included).
    """
    dataset = samples_dataset(root, sweep)
    cols = None if columns is None else list(dict.fromkeys(["trial", "epoch", *columns]))
    table = dataset.to_table(columns=cols, filter=_filter(_as_list(trials), _as_list(epochs)))
    return table.to_pandas().sort_values(["trial", "epoch", "sample_id"] if "sample_id" in table.column_names
                                         else ["trial", "epoch"], kind="stable").reset_index(drop=True)


def load_epochs(root=None, sweep: str = "train", trials=None, columns=None):
    """Per-epoch history as a pandas DataFrame, one row per (trial, epoch)."""
    path = storage_root(str(root) if root else None) / sweep / "history" / "epochs"
    if not path.exists():
        raise FileNotFoundError(f"no epoch history at {path}; has sweep {sweep!r} run under this storage root?")
    dataset = ds.dataset(path, format="parquet", partitioning=EPOCHS_PARTITIONING,
                         schema=_with_parts(EPOCHS_SCHEMA, epoch=False))
    cols = None if columns is None else list(dict.fromkeys(["trial", "epoch", *columns]))
    table = dataset.to_table(columns=cols, filter=_filter(_as_list(trials), None))
    return table.to_pandas().sort_values(["trial", "epoch"], kind="stable").reset_index(drop=True)


def load_trial_records(root=None, sweep: str = "train") -> list[dict]:
    """Every trial's JSON record as written (configuration, labels, status, final metrics), by trial id."""
    folder = storage_root(str(root) if root else None) / sweep / "trials"
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]


def _flat(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_trials(root=None, sweep: str = "train"):
    """The trials as a pandas DataFrame, one row per trial (sorted by ``trial_id``), like ``load_epochs``.

    Each record's fields are flattened with dots: ``trial_id``, ``variant``, ``status``, ``error``,
    ``started_epoch``, ``labels.<axis>``, ``config.<key>`` (e.g. ``config.optimizer.lr``),
    ``final.<metric>`` (e.g. ``final.final_test_acc``). The raw nested records: ``load_trial_records``.
    """
    import pandas as pd

    records = load_trial_records(root, sweep)
    frame = pd.DataFrame([_flat(r) for r in records])
    if frame.empty:
        return pd.DataFrame(columns=["trial_id", "variant", "status"])
    return frame.sort_values("trial_id", kind="stable").reset_index(drop=True)
