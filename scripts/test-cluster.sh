#!/usr/bin/env bash
# A one-node SLURM cluster for the SLURM tests (tests/test_slurm.py), on this machine.
#
#   scripts/test-cluster.sh start   # install slurm-wlm and munge if missing (apt-get, root),
#                                   # start munged, slurmctld and slurmd; prints `export SLURM_CONF=...`
#   scripts/test-cluster.sh stop    # cancel its jobs, stop the three daemons, remove its state
#
# Configuration, keys, sockets, spool, logs and pid files live in one directory
# ($CLIPZOO_TEST_CLUSTER, default /tmp/clipzoo-test-cluster); nothing is written to
# /etc/slurm or /etc/munge. Commands reach the cluster through SLURM_CONF:
#   eval "$(scripts/test-cluster.sh start)" && python -m pytest tests/test_slurm.py
# start prints only that export line on stdout (progress goes to stderr).
set -euo pipefail

STATE=${CLIPZOO_TEST_CLUSTER:-/tmp/clipzoo-test-cluster}
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

say() { echo "test-cluster: $*" >&2; }

answers() { timeout 10 sinfo -h -o %t 2>/dev/null | grep -q idle; }

start() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root (apt-get and the daemons); the SLURM tests skip without a cluster"; exit 1
    fi
    if [ -f "$CONF" ] && answers; then
        say "already running ($CONF)"; echo "export SLURM_CONF=$CONF"; return
    fi
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        say "installing slurm-wlm and munge (apt-get)"
        apt-get update -qq >&2
        # policy-rc.d 101: the packages' scripts must not start the system's own daemons
        local policy=/usr/sbin/policy-rc.d made_policy=""
        if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy && made_policy=1; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2 || {
            [ -n "$made_policy" ] && rm -f $policy; say "apt-get install failed"; exit 1; }
        [ -n "$made_policy" ] && rm -f $policy
    fi
    mkdir -p "$STATE"/{munge,spool/slurmd,spool/slurmctld,log}
    chmod 700 "$STATE" "$STATE/munge"
    [ -f "$STATE/munge/munge.key" ] || { dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$STATE/munge/munge.key"; }
    local host; host=$(hostname)
    cat > "$CONF" <<CONFIG
ClusterName=clipzoo-test
SlurmctldHost=$host
AuthType=auth/munge
# cred_expire: a requeued job waits this long (default 120 s) before it starts again; 5 s suffices here
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=5
CredType=cred/munge
# schedule (and start requeued tasks) within a second or two, not the default 30-60 s
SchedulerParameters=bf_interval=1,sched_interval=2
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/spool/slurmd
StateSaveLocation=$STATE/spool/slurmctld
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFIG
    say "starting munged, slurmctld, slurmd (state in $STATE)"
    munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" >&2
    slurmctld -f "$CONF" -i >&2
    slurmd -f "$CONF" >&2
    for _ in $(seq 60); do
        if answers; then say "cluster up"; echo "export SLURM_CONF=$CONF"; return; fi
        sleep 1
    done
    say "the node never became idle; logs in $STATE/log"; tail -20 "$STATE/log/slurmctld.log" >&2 || true
    stop; exit 1
}

stop_pid_file() {  # TERM the daemon named in a pid file, then KILL it if it lingers
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    [ -d "$STATE" ] || { say "not running"; return; }
    if [ -f "$CONF" ] && answers; then
        scancel --full --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    stop_pid_file "$STATE/slurmd.pid"
    stop_pid_file "$STATE/slurmctld.pid"
    stop_pid_file "$STATE/munge/munged.pid"
    rm -rf "$STATE"
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
