#!/usr/bin/env bash
# MLflow tracking server backed by a private PostgreSQL instance, on 127.0.0.1.
#
#   infra/mlflow-server.sh up     [--port P] [--data DIR] [--pg-port Q] [--host H] [--timeout S]
#                                 [--auth [--users FILE] [--default-permission P]] [--insecure]
#   infra/mlflow-server.sh status [--data DIR]
#   infra/mlflow-server.sh down   [--data DIR] [--purge]
#
# `up` prints the tracking URI (http://127.0.0.1:P) on stdout -- and nothing else on
# stdout -- and writes it to DIR/uri. Use it as MLFLOW_TRACKING_URI (or tracking.uri in a
# sweep file). Data persist in DIR across down/up; `down --purge` deletes DIR.
#
# Layout of DIR (default ${MIXTRAIN_MLFLOW_STATE:-/tmp/mixtrain-mlflow}):
#   pg/          PostgreSQL data directory (initdb, owned by the PostgreSQL OS user)
#   artifacts/   artifact store, served by the tracking server (--serve-artifacts)
#   pgpass       libpq password file (0600) for the generated password of role `mlflow`
#   logs/        postgres.log, mlflow.log
#   uri, mlflow.pid, pg.port
#
# Environment:
#   MLFLOW_BIN       the `mlflow` executable (default: on PATH, else the repo's .venv)
#   PG_BIN           directory with initdb/pg_ctl/createdb/psql (default: on PATH, else
#                    the newest /usr/lib/postgresql/*/bin). Debian: apt-get install -y postgresql
#   MIXTRAIN_PG_USER OS user that runs PostgreSQL when this script runs as root
#                    (PostgreSQL refuses to run as root; default: postgres)
#
# Notes:
#   * The database is reached over TCP on 127.0.0.1 only (unix sockets are disabled, so
#     no socket-path length limits); role `mlflow` authenticates with scram-sha-256 and a
#     random password kept in DIR/pgpass, handed to MLflow via PGPASSFILE (it never
#     appears on a command line).
#   * MLflow's job runner (GenAI jobs, ~7 extra processes) is disabled by default:
#     MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false unless you set it.
#   * MLflow 3 runs uvicorn; --workers 1 keeps it to one worker process. Its security
#     middleware allows localhost and private IPs by default; pass --host 0.0.0.0 and set
#     MLFLOW_SERVER_ALLOWED_HOSTS / --allowed-hosts yourself to expose it further.
#   * A host other than loopback exposes every run to the network, read and write: `up` refuses
#     it unless --auth (MLflow's own basic-auth app) or --insecure (a network you trust) is given.
#   * --auth: users and passwords come from FILE (default DIR/users; created with `admin` and a
#     random password when missing), one `user:password` per line, the first line the admin; the
#     file must be mode 0600. Users are kept in the database `mlflow_auth` of the same PostgreSQL;
#     users added to FILE are created at the next `up`, changed passwords are updated (the admin's
#     only through MLflow's update-password API). Clients (mixtrain, the MLflow client) read
#     MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from the environment. Permission on
#     experiments a user did not create: --default-permission (READ, EDIT, MANAGE, NO_PERMISSIONS;
#     default READ). Needs MLflow's auth extra (`pip install '.[auth]'`: Flask-WTF).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"

usage() {
    cat >&2 <<'EOF'
usage: mlflow-server.sh up|down|status [options]

  up      start PostgreSQL + an MLflow tracking server; prints the tracking URI
            --port P       MLflow port (default 5000)
            --data DIR     state dir (default $MIXTRAIN_MLFLOW_STATE or /tmp/mixtrain-mlflow)
            --pg-port Q    PostgreSQL port (default: a free port)
            --host H       interface MLflow binds to (default 127.0.0.1)
            --timeout S    seconds to wait for /health (default 120)
            --auth         MLflow's basic-auth app; users from --users FILE (user:password lines,
                           first = admin, mode 0600; default DIR/users, made if missing)
            --default-permission P   READ (default), EDIT, MANAGE or NO_PERMISSIONS
            --insecure     allow a non-loopback --host without --auth
  status  print the URI and check /health; exit 1 when not running
  down    stop MLflow and PostgreSQL
            --data DIR     as above
            --purge        also delete DIR
