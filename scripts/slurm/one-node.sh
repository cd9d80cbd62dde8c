#!/usr/bin/env bash
# A private one-machine Slurm cluster on 127.0.0.1 for rl's tests (Debian's slurm-wlm 22.05 and
# munge), without systemd and without touching the host's own Slurm or munge set-up.
#
#   one-node.sh start DIR [NAME=RUNTIME ...]   (root) start it, or check that it runs
#   one-node.sh stop DIR                       (root) stop it: jobs, steps and daemons
#   one-node.sh status DIR                     exit 0 when every node takes jobs
#
# Everything lives below DIR: the munge key and socket, the configuration, the controller's
# state, the spool and the logs. Clients use SLURM_CONF=DIR/etc/slurm.conf.
#
# One machine, one node per oci.conf. slurmstepd reads oci.conf from beside its own SLURM_CONF
# at every step, and one oci.conf names one runtime and one of Slurm's two ways to drive it
# (RunTimeRun, or RunTimeCreate + RunTimeStart). So each pair gets a slurmd of its own, started
# with `-N NODE` and SLURM_CONF=DIR/etc/NODE/slurm.conf (a link to the cluster's file) beside
# that node's oci.conf; a job picks the pair with `srun -w NODE`. Nodes are NAME-run and NAME-cs
# for each NAME=RUNTIME argument (default: runc=/usr/sbin/runc). Every node declares the
# machine's real CPUs and memory (`slurmd -C`).
#
# proctrack/linuxproc and task/none: nothing here creates, moves or limits a cgroup.
set -euo pipefail

