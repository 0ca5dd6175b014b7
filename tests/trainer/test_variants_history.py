"""Every variant trains a few epochs on ``synthetic`` and writes a history that follows CONTRACT.md and
agrees with METHOD.md (partners, weights, inputs per epoch, regions and thresholds, S_mix of the next epoch)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trainer_helpers import N_TRAIN, tiny_config

from mixtrain_trainer.history import load_epochs, load_samples
from mixtrain_trainer.trainer import Trainer
from mixtrain_trainer.variants import VARIANTS

SAMPLE_COLUMNS = {
    "sample_id": pa.int64(),
    "loss": pa.float32(),
    "correct": pa.bool_(),
    "mixed": pa.bool_(),
    "partner_id": pa.int64(),
    "weight": pa.float32(),
    "region": pa.int8(),
    "mix_next": pa.bool_(),
    "mix_path": pa.string(),
    "skipped": pa.bool_(),
}
EPOCH_COLUMNS = [
    "epoch",
    "l_corr",
    "l_incorr",
    "l_mid",
    "n_samples",
    "n_mixed",
    "n_inputs",
    "train_loss",
    "train_acc",
    "test_acc",
    "test_top5",
    "epoch_seconds",
    "lr",
]
SELECTIVE = {name for name, v in VARIANTS.items() if v.mixes and v.rule != "naive"}
# variants whose loss weights differ from 1 (InfoBatch's 1/(1-r); tests/trainer/test_infobatch.py checks them)
REWEIGHTING = {"infobatch", "mixtrain-cutmix-prune"}


def _epochs_for(name: str) -> int:
    # selective variants cannot mix before epoch 2 (thresholds need an epoch of unmixed samples first)
    return 3 if name in SELECTIVE else 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train every variant once; the tests below read what they wrote."""
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name in VARIANTS:
        cfg = tiny_config(root, name, _epochs_for(name))
        trainer = Trainer(cfg)
        final = trainer.fit()
        out[name] = (cfg, trainer.trial_id, final)
    return root, out


