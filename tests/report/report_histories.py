"""Small hand-made sweep histories, written with the trainer's own ``HistoryWriter``."""

from __future__ import annotations

from mixtrain_trainer.history import HistoryWriter


def epoch_rows(test_acc, seconds, inputs, frac_mixed=None, n_samples=100, l_mid=None):
    """Epoch-table rows from per-epoch lists (``frac_mixed`` defaults to 0, ``l_mid`` to null)."""
    n = len(test_acc)
    frac_mixed = frac_mixed or [0.0] * n
    l_mid = l_mid or [None] * n
    return [
        {
            "epoch": e, "l_corr": None, "l_incorr": None, "l_mid": l_mid[e], "n_samples": n_samples,
            "n_mixed": round(frac_mixed[e] * n_samples), "n_inputs": inputs[e], "n_skipped": 0,
            "n_mix_next": round(frac_mixed[e] * n_samples), "n_next_region1": round(frac_mixed[e] * n_samples),
            "n_next_region3": 0, "frac_mixed": frac_mixed[e], "train_loss": 1.0, "train_acc": 0.5,
            "test_acc": test_acc[e], "test_top5": min(1.0, test_acc[e] + 0.1), "test_loss": 1.0,
            "epoch_seconds": seconds[e], "policy_seconds": 0.01, "history_seconds": 0.01, "lr": 0.1,
        }
        for e in range(n)
    ]


def write_trial(root, sweep, trial_id, variant, seed, rows, *, model="m", budget=1.0, status="done",
                error=None, extra_labels=None, epochs=None):
    """One trial: its record (as ``Trainer.fit`` writes it) and its epoch table (``rows``; none if empty)."""
    w = HistoryWriter(root, sweep, trial_id)
    if rows:
        w.write_epochs(rows)
    labels = {"variant": variant if budget == 1.0 else f"baseline@{budget:g}", "model": model,
              **(extra_labels or {})}
    if budget != 1.0:
        labels["budget"] = budget
    trained = epochs if epochs is not None else len(rows)
    record = {
        "trial_id": trial_id, "sweep": sweep, "variant": variant, "status": status, "labels": labels,
        "config": {"seed": seed, "epochs": trained if budget == 1.0 else round(trained / budget),
                   "budget": budget, "model": model, "variant": variant, "dataset": {"name": "synthetic"}},
    }
    if error:
        record["error"] = error
    if status == "done":
        record["final"] = {
            "final_test_acc": rows[-1]["test_acc"], "total_train_seconds": sum(r["epoch_seconds"] for r in rows),
            "total_inputs": sum(r["n_inputs"] for r in rows), "epochs": len(rows),
        }
    w.write_trial(record)
    return w


def make_sweep(root, sweep="s1"):
    """baseline (2 seeds, 4 epochs), baseline@0.5 (2 seeds, 2 epochs), mixtrain-cutmix (2 done + 1 failed),
    naive-cutmix (1 seed, faster than every baseline), mixtrain-mixup (its only trial failed early)."""
    write_trial(root, sweep, "base-0", "baseline", 0, epoch_rows([0.5, 0.6, 0.7, 0.8], [10] * 4, [100] * 4))
    write_trial(root, sweep, "base-1", "baseline", 1, epoch_rows([0.5, 0.62, 0.72, 0.84], [11] * 4, [100] * 4))
    write_trial(root, sweep, "b50-0", "baseline", 0, epoch_rows([0.5, 0.7], [10] * 2, [100] * 2), budget=0.5)
    write_trial(root, sweep, "b50-1", "baseline", 1, epoch_rows([0.5, 0.72], [11] * 2, [100] * 2), budget=0.5)
    mixed = [0.0, 0.6, 0.8, 0.8]
    write_trial(root, sweep, "mc-0", "mixtrain-cutmix", 0,
                epoch_rows([0.4, 0.5, 0.55, 0.58], [10, 6, 6, 6], [100, 70, 60, 50], mixed))
    write_trial(root, sweep, "mc-1", "mixtrain-cutmix", 1,
                epoch_rows([0.4, 0.5, 0.6, 0.62], [11, 7, 7, 7], [100, 70, 60, 50], mixed))
    write_trial(root, sweep, "mc-2", "mixtrain-cutmix", 2, epoch_rows([0.3, 0.4], [10, 6], [100, 70]),
                status="failed", error="RuntimeError: boom at epoch 2\nTraceback ...", epochs=4)
    write_trial(root, sweep, "nc-0", "naive-cutmix", 0,
                epoch_rows([0.3, 0.4, 0.5, 0.55], [3.75] * 4, [50] * 4, [1.0] * 4))
    write_trial(root, sweep, "mm-0", "mixtrain-mixup", 0, [], status="failed", error="CUDA out of memory", epochs=4)