usage() { echo "usage: one-node.sh start|stop|status DIR [NAME=RUNTIME ...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
etc=$dir/etc
# Tells this cluster's runtime state directories from another checkout's.
tag=$(printf %s "$dir" | cksum | cut -d' ' -f1)

say() { printf 'one-node.sh: %s\n' "$*" >&2; }

# The daemons get a clean environment: slurmstepd (and so every RunTime* command of oci.conf)
# inherits slurmd's, and the tests must not depend on whatever the calling shell exported.
# Nor do they inherit the lock's fd 9: a daemon holding it would lock out the next stop.
daemon_env() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@" 9>&-; }
client() { SLURM_CONF=$etc/slurm.conf "$@"; }

# Ours are the Slurm daemons and steps whose environment holds SLURM_CONF below DIR, and the
# munged whose key file is below DIR: the name only narrows the search, the host's own daemons
# and other clusters stay alone.
our_pids() {
    local p
    for p in $(for n in slurmctld slurmscriptd slurmd slurmstepd munged; do pgrep -x "$n"; done); do
        { tr '\0' '\n' <"/proc/$p/environ" | grep -qx "SLURM_CONF=$etc/.*" \
            || tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "--key-file=$dir/munge/munge.key"; } \
            2>/dev/null && echo "$p"
    done
    return 0
}

nodes() { [ -f "$etc/nodes" ] && cat "$etc/nodes"; }

node_states() { client sinfo -h -N -o '%N %t' 2>/dev/null; }

# A client facing a controller that does not answer retries for about 9 s: ask only once the
# controller's port takes connections.
ctld_listens() {
    local port
    port=$(sed -n 's/^SlurmctldPort=//p' "$etc/slurm.conf" 2>/dev/null)
    [ -n "$port" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

ready() {
    local states n
    ctld_listens || return 1
    states=$(node_states) || return 1
    for n in $(nodes); do
        grep -qx "$n idle" <<<"$states" || grep -qx "$n mix" <<<"$states" \
            || grep -qx "$n alloc" <<<"$states" || return 1
    done
}

free_ports() {
    # Ports the kernel hands out as free now; the daemons bind them a moment later.
    /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

write_oci_conf() {
    # $1 node directory, $2 runtime name, $3 runtime path, $4 run|cs. Slurm 22.05 substitutes
    # %n %u %j %s %t %b %r %e %@ (not %U) and runs each line with /bin/sh -c as the job's user,
    # in slurmstepd's environment (no XDG_RUNTIME_DIR, no HOME): the state directory comes from
    # $(id -u), one per cluster and runtime so that two test clusters never share an ID.
    local rt=$3 root id
    root="--root=/run/user/\$(id -u)/rl-slurm-$tag-$2"
    id='%n.%u.%j.%s.%t'
    {
        echo "# Written by scripts/slurm/one-node.sh: $rt, the $4 path. See docs/slurm.md."
        echo "RunTimeQuery=\"$rt $root state $id\""
        echo "RunTimeKill=\"$rt $root kill -a $id SIGKILL\""
        echo "RunTimeDelete=\"$rt $root delete --force $id\""
        if [ "$4" = run ]; then
            echo "RunTimeRun=\"$rt $root run --bundle %b $id\""
        else
            # slurmstepd reads RunTimeCreate's stdout+stderr (one pipe) until EOF before it calls
            # RunTimeStart, and a container created without a terminal inherits the runtime's
            # stdio: left on that pipe, the waiting container keeps it open and the step hangs.
            # The task's own stdio never reach these commands, so the job's output goes to a
            # file beside the user's bundle (the directory above root.path, %r).
            echo "RunTimeCreate=\"$rt $root create --bundle %b $id </dev/null >%r/../slurm-%j.%s.out 2>&1\""
            echo "RunTimeStart=\"$rt $root start $id\""
        fi
    } >"$1/oci.conf"
}

write_config() {
    local ports hw host i n name rt
    local -a runtimes=("$@")
    read -r -a ports <<<"$(free_ports $((1 + 2 * ${#runtimes[@]})))"
    # The machine's real CPUs and memory, as slurmd itself counts them.
    hw=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
    host=$(hostname -s)
    rm -rf "$etc"
    install -d -m 0755 "$etc"
    : >"$etc/nodes"
    echo "${runtimes[*]}" >"$etc/runtimes"
    cat >"$etc/slurm.conf" <<EOF
# Written by scripts/slurm/one-node.sh for rl's tests: a private cluster on 127.0.0.1.
ClusterName=rltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge-socket/munge.socket.2
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmdDebug=debug
KillWait=5
MinJobAge=10
EOF
    i=1
    for rt in "${runtimes[@]}"; do
        name=${rt%%=*}
        for n in "$name-run" "$name-cs"; do
            echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[$i]} $hw" >>"$etc/slurm.conf"
            install -d -m 0755 "$etc/$n"
            ln -s ../slurm.conf "$etc/$n/slurm.conf"
            echo "$n" >>"$etc/nodes"
            i=$((i + 1))
        done
    done
    echo "PartitionName=rl Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE" >>"$etc/slurm.conf"
}

write_oci_confs() {
    # slurmstepd reads oci.conf afresh at every step: these may be rewritten while it runs.
    local rt name
    for rt in "$@"; do
        name=${rt%%=*}
        write_oci_conf "$etc/$name-run" "$name" "${rt#*=}" run
        write_oci_conf "$etc/$name-cs" "$name" "${rt#*=}" cs
    done
}

start_munge() {
    # munged insists on its files being the munge user's and not writable by others.
    install -d -m 0700 -o munge -g munge "$dir/munge"
    install -d -m 0755 -o munge -g munge "$dir/munge-socket"
    if [ ! -s "$dir/munge/munge.key" ]; then
        runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
    fi
    runuser -u munge -- env -i PATH=/usr/sbin:/usr/bin munged \
        --key-file="$dir/munge/munge.key" --socket="$dir/munge-socket/munge.socket.2" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" 9>&-
}

do_stop() {
    local i pids jobs
    if [ -f "$etc/slurm.conf" ] && [ -n "$(our_pids)" ]; then
        # Jobs first, so that their steps run RunTimeKill/RunTimeDelete for their containers.
        jobs=$(client squeue -h -o %A 2>/dev/null || true)
        [ -z "$jobs" ] || client scancel $jobs 2>/dev/null || true
        for i in $(seq 50); do
            [ -z "$(client squeue -h -o %A 2>/dev/null || true)" ] && break
            sleep 0.1
        done
    fi
    pids=$(our_pids)
    [ -z "$pids" ] && return 0
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 50); do
        pids=$(our_pids)
        [ -z "$pids" ] && return 0
        sleep 0.1
    done
    say "SIGKILL to what did not stop: $pids"
    kill -KILL $pids 2>/dev/null || true
}

do_start() {
    local n i
    [ $# -gt 0 ] || set -- runc="$(command -v runc || echo /usr/sbin/runc)"
    if [ "$(cat "$etc/runtimes" 2>/dev/null)" = "$*" ] && ready; then
        write_oci_confs "$@"
        echo "$etc/slurm.conf"
        return 0
    fi
    for t in slurmctld slurmd munged mungekey; do
        command -v "$t" >/dev/null || { say "$t not found: apt-get install slurm-wlm munge"; exit 1; }
    done
    do_stop
    write_config "$@"
    write_oci_confs "$@"
    # The logs of this start only: the previous cluster's go.
    rm -rf "$dir/log"
    install -d -m 0700 "$dir/ctld" "$dir/run" "$dir/log"
    # The spool holds each step's bundle (slurmstepd makes it and hands it to the job's user):
    # the user has to be able to reach it.
    install -d -m 0755 "$dir/spool"
    start_munge
    daemon_env SLURM_CONF="$etc/slurm.conf" slurmctld
    for n in $(nodes); do
        daemon_env SLURM_CONF="$etc/$n/slurm.conf" slurmd -N "$n"
    done
    for i in $(seq 200); do
        if ready; then
            echo "$etc/slurm.conf"
            return 0
        fi
        sleep 0.05
    done
    say "the cluster did not come up; node states: $(node_states | tr '\n' ' ')"
    say "logs: $dir/log, $dir/munge/munged.log"
    exit 1
}

lock() {
    # One start or stop at a time per DIR. DIR (and the directories above it) must let the
    # jobs' users through: slurmstepd writes each step's bundle in its spool.
    install -d -m 0755 "$dir"
    exec 9>"$dir/lock"
    flock -w 120 9 || { say "$dir is locked by another start or stop"; exit 1; }
}

case "$cmd" in
start)
    [ "$(id -u)" = 0 ] || { say "start needs root (slurmd and munged run as root and munge)"; exit 1; }
    lock
    do_start "$@"
    ;;
stop)
    [ "$(id -u)" = 0 ] || { say "stop needs root"; exit 1; }
    lock
    do_stop
    ;;
status)
    ready
    ;;
*) usage ;;
esac
