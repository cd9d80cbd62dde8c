#!/usr/bin/env bash
# Set up and run rl's tests.
#
# As root (a fresh Debian 12 machine, or CI): installs the system packages the tests need,
# gives /dev/net/tun and /dev/fuse the modes udev gives them on a normal host, creates an
# unprivileged test user with /etc/subuid and /etc/subgid ranges, copies the checkout where
# that user can read it, builds a venv with the test extras, and runs pytest AS THAT USER —
# the unprivileged path is the product.
# As a normal user: makes a venv in .venv-test and runs pytest, saying what is missing.
#
# Extra arguments go to pytest (e.g. scripts/test.sh -k exit_code).
# RL_TEST_BASE (as root; default /var/tmp/rl-test) is where the copy, the venv and pytest's
# temporary directories go, so that two checkouts can run their tests side by side.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
test_user=${RL_TEST_USER:-rltest}
packages=(
    uidmap busybox-static python3-venv python3-dev gcc libc6-dev
    docker-registry apache2-utils openssl
    slirp4netns passt iperf3 dnsmasq-base iproute2
    fuse-overlayfs fuse3 libseccomp2 user-mode-linux kmod procps util-linux
    podman conmon runc git buildah python3-wheel-whl
    slurm-wlm munge containerd rootlesskit
)

say() { printf 'test.sh: %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # docker-registry's package starts a system service on :5000; the tests start their own.
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
    pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
}

udev_like_devices() {
    # These VMs have no udev: /dev/net/tun and /dev/fuse stay 0600 root. A normal host's
    # udev rules make them 0666, which rootless slirp4netns, pasta and fuse need.
    [ -e /dev/net/tun ] || { mkdir -p /dev/net; mknod -m 0666 /dev/net/tun c 10 200; }
    chmod 0666 /dev/net/tun
    [ -e /dev/fuse ] && chmod 0666 /dev/fuse
    return 0
}

make_test_user() {
    if ! id "$test_user" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$test_user"
    fi
    local uid
    uid=$(id -u "$test_user")
    # useradd adds ranges on Debian when SUB_UID_MIN is set; add one only when none exists.
    grep -q "^${test_user}:" /etc/subuid 2>/dev/null || usermod --add-subuids 200000-265535 "$test_user"
    grep -q "^${test_user}:" /etc/subgid 2>/dev/null || usermod --add-subgids 200000-265535 "$test_user"
    # No logind here: make the runtime directory a user manager would have made.
    install -d -m 0700 -o "$test_user" -g "$(id -g "$test_user")" "/run/user/$uid"
}

copy_checkout() {
    # The checkout may live below a directory the test user cannot enter (/root): copy it.
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    (cd "$here" && tar --exclude=./.git --exclude=./.venv --exclude=./.venv-test \
        --exclude='*/__pycache__' -cf - .) | tar -C "$dest" -xf -
    chown -R "$test_user:" "$dest"
}

if [ "$(id -u)" = 0 ]; then
    install_packages
    udev_like_devices
    make_test_user
    uid=$(id -u "$test_user")
    base=${RL_TEST_BASE:-/var/tmp/rl-test}
    mkdir -p "$base"
    chmod 0755 "$base"
    # With RL_TEST_BASE, pytest's temporary root too, one per base: concurrent sessions of one
    # user must not clean up each other's numbered directories. Short, and outside /var/tmp
    # (the VM covers it): sockets live below it and a socket path has at most 107 bytes.
    temproot=/tmp
    if [ -n "${RL_TEST_BASE:-}" ]; then
        temproot=/tmp/rlt-$(basename "$base")
        install -d -m 0700 -o "$test_user" -g "$(id -g "$test_user")" "$temproot"
    fi
    # A private Slurm cluster for tests/oci/test_slurm.py, one node per runtime and oci.conf
    # path; it comes up in the background while the venv is built, and goes when this exits.
    slurm=$base/slurm
    "$here/scripts/slurm/one-node.sh" start "$slurm" "runc=$(command -v runc)" \
        "rl-oci=$base/venv/bin/rl-oci" >"$base/slurm-start.log" 2>&1 &
    slurm_start=$!
    trap 'wait "$slurm_start" 2>/dev/null; "$here/scripts/slurm/one-node.sh" stop "$slurm" || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    copy_checkout "$base/src"
    if [ ! -x "$base/venv/bin/python" ]; then
        /usr/bin/python3 -m venv "$base/venv"
    fi
    "$base/venv/bin/pip" install -q --disable-pip-version-check -e "$base/src[test]" 2>&1 \
        | grep -v '^WARNING: Location' || true
    # Compile once, as the owner, so the unprivileged runs do not recompile every module on
    # every `rl` start (they cannot write __pycache__ where root installed things).
    runuser -u "$test_user" -- "$base/venv/bin/python" -m compileall -q "$base/src/rootless" "$base/src/idmap" >/dev/null || true
    "$base/venv/bin/python" -m compileall -q "$base/venv/lib" >/dev/null 2>&1 || true
    chmod -R a+rX "$base/venv"
    slurm_conf=$slurm/etc/slurm.conf
    wait "$slurm_start" || { say "no Slurm cluster: $(tail -n 3 "$base/slurm-start.log")"; slurm_conf=; }
    cd "$base/src"
    say "running pytest as $test_user (uid $uid)"
    set +e
    runuser -u "$test_user" -- env -i \
        HOME="$(getent passwd "$test_user" | cut -d: -f6)" \
        USER="$test_user" LOGNAME="$test_user" \
        XDG_RUNTIME_DIR="/run/user/$uid" \
        PATH="$base/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        LANG=C.UTF-8 CI="${CI:-}" RL_TEST_SOURCE="$here" PYTEST_DEBUG_TEMPROOT="$temproot" \
        RL_SLURM_CONF="$slurm_conf" \
        "$base/venv/bin/python" -m pytest -p no:cacheprovider -ra "$@"
    status=$?
    set -e
    # pytest's 5 means no test ran: that is a failure for us.
    [ "$status" = 5 ] && { say "no tests ran"; exit 1; }
    exit "$status"
fi

# --- as an ordinary user ---------------------------------------------------------------
cd "$here"
for tool in newuidmap newgidmap busybox docker-registry slirp4netns pasta; do
    command -v "$tool" >/dev/null 2>&1 || say "missing $tool: some tests will skip (run this script as root to install it)"
done
if [ ! -x .venv-test/bin/python ]; then
    /usr/bin/python3 -m venv .venv-test 2>/dev/null || python3 -m venv .venv-test
fi
.venv-test/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
set +e
PATH="$here/.venv-test/bin:$PATH" .venv-test/bin/python -m pytest -p no:cacheprovider -ra "$@"
status=$?
[ "$status" = 5 ] && { say "no tests ran"; exit 1; }
exit "$status"
