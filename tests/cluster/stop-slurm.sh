#!/usr/bin/env bash
# Stop the one-node SLURM cluster that tests/cluster/start-slurm.sh started.
#
#   tests/cluster/stop-slurm.sh            # end its jobs and daemons, keep the logs
#   tests/cluster/stop-slurm.sh --purge    # ... and delete $TRAINMAP_SLURM_DIR
#
# Ends only processes this cluster started: jobs still queued or running on it (through
# its own scancel), then the daemons named by the pid files in $TRAINMAP_SLURM_DIR/run,
# each checked to still be the program it was (a recycled PID is left alone). Never by
# name: the machine may run its own munged or slurmd. Safe to run when nothing is up.
set -euo pipefail

DIR=${TRAINMAP_SLURM_DIR:-/tmp/trainmap-slurm}
CONF=$DIR/etc/slurm.conf
PURGE=0
case "${1:-}" in
    --purge) PURGE=1 ;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

log() { echo "stop-slurm: $*" >&2; }

if [ ! -f "$DIR/.trainmap-slurm" ]; then
    log "no cluster state in $DIR; nothing to stop"
    exit 0
fi

alive_pid() {  # alive_pid NAME PIDFILE -> prints the PID when it is a live NAME process
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

# Jobs first, while slurmctld and slurmd can still end them cleanly (slurmd's exit alone
# would leave their slurmstepd and job processes running).
if alive_pid slurmctld "$DIR/run/slurmctld.pid" >/dev/null; then
    jobs=$(SLURM_CONF=$CONF timeout 10 squeue --noheader --format=%A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        log "cancelling jobs $(echo $jobs)"
        # shellcheck disable=SC2086  # one argument per job id
        SLURM_CONF=$CONF timeout 10 scancel $jobs || true
        for _ in $(seq 30); do
            [ -z "$(SLURM_CONF=$CONF timeout 10 squeue --noheader --format=%A 2>/dev/null || true)" ] && break
            sleep 0.5
        done
    fi
fi

stop() {  # stop NAME PIDFILE: TERM, wait up to 15 s, then KILL
    local pid
    if ! pid=$(alive_pid "$1" "$2"); then
        rm -f "$2"
        return 0
    fi
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        log "$1 (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
}

stop slurmd "$DIR/run/slurmd.pid"
stop slurmctld "$DIR/run/slurmctld.pid"
stop munged "$DIR/run/munged.pid"
rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"

if [ "$PURGE" = 1 ]; then
    rm -rf "$DIR"
    log "removed $DIR"
else
    log "stopped; logs kept in $DIR/log and $DIR/munge"
fi
