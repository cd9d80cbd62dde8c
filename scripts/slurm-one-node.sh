#!/usr/bin/env bash
# A one-node Slurm cluster (Debian's slurm-wlm 22.05 and munge) whose oci.conf runs rl-oci,
# without systemd: munged, slurmctld and slurmd of its own, on 127.0.0.1, in one directory.
#
#   scripts/slurm-one-node.sh start DIR RL_OCI   (as root) write the configuration and start
#                                                 the daemons; prints SLURM_CONF
#   scripts/slurm-one-node.sh oci DIR RL_OCI run|create-start
#                                                (as root) which oci.conf: RunTimeRun (the one
#                                                 that returns the job's output and status) or
#                                                 RunTimeCreate + RunTimeStart (see docs)
#   scripts/slurm-one-node.sh stop DIR           (as root) stop them (by their pid files)
#
# Everything lives below DIR (configuration, munge key and socket, state, spool, logs), with
# ports of its own, so two of these may run side by side. Clients use it with
# SLURM_CONF=DIR/etc/slurm.conf. DIR is root's (munged refuses a log or socket below a
# directory another user owns); the jobs' users must be able to reach RL_OCI.
# The recipe for a real cluster is docs/oci-runtime.md ("Slurm").
set -euo pipefail

say() { printf 'slurm-one-node: %s\n' "$*" >&2; }

free_port() {
    # A TCP port nothing listens on, from a range of its own.
    local port
    for port in $(seq "$1" $(( $1 + 400 ))); do
        if ! ss -Hltn "sport = :$port" | grep -q .; then
            echo "$port"
            return
        fi
    done
    say "no free port from $1"
    exit 1
}

start() {
    local dir=$1 rl_oci=$2
    [ "$(id -u)" = 0 ] || { say "start needs root (slurmd runs as root)"; exit 1; }
    [ -x "$rl_oci" ] || { say "$rl_oci is not executable"; exit 1; }
    stop "$dir" 2>/dev/null || true
    install -d -m 0755 -o root -g root "$dir" "$dir/etc" "$dir/run" "$dir/log" "$dir/spool"
    install -d -m 0700 "$dir/state"
    install -d -m 0755 -o munge -g munge "$dir/munge"
    install -d -m 0700 -o munge -g munge "$dir/munge/lib"
    # The socket's directory must be reachable by every client; munged makes the socket 0777.
    install -d -m 0755 -o munge -g munge "$dir/munge/run"
    if [ ! -s "$dir/munge/munge.key" ]; then
        head -c 1024 /dev/urandom > "$dir/munge/munge.key"
        chown munge:munge "$dir/munge/munge.key"
        chmod 0400 "$dir/munge/munge.key"
    fi
    local socket="$dir/munge/run/munge.socket"
    runuser -u munge -- /usr/sbin/munged --socket="$socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/run/munged.pid" --log-file="$dir/munge/lib/munged.log" \
        --seed-file="$dir/munge/lib/munged.seed"
    local ctld_port slurmd_port node
    ctld_port=$(free_port 16817)
    slurmd_port=$(free_port $(( ctld_port + 1 )))
    node="rl$slurmd_port"  # one name per cluster: rl-oci container ids contain it (%n)
    cat > "$dir/etc/slurm.conf" <<EOF
ClusterName=rloci$ctld_port
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmdDebug=debug
# No cgroups: this host's are a v1/v2 hybrid that must not be reorganised.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/linear
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$(nproc) State=UNKNOWN
PartitionName=rl Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    oci "$dir" "$rl_oci" run
    chmod 0644 "$dir/etc/slurm.conf"
    export SLURM_CONF="$dir/etc/slurm.conf"
    /usr/sbin/slurmctld -i
    /usr/sbin/slurmd -N "$node"
    local tries=0
    until sinfo -h -o '%T' 2>/dev/null | grep -qx idle; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            say "the node did not become idle; see $dir/log"
            tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "$SLURM_CONF"
}

oci() {
    # oci.conf beside slurm.conf (Slurm reads it there, when a step starts). 22.05 knows
    # %n %u %j %s %t %b, not %U. The commands run through /bin/sh -c, as the job's user in
    # the step and as root in slurmstepd's clean-up: --root names the user's state directory
    # for both (rl-oci, called by root, acts as the directory's owner).
    local dir=$1 rl_oci=$2 mode=$3
    local id="%n.%u.%j.%s.%t" root="--root /tmp/rl-oci-%u"
    {
        echo "RunTimeQuery=\"$rl_oci $root state $id\""
        if [ "$mode" = create-start ]; then
            # Slurm reads RunTimeCreate's output until end-of-file, and the created container
            # holds create's stdout: without the redirection it waits for a start that never
            # comes. The job's own output is lost either way (docs/oci-runtime.md).
            echo "RunTimeCreate=\"$rl_oci $root create --bundle %b $id </dev/null >/dev/null 2>&1\""
            echo "RunTimeStart=\"$rl_oci $root start $id\""
        else
            echo "RunTimeRun=\"$rl_oci $root run --bundle %b $id\""
        fi
        echo "RunTimeKill=\"$rl_oci $root kill --all $id\""
        echo "RunTimeDelete=\"$rl_oci $root delete --force $id\""
    } > "$dir/etc/oci.conf"
    chmod 0644 "$dir/etc/oci.conf"
}

stop() {
    local dir=$1 pidfile pid
    for pidfile in "$dir/run/slurmd.pid" "$dir/run/slurmctld.pid" "$dir/munge/run/munged.pid"; do
        [ -s "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

case "${1:-}" in
    start) start "${2:?DIR}" "${3:?RL_OCI}" ;;
    oci) oci "${2:?DIR}" "${3:?RL_OCI}" "${4:?run or create-start}" ;;
    stop) stop "${2:?DIR}" ;;
    *) say "usage: $0 start DIR RL_OCI | oci DIR RL_OCI run|create-start | stop DIR"; exit 2 ;;
esac
