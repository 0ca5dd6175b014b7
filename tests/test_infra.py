"""Static checks of infra/: the deployment files parse and have the structure their tools
require, and the scripts are valid bash with a usage/exit-2 contract. Fast: starts nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
INFRA = REPO_ROOT / "infra"
SCRIPTS = sorted(INFRA.rglob("*.sh"))
YAML_FILES = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def load_all(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} has no YAML document"
    return docs


def load_one(path: Path) -> dict:
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, got {len(docs)}"
    assert isinstance(docs[0], dict)
    return docs[0]


# ---------------------------------------------------------------- every file


def test_infra_files_present():
    for name in [
        "local-cluster.sh",
        "mlflow-server.sh",
        "Dockerfile",
        "docker-compose.yml",
        "ray-cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "README.md",
    ]:
        assert (INFRA / name).is_file(), f"infra/{name} missing"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path: Path):
    for doc in load_all(path):
        assert isinstance(doc, dict)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(INFRA)))
def test_scripts_bash_syntax(path: Path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(INFRA)))
def test_scripts_executable_with_shebang(path: Path):
    assert os.access(path, os.X_OK), f"{path} is not executable"
    assert path.read_text().startswith("#!"), f"{path} has no shebang"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_shellcheck():
    proc = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["local-cluster.sh", "mlflow-server.sh"])
@pytest.mark.parametrize("argv", [["bogus"], []], ids=["unknown", "missing"])
def test_script_unknown_subcommand_prints_usage_exit_2(script: str, argv: list[str]):
    proc = subprocess.run(
        ["bash", str(INFRA / script), *argv], capture_output=True, text=True, timeout=30, cwd=REPO_ROOT
    )
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr.lower()
    for sub in ("up", "down", "status"):
        assert sub in proc.stderr
    assert proc.stdout == ""  # stdout is reserved for the address / URI


@pytest.mark.parametrize("script", ["local-cluster.sh", "mlflow-server.sh"])
def test_script_help_exits_0(script: str):
    proc = subprocess.run(["bash", str(INFRA / script), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "usage:" in proc.stderr.lower()


def test_local_cluster_rejects_bad_option():
    proc = subprocess.run(
        ["bash", str(INFRA / "local-cluster.sh"), "up", "--no-such-option"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "unknown option" in proc.stderr


def test_local_cluster_script_contract():
    text = (INFRA / "local-cluster.sh").read_text()
    assert "RAY_AUTH_MODE=token" in text
    assert "--node-ip-address=127.0.0.1" in text
    assert "--include-dashboard=false" in text
    assert "MIXTRAIN_CLUSTER_STATE" in text
    assert "get-auth-token --generate" in text


def test_mlflow_script_contract():
    text = (INFRA / "mlflow-server.sh").read_text()
    assert "postgresql+psycopg://" in text
    assert "--serve-artifacts" in text
    assert "--workers 1" in text
    assert "/health" in text
    assert "listen_addresses=127.0.0.1" in text


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (INFRA / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    ops = [op for op, _ in ins]
    first = next(op for op in ops if op not in ("ARG",))
    assert first == "FROM", "only ARG may precede FROM"
    assert any(op == "FROM" for op in ops)
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"pip install [^&;]*\"?\.\[postgres\]", runs), (
        "no `pip install .[postgres]` of the project"
    )
    assert "ENTRYPOINT" in ops or "CMD" in ops
    entry = " ".join(rest for op, rest in ins if op in ("ENTRYPOINT", "CMD"))
    assert "mixtrain" in entry
    # the project sources the install needs are copied in
    copies = " ".join(rest for op, rest in ins if op == "COPY")
    for needed in ("pyproject.toml", "mixtrain_trainer", "orchestrate"):
        assert needed in copies
    # ENTRYPOINT / CMD in exec form
    for op, rest in ins:
        if op in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(rest), list)


def test_dockerfile_copies_existing_files():
    for op, rest in dockerfile_instructions():
        if op != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            assert (REPO_ROOT / src).exists(), f"COPY source {src} missing (context = repo root)"


def test_docker_entrypoint_runs_mixtrain():
    text = (INFRA / "docker-entrypoint.sh").read_text()
    assert "exec mixtrain" in text
    assert 'exec "$@"' in text  # the Ray cluster launcher starts containers with `bash`
    # the build context must keep the sources and the entrypoint
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert "**/.venv" in ignore
    for keep in ("infra", "mixtrain_trainer", "orchestrate", "pyproject.toml", "sweeps"):
        assert keep not in ignore


# ---------------------------------------------------------------- docker compose


def test_compose_mlflow_postgres():
    compose = load_one(INFRA / "docker-compose.yml")
    services = compose["services"]
    assert {"mlflow", "postgres"} <= set(services)
    pg, mlf = services["postgres"], services["mlflow"]
    assert str(pg["image"]).startswith("postgres:")
    assert any(":/var/lib/postgresql" in v for v in pg["volumes"]), "postgres data must be on a volume"
    vol_names = {v.split(":")[0] for v in pg["volumes"]}
    assert vol_names <= set(compose.get("volumes") or {}), "named volumes must be declared"
    assert "POSTGRES_PASSWORD" in pg["environment"]

    deps = mlf["depends_on"]
    assert "postgres" in (deps if isinstance(deps, list) else list(deps))
    if isinstance(deps, dict) and deps["postgres"].get("condition") == "service_healthy":
        assert "healthcheck" in pg
    cmd = mlf["command"]
    cmd_s = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
    entry = mlf.get("entrypoint")
    entry_s = " ".join(entry) if isinstance(entry, list) else str(entry or "")
    assert "mlflow" in entry_s + " " + cmd_s and "server" in cmd_s
    m = re.search(r"--backend-store-uri[ =](\S+)", cmd_s)
    assert m and m.group(1).startswith("postgresql"), "backend store must be PostgreSQL"
    assert "@postgres:5432/" in m.group(1), "must reach the postgres service by name"
    assert "--host 0.0.0.0" in cmd_s
    assert any(str(p).endswith("5000:5000") or str(p) == "5000" for p in mlf["ports"])
    assert "build" in mlf or "image" in mlf
    if "build" in mlf:
        ctx = (INFRA / mlf["build"]["context"]).resolve()
        assert (ctx / mlf["build"]["dockerfile"]).is_file()


# ---------------------------------------------------------------- Ray cluster launcher


def test_ray_cluster_launcher_structure():
    cfg = load_one(INFRA / "ray-cluster.yaml")
    assert cfg["cluster_name"]
    assert cfg["provider"]["type"] == "aws"
    assert cfg["provider"]["region"]
    assert isinstance(cfg["max_workers"], int) and cfg["max_workers"] > 0
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, nt in types.items():
        assert "resources" in nt and "node_config" in nt, name
        assert nt["node_config"].get("InstanceType"), name
    gpu_workers = [
        n for n, nt in types.items() if n != cfg["head_node_type"] and nt["resources"].get("GPU", 0) > 0
    ]
    assert gpu_workers, "need a GPU worker node type"
    for n in gpu_workers:
        assert types[n].get("max_workers", 0) > 0
        assert types[n]["max_workers"] <= cfg["max_workers"]
    assert cfg["docker"]["image"]
    assert cfg["docker"]["container_name"]
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in cfg["worker_start_ray_commands"])
    assert "-e RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert any(".ray/auth_token" in k for k in cfg["file_mounts"])


def test_ray_cluster_launcher_validates_against_ray():
    """Ray's own schema + default filling (no cloud calls)."""
    ray = pytest.importorskip("ray")
    jsonschema = pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load_one(INFRA / "ray-cluster.yaml")
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(cfg, json.loads(schema_path.read_text()))
    validate_config(prepare_config(cfg))


