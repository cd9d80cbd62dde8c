#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install rl, get an image, run it rootless.
#
# As root: installs what rl needs (uidmap, busybox-static, docker-registry, python3-venv),
# creates an unprivileged user (RL_DEMO_USER, default rltest) with /etc/subuid ranges, and runs
# the rest as that user — rl is for people without root.
# Without internet (these machines) it builds a busybox image, serves it from a local registry
# on 127.0.0.1 and `rl run`s it from there. With RL_DEMO_PULL=alpine it also runs
# `rl run --rm alpine ...` from Docker Hub.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
user=${RL_DEMO_USER:-rltest}
base=/var/tmp/rl-demo

if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    need=()
    for p in uidmap busybox-static docker-registry python3-venv passt slirp4netns; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    fi
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
    [ -e /dev/net/tun ] && chmod 0666 /dev/net/tun   # as udev does on a normal host
    id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
    grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 "$user"
    grep -q "^$user:" /etc/subgid || usermod --add-subgids 200000-265535 "$user"
    uid=$(id -u "$user")
    install -d -m 0700 -o "$user" -g "$(id -g "$user")" "/run/user/$uid"
    rm -rf "$base" && mkdir -p "$base"
    (cd "$here" && tar --exclude=./.git --exclude=./.venv --exclude='*/__pycache__' -cf - .) | tar -C "$base" -xf - --one-top-level=src
    /usr/bin/python3 -m venv "$base/venv"
    "$base/venv/bin/pip" install -q --disable-pip-version-check "$base/src" 2>&1 | grep -v '^WARNING: Location' || true
    chown -R "$user:" "$base"
    exec runuser -u "$user" -- env -i HOME="$(getent passwd "$user" | cut -d: -f6)" \
        XDG_RUNTIME_DIR="/run/user/$uid" PATH="$base/venv/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        RL_DEMO_PULL="${RL_DEMO_PULL:-}" LANG=C.UTF-8 bash "$base/src/scripts/demo.sh"
fi

# --- as the unprivileged user --------------------------------------------------------
cd "$(dirname "$0")/.."
if ! command -v rl >/dev/null; then
    python3 -m venv "$HOME/.local/rl-venv"
    "$HOME/.local/rl-venv/bin/pip" install -q .
    export PATH="$HOME/.local/rl-venv/bin:$PATH"
fi
work=$(mktemp -d)
trap 'scripts/local-registry.sh stop "$work"; rm -rf "$work"' EXIT
reg=$(scripts/local-registry.sh start "$work")
echo "+ local registry at $reg; pushing a busybox image built from busybox-static"
python3 scripts/build_test_images.py "$reg" --insecure >/dev/null
set -x
rl pull --tls-verify=false "$reg/rltest/busybox:latest"
rl images
rl run --rm --tls-verify=false "$reg/rltest/busybox:latest" \
    sh -c 'echo "hello from $(hostname), pid $$, uid $(id -u)"; cat /proc/self/uid_map; ps'
rl run --rm --network none --memory 64m --cgroups best-effort "$reg/rltest/busybox:latest" true
{ set +x; } 2>/dev/null
if [ -n "${RL_DEMO_PULL:-}" ]; then
    set -x
    rl run --rm "$RL_DEMO_PULL" sh -c 'cat /etc/os-release | head -2'
fi
echo "demo: ok"
