# nginx in front of petchat nodes, written from the one template
# deploy/nginx/petchat.conf; source it, don't run it. Operators can use
# nginx_render alone; scripts and tests start a private instance:
#
#   source scripts/nginx.sh
#   nginx_start "$dir" 127.0.0.1:8080 127.0.0.1:9001 127.0.0.1:9002
#   ...
#   nginx_stop "$dir"

NGINX_TEMPLATE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/nginx/petchat.conf"

# nginx_install: installs Debian's nginx unless `command -v nginx` finds one.
# (On a machine with a service manager the package also starts the packaged
# site on port 80; these helpers neither need nor touch it.)
nginx_install() {
  command -v nginx >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx
}

# nginx_render DIR LISTEN UPSTREAM…: writes DIR/nginx.conf from the template,
# with DIR as @PREFIX@, LISTEN (an address, or e.g. "443 ssl") as @LISTEN@, and
# the template's @UPSTREAM@ line once per UPSTREAM (host:port); comment lines
# are copied as they are. Creates DIR's logs/ and temp/ directories.
nginx_render() {
  local dir=$1 listen=$2
  shift 2
  [ "$#" -gt 0 ] || { echo "nginx_render: no upstream given" >&2; return 1; }
  mkdir -p "$dir/logs" "$dir/temp"
  dir=$(cd "$dir" && pwd)
  # Workers run as an unprivileged user when nginx starts as root: they must
  # be able to reach their temporary directories.
  chmod 755 "$dir" "$dir/temp"
  # Literal replacement (index/substr, not gsub: a path may hold & or \).
  awk -v prefix="$dir" -v listen="$listen" -v upstreams="$*" '
    function rep(s, from, to,    out, i) {
      out = ""
      while ((i = index(s, from)) > 0) { out = out substr(s, 1, i - 1) to; s = substr(s, i + length(from)) }
      return out s
    }
    BEGIN { n = split(upstreams, up, " ") }
    /^[ \t]*#/ { print; next }
    index($0, "@UPSTREAM@") { for (k = 1; k <= n; k++) print rep($0, "@UPSTREAM@", up[k]); next }
    { print rep(rep($0, "@PREFIX@", prefix), "@LISTEN@", listen) }
  ' "$NGINX_TEMPLATE" >"$dir/nginx.conf"
}

# nginx_start DIR HOST:PORT UPSTREAM…: renders DIR/nginx.conf, starts nginx in
# the foreground (no daemon) as a background job of this shell, and waits until
# HOST:PORT accepts; sets NGINX_PID. Logs are in DIR/logs.
nginx_start() {
  local dir=$1 listen=$2
  nginx_render "$@" || return 1
  dir=$(cd "$dir" && pwd)
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -g "daemon off; pid $dir/nginx.pid;" &
  NGINX_PID=$!
  local host=${listen%:*} port=${listen##*:}
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/logs/error.log" >&2 2>/dev/null || true
  echo "nginx did not start listening on $listen" >&2
  return 1
}

# nginx_stop DIR: fast shutdown (SIGTERM to the master, which stops its
# workers) of the instance nginx_start started there, and waits for it.
nginx_stop() {
  local pid=${NGINX_PID:-}
  [ -n "$pid" ] || pid=$(cat "$1/nginx.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
  NGINX_PID=""
}