EOF
}

die() { echo "mlflow-server: error: $*" >&2; exit 1; }
log() { echo "mlflow-server: $*" >&2; }

DATA="${MIXTRAIN_MLFLOW_STATE:-/tmp/mixtrain-mlflow}"

find_tools() {
    if [[ -n "${MLFLOW_BIN:-}" ]]; then
        [[ -x "$MLFLOW_BIN" ]] || die "MLFLOW_BIN=$MLFLOW_BIN is not executable"
    elif command -v mlflow >/dev/null 2>&1; then
        MLFLOW_BIN="$(command -v mlflow)"
    elif [[ -x "$REPO_ROOT/.venv/bin/mlflow" ]]; then
        MLFLOW_BIN="$REPO_ROOT/.venv/bin/mlflow"
    else
        die "no 'mlflow' executable: pip install '.[postgres]' or set MLFLOW_BIN"
    fi
    if [[ -z "${PG_BIN:-}" ]]; then
        if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
            PG_BIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        else
            PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n1 || true)"
        fi
    fi
    [[ -n "$PG_BIN" && -x "$PG_BIN/pg_ctl" && -x "$PG_BIN/initdb" ]] \
        || die "PostgreSQL server binaries not found (initdb, pg_ctl). On Debian/Ubuntu: apt-get install -y postgresql; or set PG_BIN"
    local c
    for c in createdb psql; do
        [[ -x "$PG_BIN/$c" ]] || die "$PG_BIN/$c missing"
    done
}

