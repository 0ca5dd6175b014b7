"""The history files the trainer's writer produces: DuckDB reads them as they are; loaders prune partitions."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from report_histories import epoch_rows

from mixtrain_trainer.history import HistoryWriter, load_epochs, load_samples, sample_files


def write_history(root):
    for t, n in (("a-1", 4), ("b-2", 3)):
        w = HistoryWriter(root, "sw", t)
        for e in range(3):
            w.write_samples(e, {
                "sample_id": list(range(n)), "loss": [0.1 * i + e for i in range(n)], "correct": [True] * n,
                "mixed": [False] * n, "partner_id": [-1] * n, "weight": [1.0] * n, "region": [e % 4] * n,
                "mix_next": [False] * n, "mix_path": [""] * n, "skipped": [False] * n,
            })
        w.write_epochs(epoch_rows([0.1, 0.2, 0.3], [1, 1, 1], [n] * 3, n_samples=n))
    # a crash's leftover temporary: hidden, so no reader may see it
    stray = root / "sw" / "history" / "samples" / "trial=a-1" / "epoch=0" / ".part-0.parquet.123.tmp"
    pq.write_table(pa.table({"sample_id": [99]}), stray)


def test_duckdb_reads_histories_unchanged(tmp_path):
    write_history(tmp_path)
    samples = load_samples(tmp_path, "sw")
    assert len(samples) == 3 * (4 + 3)
    glob = f"{tmp_path}/sw/history/samples/*/*/*.parquet"
    n = duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)").fetchall()[0][0]
    assert n == len(samples)
    per_part = duckdb.sql(
        f"select trial, epoch, count(*) as n, sum(loss) as s from read_parquet('{glob}', hive_partitioning=true) "
        "group by trial, epoch order by trial, epoch").df()
    mine = samples.groupby(["trial", "epoch"]).agg(n=("loss", "size"), s=("loss", "sum")).reset_index()
    assert per_part.trial.tolist() == mine.trial.astype(str).tolist()
    assert per_part.epoch.tolist() == mine.epoch.tolist()
    assert per_part.n.tolist() == mine.n.tolist()
    assert per_part.s.round(4).tolist() == mine.s.astype(float).round(4).tolist()
    types = {r[0]: r[1] for r in duckdb.sql(f"describe select * from read_parquet('{glob}', hive_partitioning=true)").fetchall()}
    assert types["sample_id"] == "BIGINT" and types["loss"] == "FLOAT" and types["region"] == "TINYINT"
    epochs_glob = f"{tmp_path}/sw/history/epochs/*/*.parquet"
    n_ep = duckdb.sql(f"select count(*) from read_parquet('{epochs_glob}', hive_partitioning=true)").fetchall()[0][0]
    assert n_ep == len(load_epochs(tmp_path, "sw")) == 6


def test_partition_pruning(tmp_path):
    write_history(tmp_path)
    files = sample_files(tmp_path, "sw", trials=["b-2"], epochs=[1])
    assert len(files) == 1 and files[0].endswith("trial=b-2/epoch=1/part-0.parquet")
    assert len(sample_files(tmp_path, "sw", trials="a-1")) == 3
    assert sample_files(tmp_path, "sw", trials="b-2", epochs=np.int64(1)) == files  # a NumPy scalar filter
    assert len(sample_files(tmp_path, "sw")) == 6  # the hidden temporary is not among them
    part = load_samples(tmp_path, "sw", trials=["b-2"], epochs=[1], columns=["loss"])
    assert len(part) == 3 and set(part.columns) == {"trial", "epoch", "loss"}
    assert (part.trial == "b-2").all() and (part.epoch == 1).all()
