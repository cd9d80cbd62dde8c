#!/bin/sh
# PID 1 of the User-Mode Linux guest started by run-in-vm.sh (see ../../../shared/notes/cgroup-v2-vm.md).
# The guest's root is the host's / over hostfs, read-only. This script mounts what a system
# needs, gives the guest a real cgroup v2 hierarchy, delegates a subtree to the test user the
# way systemd does for user@UID.service, runs the job as that user and powers off.
# Settings arrive as environment (unknown name=value kernel parameters reach init that way):
#   RL_VM_DIR  shared directory (read-write): job.sh, status, log
#   RL_VM_USER user to run the job as (default rltest)   RL_VM_CWD working directory
#   RL_VM_MOUNTS extra host directories to expose read-only at the same path (colon-separated)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

poweroff() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
}
fail() {
    echo "rl-vm init: $*" >&2
    echo 125 > "$RL_VM_DIR/status" 2>/dev/null
    poweroff
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
[ -L /dev/ptmx ] || { rm -f /dev/ptmx 2>/dev/null; ln -sf pts/ptmx /dev/ptmx; }
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
# /var/tmp hides the host's /var/tmp, where the test venv lives: keep the venv (read-only).
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /home

user=${RL_VM_USER:-rltest}
uid=$(id -u "$user") || fail "no user $user"
gid=$(id -g "$user")
home=/home/$user

[ -n "$RL_VM_DIR" ] || fail "RL_VM_DIR is not set"
mkdir -p "$RL_VM_DIR"
mount -t hostfs -o "$RL_VM_DIR" hostfs "$RL_VM_DIR" || fail "cannot share $RL_VM_DIR"
exec 2>>"$RL_VM_DIR/init.log"
IFS=:
for dir in ${RL_VM_MOUNTS:-}; do
    [ -n "$dir" ] || continue
    mkdir -p "$dir"
    mount -r -t hostfs -o "$dir" hostfs "$dir" || fail "cannot share $dir"
done
unset IFS

# Modules: the root is read-only and has no /lib/modules for this kernel, so modprobe gets a
# root of its own with Debian's UML modules where it expects them.
mkdir -p /run/modroot
mount -t tmpfs tmpfs /run/modroot
mkdir -p /run/modroot/lib/modules
mount -r -t hostfs -o /usr/lib/uml/modules hostfs /run/modroot/lib/modules
modprobe -d /run/modroot -a overlay tun veth fuse dummy 2>>"$RL_VM_DIR/init.log"
mkdir -p /dev/net
[ -e /dev/net/tun ] || mknod /dev/net/tun c 10 200
[ -e /dev/fuse ] || mknod /dev/fuse c 10 229
# A distribution's udev rules make both usable by everyone.
chmod 0666 /dev/net/tun /dev/fuse

# cgroup v2, delegated the way systemd delegates user@UID.service: controllers enabled in
# every ancestor's cgroup.subtree_control, the directory and its cgroup.procs,
# cgroup.subtree_control and cgroup.threads owned by the user (systemd.resource-control(5),
# "Delegate="; Documentation/admin-guide/cgroup-v2.rst, "Delegation Containment").
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
cg=/sys/fs/cgroup
want=""
for c in cpuset cpu io memory pids; do
    case " $(cat $cg/cgroup.controllers) " in *" $c "*) want="$want +$c" ;; esac
done
delegated=$cg/user.slice/user-$uid.slice/user@$uid.service
mkdir -p "$delegated"
for level in $cg $cg/user.slice $cg/user.slice/user-$uid.slice; do
    echo "$want" > "$level/cgroup.subtree_control" || fail "cannot enable$want in $level"
done
chown "$uid:$gid" "$delegated" "$delegated/cgroup.procs" "$delegated/cgroup.subtree_control" \
    "$delegated/cgroup.threads"

mkdir -p "$home" "/run/user/$uid"
chown "$uid:$gid" "$home" "/run/user/$uid"
chmod 0700 "/run/user/$uid"

# The job's output goes through fifos so that, as in CI, its stdout and stderr are not ttys.
# tty1 and tty2 reach the host's fds 1 and 3 (run-in-vm.sh); raw mode passes bytes unchanged.
stty -F /dev/tty1 raw -echo 2>/dev/null
stty -F /dev/tty2 raw -echo 2>/dev/null
mkfifo /run/job-out /run/job-err
cat /run/job-out > /dev/tty1 &
out_pid=$!
cat /run/job-err > /dev/tty2 &
err_pid=$!

# The job's first process moves into the delegated cgroup as root: a user may only move
# processes between cgroups below one whose cgroup.procs it can write.
cd "${RL_VM_CWD:-/}" || fail "no directory ${RL_VM_CWD}"
sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$delegated" \
    setpriv --reuid "$uid" --regid "$gid" --init-groups \
    env -i HOME="$home" USER="$user" LOGNAME="$user" XDG_RUNTIME_DIR="/run/user/$uid" \
    PATH="${RL_VM_PATH:-/usr/bin:/bin}" CI="${RL_VM_CI:-}" LANG=C.UTF-8 \
    RL_IN_VM=1 RL_VM_DELEGATED="$delegated" \
    sh "$RL_VM_DIR/job.sh" </dev/null >/run/job-out 2>/run/job-err
status=$?
wait "$out_pid" "$err_pid"
echo "$status" > "$RL_VM_DIR/status"
poweroff
