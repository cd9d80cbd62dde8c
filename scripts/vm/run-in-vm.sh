#!/bin/sh
# Run a shell command as the test user inside a User-Mode Linux guest with a real, delegated
# cgroup v2 hierarchy (this host's own cgroups are a v1/v2 hybrid that must not be touched).
#
#   scripts/vm/run-in-vm.sh [-m MEM] [-u USER] [-C DIR] 'COMMAND'
#
# The guest's root is the host's / read-only over hostfs; the job sees this repository and the
# Python it runs under, a tmpfs home, and the cgroup user.slice/user-UID.slice/user@UID.service
# delegated to it. The job's stdout and stderr come back on ours; its exit status comes back
# through a file in a shared directory (the UML process's own status says nothing about it).
# Needs Debian's user-mode-linux and kmod (and uidmap for rl's subordinate ids), and a C compiler
# for uml-xstate.c (the shim that lets UML 6.1 run where the host's XSAVE area is larger than
# UML's buffer, as with AMX; elsewhere it changes nothing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mem=1G
user=${RL_VM_USER:-rltest}
cwd=$repo
while getopts m:u:C: opt; do
    case $opt in
        m) mem=$OPTARG ;;
        u) user=$OPTARG ;;
        C) cwd=$OPTARG ;;
        *) echo "usage: $0 [-m MEM] [-u USER] [-C DIR] 'COMMAND'" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-m MEM] [-u USER] [-C DIR] 'COMMAND'" >&2; exit 2; }
kernel=${RL_VM_KERNEL:-$(command -v linux.uml || true)}
if [ -z "$kernel" ]; then
    echo "run-in-vm: linux.uml not found; install it: apt-get install user-mode-linux kmod uidmap" >&2
    exit 125
fi
cc=${CC:-$(command -v cc || command -v gcc || true)}
if [ -z "$cc" ]; then
    echo "run-in-vm: no C compiler for uml-xstate.c; install one: apt-get install gcc libc6-dev" >&2
    exit 125
fi

# The job's directory must be a path the guest can mount over hostfs; not under /tmp, /var/tmp,
# /run or /home, which the guest covers with tmpfs.
base=${RL_VM_TMP:-/dev/shm}
dir=$(mktemp -d "$base/rl-vm.XXXXXX")
chmod 0755 "$dir"
trap 'rm -rf "$dir"' EXIT INT TERM
printf '%s\n' "$*" > "$dir/job.sh"
chmod 0644 "$dir/job.sh"
# Built for every run (a fraction of a second) so that it always matches its source.
"$cc" -shared -fPIC -O2 -o "$dir/uml-xstate.so" "$here/uml-xstate.c" ||
    { echo "run-in-vm: cannot build $here/uml-xstate.c" >&2; exit 125; }

# The Python that runs the job: the venv of the current interpreter (or $RL_VM_VENV), with the
# interpreter it was made from, both exposed read-only at their own paths.
venv=${RL_VM_VENV:-${VIRTUAL_ENV:-}}
if [ -z "$venv" ]; then
    rl=$(command -v rl) || { echo "run-in-vm: no rl on PATH; set RL_VM_VENV to the venv" >&2; exit 125; }
    venv=$(dirname "$(dirname "$rl")")
fi
mounts="$venv:$repo"
if [ -f "$venv/pyvenv.cfg" ]; then
    pyhome=$(sed -n 's/^home *= *//p' "$venv/pyvenv.cfg")
    case $pyhome in /usr/bin|/bin|/usr/local/bin|"") ;; *) mounts="$mounts:$(dirname "$pyhome")" ;; esac
fi
vpath="$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Pinned to one CPU: cross-CPU wake-ups of UML's ptrace'd threads are expensive on these
# nested-virtualised machines (measured about 2.5x slower unpinned).
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c ${RL_VM_CPU:-0}"; fi
# con0 (the console: kernel messages) goes to a log; tty1 and tty2 are the job's stdout and
# stderr, on our fds 1 and 3 (each channel needs its own host fd).
# shellcheck disable=SC2086
TMPDIR=$base LD_PRELOAD="$dir/uml-xstate.so" $pin "$kernel" mem="$mem" rootfstype=hostfs rootflags=/ ro \
    init="$here/init.sh" con=null con0=null,fd:4 con1=null,fd:1 con2=null,fd:3 quiet \
    RL_VM_DIR="$dir" RL_VM_USER="$user" RL_VM_CWD="$cwd" RL_VM_MOUNTS="$mounts" \
    RL_VM_PATH="$vpath" RL_VM_CI="${CI:-}" \
    3>&2 4>"$dir/console.log" </dev/null || true

if [ -s "$dir/status" ]; then
    status=$(cat "$dir/status")
else
    echo "run-in-vm: the guest did not report the job's status; console and init log follow" >&2
    tail -n 30 "$dir/console.log" "$dir/init.log" >&2 2>/dev/null || true
    status=125
fi
if [ "$status" = 125 ] && [ -s "$dir/init.log" ]; then
    cat "$dir/init.log" >&2
fi
exit "$status"
