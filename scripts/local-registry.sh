#!/bin/sh
# Start or stop a private registry (Debian's docker-registry) on 127.0.0.1 for the demo and
# the benchmarks: plain HTTP, filesystem storage, no auth.
#   scripts/local-registry.sh start DIR [PORT]   prints HOST:PORT, pid in DIR/registry.pid
#   scripts/local-registry.sh stop DIR
set -eu
cmd=${1:?usage: local-registry.sh start|stop DIR [PORT]}
dir=${2:?usage: local-registry.sh start|stop DIR [PORT]}
bin=$(command -v docker-registry || echo /usr/bin/docker-registry)
case "$cmd" in
start)
    [ -x "$bin" ] || { echo "local-registry: docker-registry not found (apt-get install docker-registry)" >&2; exit 1; }
    port=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
    mkdir -p "$dir/storage"
    cat > "$dir/config.yml" <<EOF2
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF2
    "$bin" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    echo $! > "$dir/registry.pid"
    i=0
    until python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "local-registry: did not start, see $dir/registry.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "127.0.0.1:$port"
    ;;
stop)
    [ -f "$dir/registry.pid" ] && kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
    rm -f "$dir/registry.pid"
    ;;
*) echo "usage: local-registry.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
