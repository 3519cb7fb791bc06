# Shell helpers shared by the project's scripts; source it, don't run it.

# npm_ci DIR: installs DIR's npm packages from its package-lock.json, unless
# node_modules already matches it.
npm_ci() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# start_server BIN WORKDIR SECRET [FLAG…]: starts petchat-server on 127.0.0.1:0
# with a database and JSON log in WORKDIR; sets SERVER_PID and SERVER_ADDR.
start_server() {
  local bin=$1 work=$2 secret=$3
  shift 3
  start_server_on "$bin" "$work" "$secret" "sqlite://$work/petchat.db" "$@"
}

# start_server_on BIN WORKDIR SECRET DATABASE_URL [FLAG…]: as start_server, on
# the database DATABASE_URL (a PostgreSQL database several nodes share).
start_server_on() {
  local bin=$1 work=$2 secret=$3 database=$4
  shift 4
  "$bin" --bind 127.0.0.1:0 --database-url "$database" --jwt-secret "$secret" \
    --log-format json "$@" 2>"$work/server.log" &
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 1 100); do
    SERVER_ADDR=$(sed -n 's/.*"message":"petchat listening","addr":"\([^"]*\)".*/\1/p' "$work/server.log" | head -n1)
    [ -n "$SERVER_ADDR" ] && return 0
    sleep 0.1
  done
  cat "$work/server.log" >&2
  echo "petchat-server did not start" >&2
  return 1
}
