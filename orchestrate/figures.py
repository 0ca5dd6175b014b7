"""``mixtrain report NAME --figures``: the paper's per-sample figures as PNGs, computed from the Parquet files.

Each figure is one ``orchestrate.analysis`` query over the files (any history size) and its ``plot_*``
twin; ``write_figures`` writes them all into the report folder, which the CLI then logs to the sweep's
parent MLflow run with the rest of the report.

| file | figure |
| --- | --- |
| ``fig6_lmid_separation.png`` | Fig. 6: correct vs incorrect unmixed samples below L_mid |
| ``fig7_mix_fraction_by_path.png`` | Fig. 7 / 9a: S_mix by entry path per epoch (one line per trial) |
| ``fig8_region3_occupancy.png`` | Fig. 8: share of epochs in Region 3, sets C and I |
| ``fig13_loss_change.png`` | Fig. 13: per-sample loss change between epochs |
| ``trajectories.png`` | loss, region and mixing of a few samples of one mixTrain trial |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mixtrain_trainer.history import load_trial_records, sample_files, samples_dataset
from orchestrate import analysis

#: how many samples ``trajectories.png`` follows
TRAJECTORY_SAMPLES = 6


def trial_labels(root, sweep: str) -> dict[str, str]:
    """trial id -> legend name: the variant and its other labels (model, budget...), then the seed."""
    out = {}
    for record in load_trial_records(root, sweep):
        labels = dict(record.get("labels") or {})
        name = str(labels.pop("variant", record.get("variant", record["trial_id"])))
        extra = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("budget",)]
        seed = (record.get("config") or {}).get("seed")
        out[record["trial_id"]] = " ".join([name, *extra] + ([f"s{seed}"] if seed is not None else []))
    return out


def trajectory_samples(root, sweep: str, labels: dict[str, str]) -> tuple[str, list[int]]:
    """The trial the trajectories follow (the first mixTrain trial, else the first) and evenly spaced
    sample ids of its first epoch."""
    files = sample_files(root, sweep)
    trials = sorted({Path(f).parts[-3].split("=", 1)[1] for f in files})
    mixtrain = [t for t in trials if labels.get(t, "").startswith("mixtrain")]
    trial = (mixtrain or trials)[0]
    first = min((f for f in files if Path(f).parts[-3] == f"trial={trial}"),
                key=lambda f: int(Path(f).parts[-2].split("=", 1)[1]))
    import pyarrow.parquet as pq

    ids = np.sort(pq.read_table(first, columns=["sample_id"]).column("sample_id").to_numpy())
    pick = np.unique(np.linspace(0, len(ids) - 1, min(TRAJECTORY_SAMPLES, len(ids))).round().astype(int))
    return trial, [int(i) for i in ids[pick]]


def _trajectories(root, sweep: str, labels: dict[str, str]) -> plt.Figure:
    trial, ids = trajectory_samples(root, sweep, labels)
    return analysis.plot_trajectories(analysis.trajectories_from_files(root, sweep, ids, trials=[trial]), labels)


#: file name -> figure(root, sweep, labels); each one query over the files and its plot
FIGURES: dict[str, Callable[..., plt.Figure]] = {
    "fig6_lmid_separation.png": lambda root, sweep, labels: analysis.plot_lmid_separation(
        analysis.lmid_separation_from_files(root, sweep), labels),
    "fig7_mix_fraction_by_path.png": lambda root, sweep, labels: analysis.plot_mix_fraction_by_path(
        analysis.mix_fraction_by_path_from_files(root, sweep), labels),
    "fig8_region3_occupancy.png": lambda root, sweep, labels: analysis.plot_region3_occupancy(
        analysis.region3_occupancy_from_files(root, sweep), labels),
    "fig13_loss_change.png": lambda root, sweep, labels: analysis.plot_loss_change(
        analysis.loss_change_from_files(root, sweep), labels),
    "trajectories.png": _trajectories,
}


def write_figures(root, sweep: str, out_dir: str | Path) -> list[Path]:
    """Write every figure of ``FIGURES`` into ``out_dir`` and return the paths.

    Raises FileNotFoundError (with the path) when the sweep has no per-sample history.
    """
    samples_dataset(root, sweep)  # the clear error when there is no history
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = trial_labels(root, sweep)
    written = []
    for name, make in FIGURES.items():
        fig = make(root, sweep, labels)
        try:
            fig.savefig(out_dir / name, dpi=110)
        finally:
            plt.close(fig)
        written.append(out_dir / name)
    return written
