"""The ``mixtrain`` command. Input errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mixtrain_trainer.errors import ConfigError, MixtrainError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"mixtrain: error: {message}; see `{self.prog} --help`\n")


def _root(args) -> Path:
    from mixtrain_trainer.history import storage_root

    return storage_root(getattr(args, "root", None)).expanduser().resolve()


def _record_path(root: Path, name: str) -> Path:
    return root / name / "sweep.json"


def _load_record(root: Path, name: str) -> dict:
    path = _record_path(root, name)
    if not path.is_file():
        known = sorted(p.parent.name for p in root.glob("*/sweep.json")) if root.exists() else []
        hint = f"known sweeps: {', '.join(known)}" if known else "run `mixtrain sweep run SWEEP.yaml` first"
        raise ConfigError(f"no sweep named {name!r} under {root}; {hint} (or pass --root)")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from mixtrain_trainer.config import load_run_config
    from mixtrain_trainer.train import run

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: the number of data-parallel processes must be at least 1")
    workers = [] if args.workers is None else [f"workers={args.workers}"]
    cfg = load_run_config(args.config, args.set + workers)
    if args.root:
        cfg.storage.root = args.root
    if cfg.workers > 1:
        from mixtrain_trainer.launch import run_local
        from orchestrate.train_workers import check_supported

        check_supported(cfg, args.config)
        run_local(cfg, resume=args.resume)
        return 0
    run(cfg, resume=args.resume)
    return 0


# ------------------------------------------------------------------------------------------- sweep
def _spec_and_trials(args):
    from orchestrate.spec import expand, load_sweep

    overrides = getattr(args, "set", None) or []
    spec = load_sweep(args.sweep, overrides)
    if getattr(args, "new_name", None):
        spec = spec.model_copy(update={"name": args.new_name})
    if getattr(args, "root", None):
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"root": args.root})})
    return spec, expand(spec, smoke=args.smoke_test, source=args.sweep, overrides=overrides)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def sweep_changes(record: dict, spec, trials, smoke: bool) -> tuple[list[str], list[str], list[str]]:
    """What differs between a saved sweep and the same name's definition now: (changed spec keys as
    "key old -> new", saved trial ids no longer in the sweep, new trial ids). Only the trials decide;
    keys that change no trial (tracking, storage) are listed only beside a trial change."""
    from orchestrate.tracking import flatten

    saved_ids, now_ids = list(record.get("trials", [])), [t.trial_id for t in trials]
    gone = [t for t in saved_ids if t not in set(now_ids)]
    new = [t for t in now_ids if t not in set(saved_ids)]
    old = flatten({**record["spec"], "smoke-test": bool(record.get("smoke"))})
    now = flatten({**spec.model_dump(mode="json"), "smoke-test": smoke})
    keys = [f"{k} {_short(old.get(k, '(unset)'))} -> {_short(now.get(k, '(unset)'))}"
            for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k) and not k.startswith("storage.")]
    return keys, gone, new


def _list(items: list[str], most: int = 3) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def cmd_plan(args) -> int:
    from orchestrate.spec import check_capacity, trial_resources

    spec, trials = _spec_and_trials(args)
    if args.address:  # `local`: the embedded Ray `sweep run` would start on this machine
        from orchestrate.runner import cluster_nodes, init_ray

        init_ray(args.address)
        check_capacity(spec, trials, cluster_nodes(), args.sweep, f"the cluster at {args.address}")
    print(f"sweep {spec.name}: {len(trials)} trials, {spec.resources.cpu:g} CPU + {spec.resources.gpu:g} GPU per worker"
          + (f", search {spec.search.kind} x{spec.search.num_samples}" if spec.search.kind != "grid" else ""))
    header = (f"{'trial id':<40} {'variant':<24} {'model':<14} {'k':>2} {'seed':>4} {'epochs':>6} {'workers':>7} "
              f"{'cpu':>5} {'gpu':>5}  other")
    print(header)
    for t in trials:
        c = t.config
        need = trial_resources(spec, t)
        other = {k: v for k, v in t.labels.items() if k not in ("variant", "model", "k")}
        print(f"{t.trial_id:<40} {t.labels['variant']:<24} {c.model:<14} {c.k:>2} {c.seed:>4} "
              f"{c.trained_epochs:>6} {need['workers']:>7} {need['cpu']:>5g} {need['gpu']:>5g}  "
              f"{json.dumps(other) if other else ''}")
    return 0


def cmd_run(args, resume_record: dict | None = None) -> int:
    from mixtrain_trainer.history import write_json_atomic
    from orchestrate.runner import check_resources, init_ray, run_sweep
    from orchestrate.spec import expand, parse_sweep, sweep_root
    from orchestrate.tracking import check_reachable, default_uri

    if resume_record is None:
        spec, trials = _spec_and_trials(args)
        root = sweep_root(spec)
        record_path = _record_path(root, spec.name)
        resume = args.resume
        if record_path.exists() and not resume:
            raise ConfigError(
                f"sweep {spec.name!r} already exists under {root}; continue it with --resume "
                f"(or `mixtrain sweep resume {spec.name}`), or start a new one with --new-name NAME"
            )
        source = args.sweep
        if record_path.exists():
            saved = json.loads(record_path.read_text())
            keys, gone, new = sweep_changes(saved, spec, trials, bool(args.smoke_test))
            if gone or new:
                what = (f"{args.sweep} has changed since sweep {spec.name!r} was started: "
                        f"{'; '.join(keys[:4]) or 'its trials'}{' ...' if len(keys) > 4 else ''} "
                        f"({len(gone)} saved trial(s) no longer in it: {_list(gone) or 'none'}; "
                        f"{len(new)} new: {_list(new) or 'none'})")
                if not args.allow_changed:
                    raise ConfigError(
                        f"{what}; run the edited file as a new sweep with --new-name NAME, or pass "
                        f"--allow-changed to resume the {len(trials) - len(new)} unchanged trial(s) and add the new ones")
                print(f"mixtrain: {what}; --allow-changed: resuming the {len(trials) - len(new)} unchanged "
                      f"trial(s), adding {len(new)}, dropping {len(gone)}", file=sys.stderr, flush=True)
                resume = "changed"
    else:
        spec = parse_sweep(resume_record["spec"], f"sweep {resume_record['spec']['name']}")
        trials = expand(spec, smoke=resume_record.get("smoke", False))
        root, resume, source = sweep_root(spec), True, spec.name
        record_path = _record_path(root, spec.name)
    uri = spec.tracking.uri or (resume_record or {}).get("tracking_uri") or default_uri()
    remote = not uri.startswith("sqlite:")
    if remote:
        check_reachable(uri)  # fail fast, before Ray starts
    init_ray(args.address)
    check_resources(spec, trials, str(source))  # before anything is written
    if not remote:
        check_reachable(uri)  # creates the local SQLite store
    if not record_path.exists() or resume == "changed":
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        changes = record.get("changes", [])
        if record:  # --allow-changed: the record follows the file; what it was before stays listed
            changes.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "spec": record["spec"],
                            "trials": record["trials"]})
        write_json_atomic({
            "spec": spec.model_dump(mode="json"), "source": str(source), "smoke": bool(getattr(args, "smoke_test", False)),
            "tracking_uri": uri, "created": record.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            "trials": [t.trial_id for t in trials], **({"changes": changes} if changes else {}),
        }, record_path)
    print(f"sweep {spec.name}: {len(trials)} trials -> {root / spec.name} | MLflow {uri}", flush=True)
    results = run_sweep(spec, trials, root, uri, address=args.address, resume=resume, quiet=args.quiet,
                        source=str(source))
    return _summarise(results, spec.name, uri)


def _summarise(results, name: str, uri: str) -> int:
    failed = []
    for r in results:
        m = r.metrics or {}
        if r.error is not None or m.get("failed"):
            failed.append((m.get("trial_id", "?"), m.get("error") or str(r.error).strip().splitlines()[-1][:200]))
    done = len(results) - len(failed)
    print(f"sweep {name}: {done} done, {len(failed)} failed. Browse: `mixtrain ui`; report: `mixtrain report {name}`")
    for trial_id, reason in failed:
        print(f"  failed {trial_id}: {reason}")
    return 1 if failed else 0


def cmd_resume(args) -> int:
    record = _load_record(_root(args), args.name)
    if args.root:
        record["spec"]["storage"]["root"] = str(_root(args))
    _warn_if_source_changed(record)
    return cmd_run(args, resume_record=record)


def _warn_if_source_changed(record: dict) -> None:
    """`sweep resume NAME` finishes the sweep as saved; say so when its file has been edited since."""
    from orchestrate.spec import expand, load_sweep

    source = record.get("source")
    if not source or not Path(source).is_file():
        return
    try:
        spec = load_sweep(source)
        spec = spec.model_copy(update={"name": record["spec"]["name"], "storage": spec.storage.model_copy(
            update={"root": record["spec"]["storage"].get("root")})})
        keys, gone, new = sweep_changes(record, spec, expand(spec, smoke=bool(record.get("smoke"))),
                                        bool(record.get("smoke")))
    except MixtrainError:
        return
    if gone or new:
        print(f"mixtrain: note: {source} has changed since this sweep started ({'; '.join(keys[:4])}); "
              f"resuming the sweep as saved. To take the edits: `mixtrain sweep run {source} --resume "
              "--allow-changed`", file=sys.stderr, flush=True)


def cmd_status(args) -> int:
    from mixtrain_trainer.history import load_trial_records

    root = _root(args)
    record = _load_record(root, args.name)
    expected = record.get("trials", [])
    found = {t["trial_id"]: t for t in load_trial_records(root, args.name)}
    counts: dict[str, int] = {}
    lines = []
    for trial_id in dict.fromkeys(expected + sorted(found)):
        t = found.get(trial_id)
        status = t["status"] if t else "pending"
        if expected and trial_id not in expected:  # left out by `sweep run --resume --allow-changed`
            lines.append(f"  {trial_id:<40} {'dropped':<8} no longer in the sweep (its file changed); was {status}")
            counts["dropped"] = counts.get("dropped", 0) + 1
            continue
        counts[status] = counts.get(status, 0) + 1
        detail = ""
        if t and status == "done":
            detail = f"test top-1 {t['final']['final_test_acc']:.2%}, {t['final']['total_train_seconds']:.1f} s"
        elif t and status == "failed":
            detail = t.get("error", "")
        elif t and status == "running":
            detail = "running, or interrupted: `mixtrain sweep resume` continues it"
        lines.append(f"  {trial_id:<40} {status:<8} {detail}")
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "failed", "pending"))
    if counts.get("dropped"):
        summary += f", {counts['dropped']} dropped"
    print(f"sweep {args.name}: {summary}")
    print("\n".join(lines))
    return 0


# ------------------------------------------------------------------------------------------- report, ui, sync
def cmd_report(args) -> int:
    from orchestrate.report import build_report, claim_tags

    root = _root(args)
    record = _load_record(root, args.name)
    claims = None
    if args.claims:  # another sweep file's claims, evaluated on this sweep's results
        from mixtrain_trainer.config import load_yaml
        from orchestrate.spec import parse_sweep

        claims = [c.model_dump() for c in parse_sweep(load_yaml(args.claims), args.claims).claims]
    report = build_report(root, args.name, claims, with_samples=not args.no_samples)
    folder = report.folder
    print((folder / "summary.md").read_text())
    if getattr(args, "figures", False):
        from orchestrate.figures import write_figures

        try:
            figures = write_figures(root, args.name, folder)
        except FileNotFoundError as err:
            raise ConfigError(f"--figures: {err}") from None
        print(f"figures: {', '.join(p.name for p in figures)}")
    print(f"report: {folder}")
    for v in report.verdicts:
        print(f"claim {v.id}: {v.verdict} ({v.measured}{'; ' + v.reason if v.reason else ''})")
    if not args.no_mlflow:
        try:
            from orchestrate.report import log_report

            uri = record["spec"]["tracking"].get("uri") or record.get("tracking_uri")
            log_report(folder, uri, args.name, record["spec"]["tracking"].get("experiment"),
                       claim_tags(report.verdicts))
            print(f"logged to MLflow ({uri}) as artifacts of the sweep's parent run")
        except MixtrainError as err:
            print(f"mixtrain: warning: report not logged to MLflow: {err}", file=sys.stderr)
    if args.open:
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        subprocess.run([opener, str(folder / "summary.md")], check=False)
    if args.check and report.failed:
        print(f"mixtrain: {len(report.failed)} claim(s) fail: {', '.join(v.id for v in report.failed)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_sync(args) -> int:
    from orchestrate.tracking import sync_from_files

    root = _root(args)
    record = _load_record(root, args.name)
    uri = args.uri or record["spec"]["tracking"].get("uri") or record.get("tracking_uri")
    counts = sync_from_files(uri, args.name, root, record["spec"]["tracking"].get("experiment"))
    print(f"sync-mlflow {args.name}: {counts['trials']} trials checked, {counts['epochs_logged']} epochs re-logged to {uri}")
    return 0


class _Stop(Exception):
    """A termination signal arrived (SIGTERM, SIGHUP): stop the child server, then exit."""


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _sweep_links(url: str, most: int = 5) -> list[tuple[str, str]]:
    """(experiment name, its trials' charts page) of the most recently used experiments of the store."""
    from orchestrate.tracking import runs_url

    try:
        from mlflow.tracking import MlflowClient

        found = MlflowClient(url).search_experiments(max_results=most + 1, order_by=["last_update_time DESC"])
    except Exception:  # noqa: BLE001 - the links are a convenience; the UI is up either way
        return []
    return [(e.name, runs_url(url, e.experiment_id)) for e in found if e.name != "Default"][:most]


def cmd_ui(args) -> int:
    """MLflow's server (UI + REST) on the local store: one worker, no job runner, in its own process
    group; the URL is printed once /health answers; SIGINT/SIGTERM/SIGHUP stop the whole group."""
    import signal
    import tempfile

    from orchestrate.tracking import default_uri

    uri = args.uri or default_uri()
    if uri.startswith("http"):
        print(f"MLflow tracking server: {uri}")
        return 0
    host = args.host
    port = _free_port(host) if args.port == 0 else args.port
    if not _port_free(host, port):
        raise ConfigError(f"--port {port}: {host}:{port} is already in use (another `mixtrain ui`?); "
                          "choose another port, or --port 0 for a free one")
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{probe}:{port}"
    log_path = Path(tempfile.gettempdir()) / f"mixtrain-ui-{port}.log"
    env = dict(os.environ)
    # MLflow >= 3.5 starts a GenAI job runner (~7 processes, >1 GB) unless told not to; the UI needs none.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", str(args.workers)]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, start_new_session=True)

    def stop_server() -> None:
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)  # mlflow forwards it to its uvicorn worker
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever of the group is left
        server.wait()

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        deadline = time.monotonic() + args.timeout
        while not _healthy(url):
            if server.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise MixtrainError(f"the MLflow server exited during start-up ({tail[0][:200]}); "
                                    f"its log: {log_path}")
            if time.monotonic() > deadline:
                raise MixtrainError(f"the MLflow server did not answer {url}/health within {args.timeout} s; "
                                    f"its log: {log_path}")
            time.sleep(0.5)
        print(f"MLflow UI for {uri} at {url} (Ctrl-C stops it; server log {log_path})", flush=True)
        for name, link in _sweep_links(url):
            print(f"  {name}: {link}", flush=True)
        code = server.wait()
        return 0 if code == 0 else 1
    except (_Stop, KeyboardInterrupt) as stopped:
        return 128 + stopped.args[0] if isinstance(stopped, _Stop) else 0
    finally:
        stop_server()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mixtrain", description="mixTrain sweeps on Ray with MLflow tracking and per-sample histories.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="one run in this process, no Ray")
    t.add_argument("--config", required=True, help="run file (YAML)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. epochs=3")
    t.add_argument("--resume", action="store_true", help="continue from this run's last checkpoint")
    t.add_argument("--root", help="storage root (default ./mixtrain-results)")
    t.add_argument("--workers", type=int, help="data-parallel processes on this machine (sets workers:)")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sweep", help="plan, run, resume or inspect a sweep")
    ssub = s.add_subparsers(dest="sweep_command", required=True, parser_class=_Parser)
    for name, fn, help_ in (("plan", cmd_plan, "validate and list the trials"), ("run", cmd_run, "run on Ray")):
        c = ssub.add_parser(name, help=help_)
        c.add_argument("sweep", help="sweep file (YAML)")
        c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the sweep file, e.g. base.epochs=20 or grid.seed=[0]")
        c.add_argument("--smoke-test", action="store_true", help="tiny subset and 2 epochs")
        c.add_argument("--root", help="storage root (overrides storage.root)")
        c.set_defaults(fn=fn)
        c.add_argument("--address", help="Ray cluster address, or `local` (run: default embedded local Ray; "
                       "plan: check that the trials fit this cluster)")
        if name == "run":
            c.add_argument("--resume", action="store_true", help="continue a sweep of this name")
            c.add_argument("--new-name", help="run under another sweep name")
            c.add_argument("--allow-changed", action="store_true",
                           help="with --resume: the file was edited; resume its unchanged trials, add the new ones")
            c.add_argument("--quiet", action="store_true", help="no live progress lines")
    r = ssub.add_parser("resume", help="finish an interrupted sweep")
    r.add_argument("name")
    r.add_argument("--root")
    r.add_argument("--address")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(fn=cmd_resume, smoke_test=False)
    st = ssub.add_parser("status", help="trials done / running / failed")
    st.add_argument("name")
    st.add_argument("--root")
    st.set_defaults(fn=cmd_status)

    rp = sub.add_parser("report", help="comparison table and plots of a sweep")
    rp.add_argument("name")
    rp.add_argument("--root")
    rp.add_argument("--open", action="store_true", help="open summary.md")
    rp.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    rp.add_argument("--figures", action="store_true",
                    help="also the per-sample figures (Fig. 6, 7/9a, 8, 13, trajectories) as PNGs, from the Parquet files")
    rp.add_argument("--check", action="store_true", help="exit 1 when a claim of the sweep file fails (CI)")
    rp.add_argument("--claims", metavar="SWEEP.yaml",
                    help="check this sweep file's claims instead of those the sweep ran with")
    rp.add_argument("--no-samples", action="store_true",
                    help="skip the per-sample history (faster on huge sweeps; its statistics stay blank)")
    rp.set_defaults(fn=cmd_report)

    sy = sub.add_parser("sync-mlflow", help="re-log to MLflow whatever it lacks, from the Parquet history")
    sy.add_argument("name")
    sy.add_argument("--root")
    sy.add_argument("--uri", help="tracking URI (default: the sweep's)")
    sy.set_defaults(fn=cmd_sync)

    u = sub.add_parser("ui", help="start the MLflow UI on the tracking store")
    u.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000, help="0: a free port")
    u.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    u.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server to answer")
    u.set_defaults(fn=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store set-up chatter is not for users
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except MixtrainError as err:
        print(f"mixtrain: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixtrain: interrupted; `mixtrain sweep resume NAME` continues a sweep", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