# Run a command as the PostgreSQL OS user (PostgreSQL will not run as root).
PG_USER=""
as_pg() {
    if [[ -n "$PG_USER" ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

setup_pg_user() {
    if [[ "$(id -u)" == 0 ]]; then
        PG_USER="${MIXTRAIN_PG_USER:-postgres}"
        id "$PG_USER" >/dev/null 2>&1 \
            || die "running as root but OS user '$PG_USER' does not exist (apt-get install postgresql creates 'postgres'; or set MIXTRAIN_PG_USER)"
    fi
}

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

is_alive() {
    [[ -r "/proc/$1/status" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

pg_running() {
    [[ -f "$DATA/pg/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" status >/dev/null 2>&1
}

mlflow_pid() {
    local pid
    pid="$(cat "$DATA/mlflow.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && is_alive "$pid"; then echo "$pid"; fi
}

show_logs() {
    local f
    for f in "$DATA/logs/postgres.log" "$DATA/logs/mlflow.log"; do
        [[ -f "$f" ]] || continue
        echo "----- $f (last 30 lines) -----" >&2
        tail -n 30 "$f" >&2
    done
}

stop_all() {
    local pid i
    pid="$(mlflow_pid)"
    if [[ -n "$pid" ]]; then
        # mlflow was started with setsid: its PID is the process-group id of the
        # server and its uvicorn worker(s).
        log "stopping MLflow (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            is_alive "$pid" || break
            sleep 0.25
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$DATA/mlflow.pid" "$DATA/uri"
    if [[ -d "$DATA/pg" ]] && pg_running; then
        log "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -m fast -w -t 30 stop >/dev/null \
            || as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -m immediate -w stop >/dev/null || true
    fi
}

loopback() {
    case "$1" in
        127.*|localhost|::1) return 0 ;;
        *) return 1 ;;
    esac
}

# Create the users of the users file (all but the admin, whom MLflow creates itself) or update
# their passwords; passwords are read from the file, never put on a command line.
sync_users() {
    python3 - "$1" "$2" <<'PY'
import base64, json, sys, urllib.error, urllib.request
users_file, uri = sys.argv[1], sys.argv[2]
lines = [ln.strip() for ln in open(users_file) if ln.strip() and not ln.lstrip().startswith("#")]
pairs = [ln.split(":", 1) for ln in lines]
admin = base64.b64encode(f"{pairs[0][0]}:{pairs[0][1]}".encode()).decode()
def call(path, method, body):
    req = urllib.request.Request(f"{uri}/api/2.0/mlflow/users/{path}", data=json.dumps(body).encode(),
                                 method=method, headers={"Authorization": f"Basic {admin}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30):
            return None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")[:300]
for user, password in pairs[1:]:
    failed = call("create", "POST", {"username": user, "password": password})
    if failed and "exists" in failed[1].lower():
        failed = call("update-password", "PATCH", {"username": user, "password": password})
    if failed:
        sys.exit(f"user {user}: HTTP {failed[0]}: {failed[1]}")
print(len(pairs) - 1)
PY
}

cmd_up() {
    local port=5000 pg_port="" host=127.0.0.1 timeout=120 auth=0 insecure=0 users="" permission=READ
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --auth) auth=1; shift ;;
            --insecure) insecure=1; shift ;;
            --users) users="${2:?}"; shift 2 ;;
            --default-permission) permission="${2:?}"; shift 2 ;;
            --port) port="${2:?}"; shift 2 ;;
            --data) DATA="${2:?}"; shift 2 ;;
            --pg-port) pg_port="${2:?}"; shift 2 ;;
            --host) host="${2:?}"; shift 2 ;;
            --timeout) timeout="${2:?}"; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) usage; die "unknown option for up: $1" ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ && "$timeout" =~ ^[0-9]+$ ]] || die "--port/--timeout need integers"
    if ! loopback "$host" && [[ "$auth" == 0 && "$insecure" == 0 ]]; then
        echo "mlflow-server: error: --host $host exposes every run to the network, read and write; add --auth (MLflow's basic-auth app, users in a 0600 file) or, on a network you trust, --insecure" >&2
        exit 2
    fi
    case "$permission" in
        READ|EDIT|MANAGE|NO_PERMISSIONS) ;;
        *) echo "mlflow-server: error: --default-permission $permission: choose READ, EDIT, MANAGE or NO_PERMISSIONS" >&2
           exit 2 ;;
    esac
    find_tools
    setup_pg_user
    mkdir -p "$DATA"
    DATA="$(cd "$DATA" && pwd)"

    if [[ -n "$(mlflow_pid)" ]]; then
        die "already running: $(cat "$DATA/uri" 2>/dev/null || echo '?') (data $DATA); run '$0 down --data $DATA' first"
    fi
    port_busy "$port" && die "port $port on 127.0.0.1 is already in use (choose --port)"

    local start_s=$SECONDS
    mkdir -p "$DATA/logs" "$DATA/artifacts"
    if [[ -n "$PG_USER" ]]; then
        chmod 755 "$DATA"
        chown "$PG_USER" "$DATA/logs"
        as_pg test -w "$DATA/logs" \
            || die "OS user $PG_USER cannot write to $DATA/logs: every parent directory of $DATA must be searchable by it (chmod o+x), e.g. use a data dir under /tmp"
    fi

    # --- PostgreSQL ----------------------------------------------------------------
    if [[ ! -f "$DATA/pg/PG_VERSION" ]]; then
        log "initdb $DATA/pg"
        rm -rf "$DATA/pg"
        mkdir -p "$DATA/pg"
        local pw pwfile="$DATA/pg-init-pw"
        pw="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
        (umask 077; printf '%s\n' "$pw" >"$pwfile")
        (umask 077; printf '127.0.0.1:*:*:mlflow:%s\n' "$pw" >"$DATA/pgpass")
        if [[ -n "$PG_USER" ]]; then chown "$PG_USER" "$DATA/pg" "$pwfile"; fi
        chmod 700 "$DATA/pg"
        if ! as_pg "$PG_BIN/initdb" -D "$DATA/pg" -U mlflow --pwfile="$pwfile" \
            --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            >"$DATA/logs/initdb.log" 2>&1; then
            rm -f "$pwfile"
            cat "$DATA/logs/initdb.log" >&2
            die "initdb failed"
        fi
        rm -f "$pwfile"
    fi
    [[ -f "$DATA/pgpass" ]] || die "$DATA/pgpass missing (data dir from elsewhere?); run 'down --purge' and up again"
    export PGPASSFILE="$DATA/pgpass"

    if ! pg_running; then
        pg_port="${pg_port:-$(free_port)}"
        log "starting PostgreSQL on 127.0.0.1:$pg_port"
        # unix_socket_directories='' : TCP only; small footprint for a dev box.
        if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -l "$DATA/logs/postgres.log" -w -t 60 \
            -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c shared_buffers=32MB -c max_connections=60" \
            start >/dev/null; then
            show_logs
            die "PostgreSQL did not start"
        fi
        echo "$pg_port" >"$DATA/pg.port"
    else
        pg_port="$(cat "$DATA/pg.port")"
        log "PostgreSQL already running on 127.0.0.1:$pg_port"
    fi

    if [[ "$("$PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U mlflow -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" 2>"$DATA/logs/psql.log")" != 1 ]]; then
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U mlflow mlflow 2>>"$DATA/logs/psql.log" \
            || { cat "$DATA/logs/psql.log" >&2; stop_all; die "could not create database mlflow"; }
    fi

    # --- basic auth (optional) -----------------------------------------------------
    local app_args=() admin_user="" admin_pw=""
    if [[ "$auth" == 1 ]]; then
        users="${users:-$DATA/users}"
        if [[ ! -e "$users" ]]; then
            (umask 077; printf 'admin:%s\n' "$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)" >"$users")
            log "created $users (user admin, a random password); add a user:password line per user"
        fi
        local mode first
        mode="$(stat -c %a "$users")"
        [[ "$mode" =~ ^[4-7]00$ ]] || { stop_all; die "$users has mode $mode: others can read the passwords; chmod 600 $users"; }
        first="$(grep -v '^[[:space:]]*#' "$users" | grep -m1 ':' || true)"
        admin_user="${first%%:*}"
        admin_pw="${first#*:}"
        [[ -n "$admin_user" && -n "$admin_pw" ]] || { stop_all; die "$users: the first line must be admin_user:password"; }
        while IFS= read -r line; do
            [[ -z "${line// /}" || "$line" == \#* ]] && continue
            local pw="${line#*:}"
            [[ "$line" == *:* && ${#pw} -ge 12 ]] \
                || { stop_all; die "$users: user ${line%%:*}: MLflow wants user:password with a password of 12 or more characters"; }
        done <"$users"
        "$(dirname "$MLFLOW_BIN")/python" -c 'import flask_wtf' 2>/dev/null \
            || { stop_all; die "--auth needs MLflow's auth extra next to $MLFLOW_BIN: pip install 'mlflow[auth]' (Flask-WTF)"; }
        if [[ "$("$PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U mlflow -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'mlflow_auth'" 2>>"$DATA/logs/psql.log")" != 1 ]]; then
            "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U mlflow mlflow_auth 2>>"$DATA/logs/psql.log" \
                || { cat "$DATA/logs/psql.log" >&2; stop_all; die "could not create database mlflow_auth"; }
        fi
        [[ -s "$DATA/flask-secret" ]] \
            || (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40 >"$DATA/flask-secret")
        (
            umask 077
            printf '[mlflow]\ndefault_permission = %s\ndatabase_uri = %s\nadmin_username = %s\nauthorization_function = %s\n' \
                "$permission" "postgresql+psycopg://mlflow@127.0.0.1:$pg_port/mlflow_auth" "$admin_user" \
                "mlflow.server.auth:authenticate_request_basic_auth" >"$DATA/basic_auth.ini"
        )
        app_args=(--app-name basic-auth)
        log "basic auth on: users from $users (admin: $admin_user), default permission $permission"
    fi

    # --- MLflow --------------------------------------------------------------------
    local uri="http://127.0.0.1:$port"
    [[ "$host" == 127.0.0.1 || "$host" == 0.0.0.0 ]] || uri="http://$host:$port"
    log "starting MLflow server on $uri (first start creates the schema: ~10-30 s)"
    # MLflow >= 3.5 also spawns a job runner with ~7 huey consumer processes (GenAI
    # jobs; >1 GB RSS). Off unless the caller sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION.
    # The auth app's settings reach only the server's environment (no password on a command line).
    # (set only with --auth: MLflow reads MLFLOW_AUTH_CONFIG_PATH in other code paths too)
    local auth_env=()
    if [[ "$auth" == 1 ]]; then
        auth_env=(MLFLOW_AUTH_CONFIG_PATH="$DATA/basic_auth.ini" MLFLOW_AUTH_ADMIN_PASSWORD="$admin_pw"
                  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$DATA/flask-secret")")
    fi
    env "${auth_env[@]}" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    setsid "$MLFLOW_BIN" server \
        --backend-store-uri "postgresql+psycopg://mlflow@127.0.0.1:$pg_port/mlflow" \
        --artifacts-destination "$DATA/artifacts" --serve-artifacts \
        --host "$host" --port "$port" --workers 1 "${app_args[@]}" \
        </dev/null >"$DATA/logs/mlflow.log" 2>&1 &
    echo $! >"$DATA/mlflow.pid"

    local deadline=$((SECONDS + timeout))
    until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
        if [[ -z "$(mlflow_pid)" ]]; then
            show_logs
            stop_all
            die "the MLflow server exited during startup (see $DATA/logs/mlflow.log)"
        fi
        if ((SECONDS >= deadline)); then
            show_logs
            stop_all
            die "MLflow did not answer /health within ${timeout}s"
        fi
        sleep 1
    done
    if [[ "$auth" == 1 ]]; then
        local made
        made="$(sync_users "$users" "http://127.0.0.1:$port")" \
            || { show_logs; stop_all; die "could not create the users of $users"; }
        log "$made user(s) besides the admin created or updated; clients need MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    fi
    echo "$uri" >"$DATA/uri"
    log "up in $((SECONDS - start_s))s (data $DATA). export MLFLOW_TRACKING_URI=$uri"
    echo "$uri"
}

cmd_status() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --data) DATA="${2:?}"; shift 2 ;;
            *) usage; die "unknown option for status: $1" ;;
        esac
    done
    if [[ -z "$(mlflow_pid)" || ! -f "$DATA/uri" ]]; then
        echo "no MLflow server running for $DATA" >&2
        exit 1
    fi
    local uri
    uri="$(cat "$DATA/uri")"
    echo "$uri"
    curl -sf -o /dev/null "$uri/health" || { echo "but $uri/health does not answer" >&2; exit 1; }
}

cmd_down() {
    local purge=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --data) DATA="${2:?}"; shift 2 ;;
            --purge) purge=1; shift ;;
            *) usage; die "unknown option for down: $1" ;;
        esac
    done
    if [[ ! -d "$DATA" ]]; then
        log "nothing at $DATA"
        return 0
    fi
    find_tools
    setup_pg_user
    stop_all
    if [[ "$purge" == 1 ]]; then
        rm -rf "$DATA"
        log "removed $DATA"
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
        echo "mlflow-server: unknown subcommand '${sub}'" >&2
        exit 2
        ;;
esac
