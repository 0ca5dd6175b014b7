#!/usr/bin/env bash
# Multi-node Ray cluster on ONE machine: a head raylet plus N worker raylets, each
# started with its own `ray start` and its own --num-cpus, so Ray Tune sees several
# node ids exactly as on a real cluster (placement, node failure, resume...).
#
#   infra/local-cluster.sh up     [--workers N] [--cpus-per-node C] [--head-cpus C]
#                                 [--gpus-per-worker G] [--port P] [--object-store-mb M]
#                                 [--timeout S]
#   infra/local-cluster.sh status [--timeout S]
#   infra/local-cluster.sh down   [--force] [--all]
#
# `up` prints the address to use (127.0.0.1:PORT) on stdout -- and nothing else on
# stdout -- and writes it to $MIXTRAIN_CLUSTER_STATE/address. $MIXTRAIN_CLUSTER_STATE/env
# can be sourced by drivers (RAY_ADDRESS, RAY_AUTH_MODE=token).
#
# Environment:
#   MIXTRAIN_CLUSTER_STATE  state dir (default /tmp/mixtrain-cluster): address, env,
#                           logs/, ray/ (the Ray --temp-dir shared by all nodes). Keep it
#                           short: Ray puts unix sockets below it (108-byte limit).
#   RAY_BIN                 the `ray` executable (default: `ray` on PATH, else the
#                           repository's .venv/bin/ray).
#   RAY_PYTHON              python that can `import ray` (default: the interpreter of
#                           RAY_BIN's shebang).
#
# Ray quirks handled here (Ray 2.60):
#   * Token authentication: with RAY_AUTH_MODE=token, `ray start --head` refuses to start
#     unless a token already exists, so `up` runs `ray get-auth-token --generate` (which
#     writes ~/.ray/auth_token once; RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH are honoured).
#     Joining nodes AND drivers must run with RAY_AUTH_MODE=token, otherwise
#     ray.init(address=...) fails with "Failed to connect to Ray cluster".
#   * --node-ip-address=127.0.0.1 is passed, but Ray rewrites loopback to the host's
#     routable IP for the node address, and gcs_server/raylet listen on all interfaces;
#     the token is what keeps other hosts out.
#   * Several raylets on one host: worker ports are left to the OS
#     (--min-worker-port=0 --max-worker-port=0), the dashboard-agent HTTP port is
#     distinct per node, and the other per-node ports are random by default.
#     Non-head nodes inherit the head's --temp-dir.
#   * GPUs are NOT auto-detected (each raylet would claim all of them): pass
#     --gpus-per-worker.
#   * `down` does not use `ray stop` (that kills every Ray process on the host, including
#     other people's clusters); it signals only the processes that run below this
#     cluster's temp dir, plus their children. `down --all` runs `ray stop --force`.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
STATE_DIR="${MIXTRAIN_CLUSTER_STATE:-/tmp/mixtrain-cluster}"
RAY_TEMP="$STATE_DIR/ray"
LOG_DIR="$STATE_DIR/logs"

usage() {
    cat >&2 <<'EOF'
usage: local-cluster.sh up|down|status [options]

  up      start a Ray head + N worker nodes on 127.0.0.1; prints the address
            --workers N           worker nodes besides the head (default 1)
            --cpus-per-node C     CPUs of each worker node (default 1)
            --head-cpus C         CPUs of the head node (default: --cpus-per-node)
            --gpus-per-worker G   GPUs of each worker node (default 0)
            --port P              GCS port of the head (default 6379)
            --object-store-mb M   object store per node in MiB (default 1024)
            --timeout S           seconds to wait for all nodes (default 120)
  status  print the address and the nodes; exit 1 when no cluster is up
  down    stop this cluster's processes (state dir: $MIXTRAIN_CLUSTER_STATE)
            --force               SIGKILL at once instead of SIGTERM first
            --all                 also `ray stop --force` (EVERY Ray process on the host)
EOF
}

