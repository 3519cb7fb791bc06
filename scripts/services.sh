# Throwaway PostgreSQL, Redis and nginx for the tests; source it, don't run it.
#
#   source scripts/services.sh
#   services_postgres    # exports PETCHAT_TEST_POSTGRES_URL (a base URL: tests create their own
#                        # databases) and PETCHAT_TEST_POSTGRES_BIN (for tests that run a cluster of their own)
#   services_redis       # exports PETCHAT_TEST_REDIS_URL
#   services_nginx CONF  # runs nginx on CONF (its own prefix: target/services/nginx)
#
# Each function installs its Debian package with apt-get when missing, keeps
# its files under target/services/, listens on a fixed loopback port below
# the kernel's ephemeral range (32768-60999 here, where every outgoing
# connection and every test's port 0 lands: a client socket on the port makes
# the bind fail), and reuses an instance already answering there instead of
# starting a second one. When the port is taken by something that does not
# answer, it moves to the next of SERVICES_PORT_TRIES ports. What a function started is stopped when
# the sourcing shell exits (one EXIT trap for all); what it reused is left
# running. Nothing is synced off: PostgreSQL keeps fsync on, so the durability
# tests mean what they say.

SERVICES_DIR=${SERVICES_DIR:-$PWD/target/services}
SERVICES_POSTGRES_PORT=${SERVICES_POSTGRES_PORT:-25432}
SERVICES_REDIS_PORT=${SERVICES_REDIS_PORT:-26379}
SERVICES_PORT_TRIES=${SERVICES_PORT_TRIES:-10}
SERVICES_POSTGRES_BIN=${SERVICES_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
# Commands to run at exit, newest first.
SERVICES_STOPS=()

# services_port_taken PORT: true when a socket on 127.0.0.1 holds PORT
# (listening or as the local end of a live connection; TIME-WAIT does not
# stop a server that sets SO_REUSEADDR, as PostgreSQL and Redis do).
services_port_taken() {
  ss -Htan exclude time-wait "( sport = :$1 )" 2>/dev/null | grep -q .
}

# services_find_port NAME START ANSWERS: the first of SERVICES_PORT_TRIES
# ports from START where `ANSWERS PORT` succeeds (an instance to reuse:
# SERVICES_FOUND_REUSE=1) or that is free (SERVICES_FOUND_REUSE=0), in
# SERVICES_FOUND_PORT; fails when every one is taken by something else.
services_find_port() {
  local name=$1 port=$2 answers=$3 _
  for _ in $(seq 1 "$SERVICES_PORT_TRIES"); do
    SERVICES_FOUND_PORT=$port
    if "$answers" "$port"; then SERVICES_FOUND_REUSE=1; return 0; fi
    if ! services_port_taken "$port"; then SERVICES_FOUND_REUSE=0; return 0; fi
    echo "services: 127.0.0.1:$port is taken by something that is not a ready $name" >&2
    port=$((port + 1))
  done
  echo "services: no free port for $name" >&2
  return 1
}

services_postgres_answers() { "$SERVICES_POSTGRES_BIN/pg_isready" -q -h 127.0.0.1 -p "$1"; }
services_redis_answers() { [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

services_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# services_install PACKAGE COMMAND: installs PACKAGE unless COMMAND exists.
services_install() {
  local package=$1 command=$2
  [ -x "$command" ] || command -v "$command" >/dev/null && return 0
  echo "services: installing $package" >&2
  services_as_root apt-get update -qq
  services_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

services_stop_all() {
  local stop
  for stop in "${SERVICES_STOPS[@]}"; do
    eval "$stop" || true
  done
  SERVICES_STOPS=()
}

services_on_exit() {
  # The first registration installs the trap; it chains any EXIT trap already set.
  if [ ${#SERVICES_STOPS[@]} -eq 0 ]; then
    local previous
    previous=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT$/\1/")
    # shellcheck disable=SC2064
    trap "services_stop_all; ${previous:-:}" EXIT
  fi
  SERVICES_STOPS=("$1" "${SERVICES_STOPS[@]}")
}

# services_as_postgres COMMAND: runs a shell command as the `postgres` user
# when root (initdb and the server refuse to run as root), else as oneself.
services_as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

# PostgreSQL 15 as the `postgres` role (root has none), trust authentication
# on 127.0.0.1 only, no Unix socket (a deep checkout's path may exceed its
# length limit).
services_postgres() {
  services_install postgresql "$SERVICES_POSTGRES_BIN/initdb"
  services_install iproute2 ss
  local bin=$SERVICES_POSTGRES_BIN port data=$SERVICES_DIR/postgres
  export PETCHAT_TEST_POSTGRES_BIN=$bin
  services_find_port PostgreSQL "$SERVICES_POSTGRES_PORT" services_postgres_answers || return 1
  port=$SERVICES_FOUND_PORT
  export PETCHAT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  if [ "$SERVICES_FOUND_REUSE" = 1 ]; then
    echo "services: reusing the PostgreSQL on 127.0.0.1:$port" >&2
    return 0
  fi
  mkdir -p "$SERVICES_DIR"
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
    services_as_postgres "'$bin/initdb' -D '$data' -U postgres -A trust --no-sync --no-locale -E UTF8" \
      >"$SERVICES_DIR/postgres-initdb.log" 2>&1 || { cat "$SERVICES_DIR/postgres-initdb.log" >&2; return 1; }
  fi
  touch "$SERVICES_DIR/postgres.log"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$SERVICES_DIR/postgres.log"; fi
  # Small buffers and room for the suite's pools; fsync and synchronous_commit stay on.
  local options="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c shared_buffers=32MB -c max_connections=300"
  services_as_postgres "'$bin/pg_ctl' -D '$data' -l '$SERVICES_DIR/postgres.log' -o \"$options\" -w -t 60 start" \
    >/dev/null || { tail -n 20 "$SERVICES_DIR/postgres.log" >&2; return 1; }
  services_on_exit "services_as_postgres \"'$bin/pg_ctl' -D '$data' -m fast -w stop\" >/dev/null 2>&1"
  echo "services: PostgreSQL on 127.0.0.1:$port ($data)" >&2
}

# Redis without persistence (it carries fan-out and presence, never data).
services_redis() {
  services_install redis-server redis-server
  services_install iproute2 ss
  local port dir=$SERVICES_DIR/redis
  services_find_port Redis "$SERVICES_REDIS_PORT" services_redis_answers || return 1
  port=$SERVICES_FOUND_PORT
  export PETCHAT_TEST_REDIS_URL="redis://127.0.0.1:$port"
  if [ "$SERVICES_FOUND_REUSE" = 1 ]; then
    echo "services: reusing the Redis on 127.0.0.1:$port" >&2
    return 0
  fi
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
  local _
  for _ in $(seq 1 50); do
    services_redis_answers "$port" && break
    sleep 0.1
  done
  services_redis_answers "$port" || { cat "$dir/redis.log" >&2; return 1; }
  services_on_exit "redis-cli -h 127.0.0.1 -p $port shutdown nosave >/dev/null 2>&1"
  echo "services: Redis on 127.0.0.1:$port" >&2
}

# services_nginx CONF: a private nginx on CONF (which sets its own listen
# ports, error_log and access_log), prefix target/services/nginx.
services_nginx() {
  services_install nginx /usr/sbin/nginx
  local conf=$1 dir=$SERVICES_DIR/nginx
  mkdir -p "$dir/logs"
  if [ -f "$dir/nginx.pid" ] && kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null; then
    echo "services: reusing the nginx of $dir" >&2
    return 0
  fi
  /usr/sbin/nginx -p "$dir" -c "$conf" -g "daemon on; pid $dir/nginx.pid;" || return 1
  services_on_exit "/usr/sbin/nginx -p '$dir' -c '$conf' -g 'pid $dir/nginx.pid;' -s stop >/dev/null 2>&1"
  echo "services: nginx on $conf" >&2
}
