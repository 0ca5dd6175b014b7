"""`sweep run FILE --resume` after FILE was edited: refused in one line naming what changed, unless
--allow-changed, which resumes the unchanged trials (finished ones not run again, an interrupted one from
its last checkpoint) and adds the new ones. `sweep resume NAME` says when the file changed."""

from __future__ import annotations

import json
import shutil

import yaml

from mixtrain_trainer.history import load_epochs, load_trial_records, load_trials
from orchestrate.cli import _warn_if_source_changed, main
from orchestrate.spec import expand, load_sweep
from tests.orchestrate.test_sweep_run import _assert_clean_metrics, _runs


def _ids(path) -> dict[str, str]:
    return {t.labels["variant"]: t.trial_id for t in expand(load_sweep(path))}


def _edit(path, **changes) -> None:
    spec = yaml.safe_load(path.read_text())
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))


def test_edited_file_refused_then_allow_changed(ray_local, write_sweep, capsys):
    path, uri, root = write_sweep("edited", variants=["baseline", "mixtrain-cutmix"], base={"epochs": 3})
    assert main(["sweep", "run", str(path), "--quiet"]) == 0
    before = _ids(path)
    record_path = root / "edited" / "sweep.json"

    capsys.readouterr()
    assert main(["sweep", "run", str(path), "--quiet", "--resume"]) == 0  # unchanged: resumes (nothing to do)
    assert "changed" not in capsys.readouterr().err

    _edit(path, variants=["baseline", "mixtrain-mixup"])
    after = _ids(path)
    record_before = record_path.read_bytes()
    assert main(["sweep", "run", str(path), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mixtrain: error: ")
    assert "variants" in err and before["mixtrain-cutmix"] in err  # which keys, which trials
    assert "1 new" in err and "--new-name" in err and "--allow-changed" in err
    assert record_path.read_bytes() == record_before  # nothing written

    # `sweep resume NAME` finishes the sweep as saved, and says that its file has changed
    _warn_if_source_changed(json.loads(record_before))
    note = capsys.readouterr().err
    assert "has changed" in note and "variants" in note and "--allow-changed" in note

    # The unchanged baseline was interrupted after epoch 1 (as a killed driver leaves it): its newest Tune
    # checkpoint is gone and its record says running.
    base_id = before["baseline"]
    tune_dir = root / "edited" / "ray" / "tune" / base_id
    checkpoints = sorted(tune_dir.glob("checkpoint_*"))
    assert len(checkpoints) == 2
    shutil.rmtree(checkpoints[-1])
    record_file = root / "edited" / "trials" / f"{base_id}.json"
    base_record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**base_record, "status": "running"}))
    cutmix_record = (root / "edited" / "trials" / f"{before['mixtrain-cutmix']}.json").read_bytes()

    assert main(["sweep", "run", str(path), "--quiet", "--resume", "--allow-changed"]) == 0
    assert "--allow-changed: resuming the 1 unchanged" in capsys.readouterr().err
    records = {r["trial_id"]: r for r in load_trial_records(root, "edited")}
    assert records[base_id]["status"] == "done"
    assert records[base_id]["started_epoch"] == 2  # continued from its epoch-1 checkpoint, not restarted
    assert records[after["mixtrain-mixup"]]["status"] == "done" and records[after["mixtrain-mixup"]]["started_epoch"] == 0
    # the dropped trial was not touched
    assert (root / "edited" / "trials" / f"{before['mixtrain-cutmix']}.json").read_bytes() == cutmix_record
    epochs = load_epochs(root, "edited")
    assert epochs[epochs.trial == base_id].epoch.tolist() == [0, 1, 2]
    saved = json.loads(record_path.read_text())
    assert saved["trials"] == list(after.values())
    assert saved["changes"][0]["trials"] == list(before.values())
    client, parents, children = _runs(uri, "edited")
    assert len(parents) == 1
    runs = {r.data.tags["trial_id"]: r for r in children}
    _assert_clean_metrics(client, runs[base_id], 3)  # no epoch logged twice
    _assert_clean_metrics(client, runs[after["mixtrain-mixup"]], 3)

    capsys.readouterr()
    assert main(["sweep", "status", "edited", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep edited: 2 done, 0 running, 0 failed, 0 pending, 1 dropped"), out
    assert f"{before['mixtrain-cutmix']}" in out and "dropped" in out
    assert len(load_trials(root, "edited")) == 3