# ---------------------------------------------------------------- KubeRay


def _check_ray_cluster_spec(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    head_c = head["template"]["spec"]["containers"]
    assert head_c[0]["image"], where
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(spec["rayVersion"])), where
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth"
    workers = spec["workerGroupSpecs"]
    assert workers, where
    gpu_groups = 0
    for g in workers:
        assert g["groupName"], where
        assert isinstance(g["rayStartParams"], dict), where
        assert g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 10**9), where
        cont = g["template"]["spec"]["containers"]
        assert cont[0]["image"], where
        limits = cont[0].get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0)) > 0:
            gpu_groups += 1
            requests = cont[0]["resources"].get("requests", {})
            # Kubernetes requires GPU requests == limits when both are given
            if "nvidia.com/gpu" in requests:
                assert str(requests["nvidia.com/gpu"]) == str(limits["nvidia.com/gpu"]), where
        # every volumeMount refers to a declared volume
        vols = {v["name"] for v in g["template"]["spec"].get("volumes", [])}
        for c in cont:
            for vm in c.get("volumeMounts", []):
                assert vm["name"] in vols, f"{where}: volume {vm['name']} undeclared"
    assert gpu_groups, f"{where}: need a worker group with nvidia.com/gpu limits"
    head_vols = {v["name"] for v in head["template"]["spec"].get("volumes", [])}
    for c in head_c:
        for vm in c.get("volumeMounts", []):
            assert vm["name"] in head_vols, f"{where}: volume {vm['name']} undeclared"


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_kuberay_raycluster():
    doc = load_one(INFRA / "kuberay" / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    _check_ray_cluster_spec(doc["spec"], "RayCluster")
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "MLFLOW_TRACKING_URI" in _env(head)


def test_kuberay_rayjob():
    doc = load_one(INFRA / "kuberay" / "rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert "mixtrain sweep run" in spec["entrypoint"]
    assert "--address auto" in spec["entrypoint"]
    _check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec")
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "")) or {}
    assert "MLFLOW_TRACKING_URI" in _env(head) or "MLFLOW_TRACKING_URI" in runtime_env.get("env_vars", {})
    assert spec.get("shutdownAfterJobFinishes") is True


def test_rayjob_sweep_file_exists_in_repo():
    """The entrypoint names a sweep under the image's /opt/mixtrain (= the repo root)."""
    entry = load_one(INFRA / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"]
    m = re.search(r"(?:/opt/mixtrain/)?(sweeps/\S+\.ya?ml)", entry)
    assert m, entry
    if not (REPO_ROOT / "sweeps").is_dir():
        pytest.skip("sweeps/ not written yet")
    if not (REPO_ROOT / m.group(1)).is_file():
        pytest.skip(f"{m.group(1)} not written yet")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_mlflow_refuses_an_exposed_host_without_auth(host: str, tmp_path: Path):
    """A non-loopback host exposes every run, read and write: refused unless --auth or --insecure."""
    proc = subprocess.run(["bash", str(INFRA / "mlflow-server.sh"), "up", "--host", host, "--data",
                           str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--auth" in proc.stderr and "--insecure" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_mlflow_script_auth_contract():
    text = (INFRA / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in text
    assert "MLFLOW_AUTH_CONFIG_PATH" in text and "MLFLOW_FLASK_SERVER_SECRET_KEY" in text
    assert "umask 077" in text and "chmod 600" in text
