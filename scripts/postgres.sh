#!/usr/bin/env bash
# PostgreSQL for Arena's tests (and small deployments), idempotently, as root on Debian 12:
# installs Debian's postgresql when missing, starts the default cluster when it is down (no systemd
# needed), and makes sure a login role `arena` (password `arena`, allowed to create databases) exists.
# Prints the URL to use: postgresql+psycopg://arena:arena@127.0.0.1:5432/postgres
set -euo pipefail
log() { printf 'postgres: %s\n' "$*"; }
die() { printf 'postgres: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    log "apt-get install postgresql"
    apt-get update -qq -o DPkg::Lock::Timeout=120 >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 \
        postgresql >/tmp/arena-apt-postgres.log 2>&1 || { tail -n 20 /tmp/arena-apt-postgres.log >&2; die "install failed"; }
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating cluster $version/main"
    pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
    log "starting cluster $version/main"
    pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 60); do
    runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
done
runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432"
if [ "$(runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'arena'")" != "1" ]; then
    log "creating role arena"
    runuser -u postgres -- psql -q -c "CREATE ROLE arena LOGIN CREATEDB PASSWORD 'arena'"
fi
# The tests drop each test's database WITH (FORCE); an autovacuum worker busy in it belongs to no role, and
# only a member of pg_signal_backend may end it (else: "must be a member of the role whose process is being
# terminated"). Granted on every run, so an older installation gets it too.
runuser -u postgres -- psql -q -c "GRANT pg_signal_backend TO arena"
log "ready: postgresql+psycopg://arena:arena@127.0.0.1:5432/postgres"
