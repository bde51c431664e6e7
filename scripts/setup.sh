#!/usr/bin/env bash
# Bootstrap a Debian 12 machine for Arena, idempotently (run as root):
#   - apt: docker.io, redis-server, mmdebstrap (and make, python3-pip when absent)
#   - pip: the repo, editable, with the test and serve extras
#   - services: dockerd and redis-server (127.0.0.1:6379), started only when not answering
# Services that already answer are left alone; on failure, only what this script started
# is stopped again. Safe to run repeatedly (CI runs it on every build).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

DOCKERD_LOG=/var/log/arena-dockerd.log
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
WAIT_S=30

STARTED_DOCKERD_PID=""
STARTED_REDIS_PIDFILE=""
CREATED_POLICY_RC=""

cleanup() {
    local rc=$?
    if [ -n "$CREATED_POLICY_RC" ]; then
        rm -f "$CREATED_POLICY_RC"
    fi
    if [ "$rc" -ne 0 ]; then
        # stop only what this run started
        if [ -n "$STARTED_DOCKERD_PID" ] && kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null; then
            log "stopping the dockerd this run started (pid $STARTED_DOCKERD_PID)"
            kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
        fi
        if [ -n "$STARTED_REDIS_PIDFILE" ] && [ -s "$STARTED_REDIS_PIDFILE" ]; then
            local rpid
            rpid="$(cat "$STARTED_REDIS_PIDFILE")"
            if kill -0 "$rpid" 2>/dev/null; then
                log "stopping the redis-server this run started (pid $rpid)"
                kill "$rpid" 2>/dev/null || true
            fi
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------ Debian packages

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

MISSING=()
need() {  # need PACKAGE [COMMAND]: missing unless the package or the command is there
    local pkg="$1" cmd="${2:-}"
    if pkg_installed "$pkg"; then return 0; fi
    if [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1; then return 0; fi
    MISSING+=("$pkg")
}

need docker.io dockerd          # docker-ce also provides dockerd: fine
need redis-server redis-server  # pulls redis-tools (redis-cli)
need mmdebstrap mmdebstrap
need make make
need chromium chromium  # headless browser tests (tests/test_browser.py, driven by Playwright)
need busybox-static  # static busybox: tiny algorithm images for the soak/throughput benchmarks
need bubblewrap bwrap  # the jail the worker reads participant outputs in (arena/runner/output_check.py)
command -v python3 >/dev/null 2>&1 || need python3
if ! python3 -m pip --version >/dev/null 2>&1; then need python3-pip; fi

if [ "${#MISSING[@]}" -gt 0 ]; then
    is_root || die "missing packages (${MISSING[*]}); run this script as root to install them"
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${MISSING[*]}) and no apt-get: install them by hand"
    export DEBIAN_FRONTEND=noninteractive
    # No init system here: keep maintainer scripts from starting services (this script
    # starts them itself), so dpkg never ends half-configured on a failed service start.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# arena setup.sh: services are started by hand\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=/usr/sbin/policy-rc.d
    fi
    log "apt-get update"
    apt-get update -qq -o DPkg::Lock::Timeout=120 || die "apt-get update failed (is the Debian mirror reachable?)"
    if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
        log "dpkg has unfinished packages: dpkg --configure -a"
        dpkg --configure -a || true
    fi
    log "apt-get install ${MISSING[*]}"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${MISSING[@]}" \
        >/tmp/arena-apt-install.log 2>&1 || {
        tail -n 30 /tmp/arena-apt-install.log >&2
        die "apt-get install ${MISSING[*]} failed (full log: /tmp/arena-apt-install.log)"
    }
    if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
        dpkg --audit >&2 || true
        die "dpkg left packages unconfigured after installing ${MISSING[*]}"
    fi
    if [ -n "$CREATED_POLICY_RC" ]; then rm -f "$CREATED_POLICY_RC"; CREATED_POLICY_RC=""; fi
else
    log "Debian packages present (docker.io, redis-server, mmdebstrap, make)"
fi

# ------------------------------------------------------------------ Python package

log "pip install -e .[test,serve,gpu]"
# PIP_BREAK_SYSTEM_PACKAGES: Debian's own python3 is "externally managed" (PEP 668)
PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
    python3 -m pip install -q -e '.[test,serve,gpu]' || die "pip install -e '.[test,serve,gpu]' failed"

# ------------------------------------------------------------------ dockerd

dockerd_running() {  # a dockerd exists already (the pid file's process, or any named dockerd)
    if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null; then return 0; fi
    command -v pgrep >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1
}
docker_ok() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS CHECK-COMMAND [PID-THAT-MUST-STAY-ALIVE]
    local limit="$1" check="$2" pid="${3:-}" waited=0
    while ! "$check"; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 2; fi
        if [ "$waited" -ge $((limit * 4)) ]; then return 1; fi
        sleep 0.25
        waited=$((waited + 1))
    done
}

if docker_ok; then
    log "dockerd already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
elif [ -S /var/run/docker.sock ] && dockerd_running; then
    log "dockerd is starting; waiting up to ${WAIT_S}s"
    wait_for "$WAIT_S" docker_ok || die "dockerd is running but does not answer on /var/run/docker.sock after ${WAIT_S}s"
    log "dockerd up"
else
    is_root || die "dockerd is not running and only root can start it: sudo nohup dockerd >$DOCKERD_LOG 2>&1 &"
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found (apt-get install docker.io)"
    log "starting dockerd (log: $DOCKERD_LOG)"
    nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    STARTED_DOCKERD_PID=$!
    rc=0
    wait_for "$WAIT_S" docker_ok "$STARTED_DOCKERD_PID" || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        if [ "$rc" -eq 2 ]; then die "dockerd exited during start-up (see $DOCKERD_LOG)"; fi
        die "dockerd did not answer within ${WAIT_S}s (see $DOCKERD_LOG)"
    fi
    log "dockerd up (pid $STARTED_DOCKERD_PID, $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
fi

# ------------------------------------------------------------------ redis

redis_ok() { [ "$(timeout 5 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

if redis_ok; then
    log "redis already answering on $REDIS_HOST:$REDIS_PORT"
else
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (apt-get install redis-server)"
    if is_root; then rdir=/var/log; else rdir="${TMPDIR:-/tmp}"; fi
    STARTED_REDIS_PIDFILE="$rdir/arena-redis.pid"
    rm -f "$STARTED_REDIS_PIDFILE"
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT (no persistence; log: $rdir/arena-redis.log)"
    redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --daemonize yes \
        --save '' --appendonly no --dir "${TMPDIR:-/tmp}" \
        --pidfile "$STARTED_REDIS_PIDFILE" --logfile "$rdir/arena-redis.log" \
        || die "redis-server failed to start (see $rdir/arena-redis.log)"
    wait_for "$WAIT_S" redis_ok || {
        tail -n 20 "$rdir/arena-redis.log" >&2 || true
        die "redis-server does not answer on $REDIS_HOST:$REDIS_PORT after ${WAIT_S}s"
    }
    log "redis up (pid $(cat "$STARTED_REDIS_PIDFILE" 2>/dev/null || echo '?'))"
fi

log "ready"