def _load(runs, name):
    root, out = runs
    cfg, trial, final = out[name]
    samples = load_samples(root, cfg.name, trials=[trial])
    epochs = load_epochs(root, cfg.name, trials=[trial])
    return cfg, trial, final, samples, epochs


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_writes_a_valid_history(runs, name):
    root, _ = runs
    cfg, trial, final, s, e = _load(runs, name)
    v = VARIANTS[name]
    n_epochs = _epochs_for(name)

    # one row per (sample, epoch), every training sample in every epoch
    assert len(s) == N_TRAIN * n_epochs
    assert not s.duplicated(["epoch", "sample_id"]).any()
    for _, rows in s.groupby("epoch"):
        assert sorted(rows["sample_id"]) == list(range(N_TRAIN))

    # the Parquet files themselves carry the contract's types
    files = sorted(
        (root / cfg.name / "history" / "samples" / f"trial={trial}").glob("epoch=*/part-0.parquet")
    )
    assert [f.parent.name for f in files] == [f"epoch={i}" for i in range(n_epochs)]
    schema = pq.read_schema(files[0])
    assert {f.name: f.type for f in schema} == SAMPLE_COLUMNS
    assert str(s["sample_id"].dtype) == "int64" and str(s["partner_id"].dtype) == "int64"
    assert str(s["loss"].dtype) == "float32" and str(s["weight"].dtype) == "float32"
    assert str(s["region"].dtype) == "int8"
    assert all(str(s[c].dtype) == "bool" for c in ("correct", "mixed", "mix_next", "skipped"))

    # epoch table
    assert set(EPOCH_COLUMNS) <= set(e.columns)
    assert e["epoch"].tolist() == list(range(n_epochs))
    assert (e["n_samples"] == N_TRAIN).all()
    assert e["test_acc"].between(0, 1).all() and e["train_acc"].between(0, 1).all()
    assert (e["test_top5"] >= e["test_acc"]).all()
    assert (e["epoch_seconds"] > 0).all() and (e["lr"] > 0).all()

    for epoch, rows in s.groupby("epoch"):
        row = e.set_index("epoch").loc[epoch]
        mixed = rows[rows["mixed"]]
        assert row["n_mixed"] == len(mixed)
        assert len(mixed) % 2 == 0
        # partners: mutual, in the same epoch, weights summing to 1
        by_id = rows.set_index("sample_id")
        partners = by_id.loc[mixed["partner_id"]]
        assert partners["mixed"].all()
        assert (partners["partner_id"].to_numpy() == mixed["sample_id"].to_numpy()).all()
        assert (mixed["partner_id"] != mixed["sample_id"]).all()
        unmixed = rows[~rows["mixed"]]
        assert (unmixed["partner_id"] == -1).all()
        if name not in REWEIGHTING:
            assert np.allclose(mixed["weight"].to_numpy() + partners["weight"].to_numpy(), 1.0, atol=1e-6)
            assert (unmixed["weight"] == 1.0).all()
        # inputs = trained samples - one per composite
        n_skipped = int(rows["skipped"].sum())
        assert row["n_inputs"] == N_TRAIN - n_skipped - len(mixed) // 2
        assert not (rows["mixed"] & rows["skipped"]).any()
        assert set(rows["mix_path"]) <= {"", "region1", "region3", "accuracy", "avgloss"}

    if not v.mixes:
        assert not s["mixed"].any()
    else:
        assert s["mixed"].any(), "a mixing variant mixes within its first epochs"
        if (v.operator == "cutmix" or not v.adaptive) and name not in REWEIGHTING:
            assert (s.loc[s["mixed"], "weight"] == 0.5).all()  # 16x16 images, stride 4: halves of a 4x4 grid
    if v.rule == "naive":
        assert s["mixed"].all(), "naive variants pair every sample from epoch 0 on"
        assert (e["n_inputs"] == N_TRAIN // 2).all()
    if v.rival in ("minibatch-skip", "selective-backprop", "stale-sb", "infobatch"):
        assert s["skipped"].any()
    elif name not in ("skip-region3", "mixtrain-cutmix-prune"):
        assert not s["skipped"].any()
        assert e["n_inputs"].tolist() == (N_TRAIN - e["n_mixed"] // 2).tolist()

    # cost accounting: forward-only inputs (Selective-Backprop's selection; StaleSB refreshes at epoch 0)
    if v.rival == "selective-backprop":
        assert (e["n_forward"] == N_TRAIN).all()
    elif v.rival == "stale-sb":
        assert e["n_forward"].tolist() == [N_TRAIN] + [0] * (n_epochs - 1)  # staleness 3
    else:
        assert (e["n_forward"] == 0).all()
    if v.rival == "minibatch-skip":  # 8 batches of 16: exactly round(0.3 x 8) = 2 dropped every epoch
        assert (e["n_skipped"] == 32).all() and (e["n_inputs"] == N_TRAIN - 32).all()
    # next epoch's S_mix by path, and skips: Region 3 counts only entrants into S_mix
    for epoch, rows in s.groupby("epoch"):
        row = e.set_index("epoch").loc[epoch]
        assert row["n_next_region1"] == int((rows["mix_next"] & (rows["mix_path"] == "region1")).sum())
        assert row["n_next_region3"] == int((rows["mix_next"] & (rows["mix_path"] == "region3")).sum())
        assert row["n_next_region1"] + row["n_next_region3"] <= row["n_mix_next"]
        to_skip = int((~rows["mix_next"] & (rows["mix_path"] == "region3")).sum())
        assert row["n_next_skip"] == (to_skip if name == "skip-region3" else 0)
    # what the epoch used of the machine: host memory always, GPU fields only on CUDA
    assert (e["rss_mb"] > 10).all()
    assert e["peak_gpu_mem_mb"].isna().all() and e["gpu_util"].isna().all()

    trial_record = json.loads((root / cfg.name / "trials" / f"{trial}.json").read_text())
    assert trial_record["status"] == "done" and trial_record["variant"] == name
    method = trial_record["method"]
    assert method["rule"] == v.rule and method["strategy"] == (v.rival or "mixing")
    assert ("policy_region_ties" in method) == (v.rule not in ("none", "naive"))
    if v.operator == "cutmix":
        assert method["split_propagation"] is v.split and "odd_grid_r" in method
    assert trial_record["step"] == {"compiled": False, "compile_mode": None, "compile_seconds": 0.0}
    assert final["epochs"] == n_epochs and final["total_inputs"] == int(e["n_inputs"].sum())


@pytest.mark.parametrize("name", sorted(n for n, v in VARIANTS.items() if v.rule != "none"))
def test_regions_and_thresholds_follow_the_unmixed_losses(runs, name):
    """L_corr / L_incorr of epoch E re-computed from the history of epochs < E (unmixed, trained rows only),
    and each row's region from its loss and those thresholds."""
    _, _, _, s, e = _load(runs, name)
    for epoch in e["epoch"]:
        before = s[(s["epoch"] < epoch) & ~s["mixed"] & ~s["skipped"]]
        row = e.set_index("epoch").loc[epoch]
        corr = before.loc[before["correct"], "loss"].astype(np.float64)
        incorr = before.loc[~before["correct"], "loss"].astype(np.float64)
        rows = s[s["epoch"] == epoch]
        if len(corr) == 0 or len(incorr) == 0:
            assert np.isnan(row["l_mid"]) and (rows["region"] == 0).all()
            continue
        assert row["l_corr"] == pytest.approx(corr.mean(), rel=1e-9)
        assert row["l_incorr"] == pytest.approx(incorr.mean(), rel=1e-9)
        assert row["l_mid"] == pytest.approx((corr.mean() + incorr.mean()) / 2, rel=1e-9)
        loss = rows["loss"].astype(np.float64)
        expected = np.where(loss < row["l_mid"], 1, np.where(loss > row["l_incorr"], 3, 2))
        assert (rows["region"].to_numpy() == expected).all()
    if VARIANTS[name].rule == "naive":
        assert e["l_mid"].isna().all(), "nothing is ever unmixed"
    if name in SELECTIVE and not name.startswith("threshold-accuracy"):
        assert np.isnan(e.loc[0, "l_mid"]) and not s.loc[s["epoch"] <= 1, "mixed"].any()


@pytest.mark.parametrize("name", sorted(SELECTIVE))
def test_each_epoch_mixes_the_previous_epochs_s_mix(runs, name):
    _, _, _, s, e = _load(runs, name)
    for epoch in e["epoch"][1:]:
        prev = s[s["epoch"] == epoch - 1].set_index("sample_id")
        now = s[s["epoch"] == epoch].set_index("sample_id")
        if name == "skip-region3":  # Region 3 entrants are skipped (not in S_mix), Region 1 ones mixed
            to_skip = ~prev["mix_next"] & (prev["mix_path"] == "region3")
            assert (now["skipped"] == to_skip).all()
            assert not (prev["mix_next"] & (prev["mix_path"] == "region3")).any()
            s_mix = prev["mix_next"]
        else:
            s_mix = prev["mix_next"]
        assert not (now["mixed"] & ~s_mix).any(), "only S_mix members are mixed"
        pruned = int((now["skipped"] & s_mix).sum()) if name == "mixtrain-cutmix-prune" else 0  # InfoBatch-style
        assert int(s_mix.sum()) - int(now["mixed"].sum()) - pruned in (0, 1), "all of S_mix but an odd one out"
    if name.endswith("-anneal"):
        return
    assert s["mixed"].any()


@pytest.mark.parametrize("name", ["naive-mixup-adaptive", "mixtrain-mixup"])
def test_adaptive_ratio_uses_each_constituents_previous_loss(runs, name):
    _, _, _, s, e = _load(runs, name)
    checked = 0
    for epoch in e["epoch"]:
        now = s[(s["epoch"] == epoch) & s["mixed"]]
        if epoch == 0:
            assert (now["weight"] == 0.5).all(), "no loss yet: r = 0.5"
            continue
        prev = s[s["epoch"] == epoch - 1].set_index("sample_id")["loss"].astype(np.float64)
        l1 = prev.loc[now["sample_id"]].to_numpy()
        l2 = prev.loc[now["partner_id"]].to_numpy()
        assert np.allclose(now["weight"].to_numpy(), l1 / (l1 + l2), atol=1e-6)
        checked += len(now)
    assert checked > 0