die() { echo "local-cluster: error: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

find_ray() {
    if [[ -n "${RAY_BIN:-}" ]]; then
        [[ -x "$RAY_BIN" ]] || die "RAY_BIN=$RAY_BIN is not executable"
    elif command -v ray >/dev/null 2>&1; then
        RAY_BIN="$(command -v ray)"
    elif [[ -x "$REPO_ROOT/.venv/bin/ray" ]]; then
        RAY_BIN="$REPO_ROOT/.venv/bin/ray"
    else
        die "no 'ray' executable: install ray[tune] (pip install .) or set RAY_BIN"
    fi
    if [[ -z "${RAY_PYTHON:-}" ]]; then
        local shebang
        shebang="$(head -n1 "$RAY_BIN" 2>/dev/null | head -c 256 | tr -d '\r\0' || true)"
        if [[ "$shebang" == '#!'*python* && -x "${shebang#\#!}" ]]; then
            RAY_PYTHON="${shebang#\#!}"
        elif [[ -x "$(dirname "$RAY_BIN")/python" ]]; then
            RAY_PYTHON="$(dirname "$RAY_BIN")/python"
        else
            RAY_PYTHON="python3"
        fi
    fi
}

# PIDs of the processes of this cluster: everything whose command line names our temp
# dir (gcs_server, raylets, monitor, log monitors, ...) and, recursively, their children
# (dashboard/runtime-env agents and workers rename themselves to ray::...).
cluster_pids() {
    local -A seen=()
    local -a queue
    local p c
    mapfile -t queue < <(pgrep -f -- "$RAY_TEMP/" || true)
    while ((${#queue[@]})); do
        p="${queue[0]}"
        queue=("${queue[@]:1}")
        [[ -z "$p" || -n "${seen[$p]:-}" || "$p" == "$$" ]] && continue
        seen[$p]=1
        for c in $(pgrep -P "$p" || true); do queue+=("$c"); done
    done
    echo "${!seen[@]}"
}

# Running and not a zombie (PID 1 of some sandboxes reaps slowly).
is_alive() {
    [[ -r "/proc/$1/status" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Free TCP ports on 127.0.0.1 (as many as asked for), one per line.
free_ports() {
    "$RAY_PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# Connects as a driver and waits until EXPECTED nodes are alive (0: just report).
# Prints one line per node on stderr; exit 0 when satisfied, 1 otherwise.
wait_nodes() {
    local address="$1" expected="$2" timeout="$3"
    RAY_AUTH_MODE=token "$RAY_PYTHON" - "$address" "$expected" "$timeout" <<'EOF'
import sys, time, logging
address, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
import ray
try:
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
except Exception as exc:  # noqa: BLE001
    print(f"cannot connect to Ray at {address}: {exc}", file=sys.stderr)
    sys.exit(1)
deadline = time.monotonic() + timeout
while True:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) >= expected or time.monotonic() >= deadline:
        break
    time.sleep(1.0)
for n in sorted(nodes, key=lambda n: n.get("NodeName", "")):
    res = {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU") or k.startswith("mixtrain")}
    print(f"  node {n['NodeID'][:12]} {n.get('NodeName', '?'):<20} alive {res}", file=sys.stderr)
ok = len(nodes) >= expected if expected else bool(nodes)
if not ok:
    print(f"only {len(nodes)} of {expected} Ray nodes alive after {timeout:.0f}s", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
}

show_logs() {
    local f
    for f in "$LOG_DIR"/*.log; do
        [[ -f "$f" ]] || continue
        echo "----- $f (last 25 lines) -----" >&2
        tail -n 25 "$f" >&2
    done
    if [[ -d "$RAY_TEMP/session_latest/logs" ]]; then
        echo "----- Ray logs: $RAY_TEMP/session_latest/logs (raylet*.out, gcs_server.out) -----" >&2
        tail -n 10 "$RAY_TEMP"/session_latest/logs/raylet*.out "$RAY_TEMP"/session_latest/logs/gcs_server.out 2>/dev/null >&2 || true
    fi
}

# SIGTERM, wait up to $2 quarter-seconds for the given PIDs to exit; echo the survivors.
term_and_wait() {
    local pids="$1" tries="$2" i p
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < tries; i++)); do
        pids="$(for p in $pids; do is_alive "$p" && echo "$p"; done || true)"
        [[ -z "$pids" ]] && break
        sleep 0.25
    done
    echo "$pids"
}

stop_cluster() {
    local force="$1" pids raylets
    pids="$(cluster_pids)"
    if [[ -z "$pids" ]]; then
        log "no Ray processes under $RAY_TEMP"
    else
        log "stopping $(echo "$pids" | wc -w) Ray processes under $RAY_TEMP"
        if [[ "$force" != 1 ]]; then
            # Raylets first: they stop their agents and workers and exit within ~1 s.
            # (SIGTERM to everything at once leaves raylets hanging on the dead GCS.)
            raylets="$(pgrep -f -- "raylet/raylet .*$RAY_TEMP/" || true)"
            [[ -n "$raylets" ]] && term_and_wait "$raylets" 20 >/dev/null
            # Then GCS, log monitors, dashboard head; autoscaler monitor.py ignores it.
            pids="$(cluster_pids)"
            [[ -n "$pids" ]] && term_and_wait "$pids" 8 >/dev/null
        fi
        # Whatever is left gets SIGKILL.
        pids="$(cluster_pids)"
        if [[ -n "$pids" ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
    fi
    rm -f "$STATE_DIR/address" "$STATE_DIR/env"
}

cmd_up() {
    local workers=1 cpus=1 head_cpus="" gpus=0 port=6379 store_mb=1024 timeout=120
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --workers) workers="${2:?}"; shift 2 ;;
            --cpus-per-node) cpus="${2:?}"; shift 2 ;;
            --head-cpus) head_cpus="${2:?}"; shift 2 ;;
            --gpus-per-worker) gpus="${2:?}"; shift 2 ;;
            --port) port="${2:?}"; shift 2 ;;
            --object-store-mb) store_mb="${2:?}"; shift 2 ;;
            --timeout) timeout="${2:?}"; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) usage; die "unknown option for up: $1" ;;
        esac
    done
    head_cpus="${head_cpus:-$cpus}"
    local n
    for n in "$workers" "$cpus" "$head_cpus" "$gpus" "$port" "$store_mb" "$timeout"; do
        [[ "$n" =~ ^[0-9]+$ ]] || die "expected a non-negative integer, got '$n'"
    done
    # unix socket paths: $RAY_TEMP/session_<date>_<pid>/sockets/plasma_store < 108 bytes
    [[ ${#RAY_TEMP} -le 44 ]] || die "state dir too long for Ray's unix sockets: $RAY_TEMP (set MIXTRAIN_CLUSTER_STATE to a short path, e.g. /tmp/mxc)"

    find_ray
    if [[ -n "$(cluster_pids)" ]]; then
        die "a cluster is already running under $STATE_DIR (address: $(cat "$STATE_DIR/address" 2>/dev/null || echo '?')); run '$0 down' first or set MIXTRAIN_CLUSTER_STATE"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is already in use (another Ray head?); choose --port"
    fi
    rm -rf "$RAY_TEMP" "$LOG_DIR"
    mkdir -p "$RAY_TEMP" "$LOG_DIR"
    rm -f "$STATE_DIR/address" "$STATE_DIR/env"

    export RAY_AUTH_MODE=token
    export RAY_USAGE_STATS_ENABLED=0
    if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        # Creates ~/.ray/auth_token if missing; prints the token, so keep it off stdout.
        "$RAY_BIN" get-auth-token --generate >/dev/null 2>"$LOG_DIR/auth-token.log" \
            || { cat "$LOG_DIR/auth-token.log" >&2; die "could not create a Ray auth token"; }
    fi

    local address="127.0.0.1:$port" start_s=$SECONDS
    local store_bytes=$((store_mb * 1024 * 1024))
    local -a ports
    mapfile -t ports < <(free_ports $((workers + 2)))

    log "starting head ($head_cpus CPU) at $address, temp dir $RAY_TEMP"
    if ! "$RAY_BIN" start --head \
        --node-ip-address=127.0.0.1 --port="$port" \
        --node-name=mixtrain-head \
        --num-cpus="$head_cpus" --num-gpus=0 \
        --object-store-memory="$store_bytes" \
        --include-dashboard=false --dashboard-port="${ports[0]}" \
        --dashboard-agent-listen-port="${ports[1]}" \
        --min-worker-port=0 --max-worker-port=0 \
        --temp-dir="$RAY_TEMP" \
        --labels="mixtrain/role=head" \
        --disable-usage-stats \
        >"$LOG_DIR/head.log" 2>&1; then
        show_logs
        stop_cluster 1 >/dev/null 2>&1 || true
        die "ray start --head failed (port $port busy? see $LOG_DIR/head.log)"
    fi

    local i
    for ((i = 1; i <= workers; i++)); do
        log "starting worker node $i ($cpus CPU, $gpus GPU)"
        if ! "$RAY_BIN" start --address="$address" \
            --node-ip-address=127.0.0.1 \
            --node-name="mixtrain-worker-$i" \
            --num-cpus="$cpus" --num-gpus="$gpus" \
            --object-store-memory="$store_bytes" \
            --resources="{\"mixtrain_worker\": 1}" \
            --labels="mixtrain/role=worker" \
            --dashboard-agent-listen-port="${ports[$((i + 1))]}" \
            --min-worker-port=0 --max-worker-port=0 \
            --disable-usage-stats \
            >"$LOG_DIR/worker-$i.log" 2>&1; then
            show_logs
            stop_cluster 1 >/dev/null 2>&1 || true
            die "ray start for worker node $i failed (see $LOG_DIR/worker-$i.log)"
        fi
    done

    log "waiting for $((workers + 1)) nodes to be alive (timeout ${timeout}s)"
    if ! wait_nodes "$address" $((workers + 1)) "$timeout"; then
        show_logs
        stop_cluster 1 >/dev/null 2>&1 || true
        die "the cluster did not come up with $((workers + 1)) alive nodes; stopped it"
    fi

    echo "$address" >"$STATE_DIR/address"
    cat >"$STATE_DIR/env" <<EOF
export RAY_ADDRESS=$address
export RAY_AUTH_MODE=token
EOF
    log "up in $((SECONDS - start_s))s: $((workers + 1)) nodes. Drivers need RAY_AUTH_MODE=token:"
    log "  source $STATE_DIR/env && mixtrain sweep run sweeps/quickstart.yaml --address $address"
    echo "$address"
}

cmd_status() {
    local timeout=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --timeout) timeout="${2:?}"; shift 2 ;;
            *) usage; die "unknown option for status: $1" ;;
        esac
    done
    find_ray
    if [[ -z "$(cluster_pids)" || ! -f "$STATE_DIR/address" ]]; then
        echo "no cluster running under $STATE_DIR" >&2
        exit 1
    fi
    local address
    address="$(cat "$STATE_DIR/address")"
    echo "address: $address"
    wait_nodes "$address" 0 "$timeout"
}

cmd_down() {
    local force=0 all=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --force) force=1; shift ;;
            --all) all=1; shift ;;
            *) usage; die "unknown option for down: $1" ;;
        esac
    done
    stop_cluster "$force"
    if [[ "$all" == 1 ]]; then
        find_ray
        "$RAY_BIN" stop --force >&2 || true
    fi
    log "down"
}

sub="${1:-}"
[[ $# -gt 0 ]] && shift
case "$sub" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help|help) usage; exit 0 ;;
    *)
        usage
        echo "local-cluster: unknown subcommand '${sub}'" >&2
        exit 2
        ;;
esac
