#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine, on loopback, for the cluster test
# (tests/workflow/test_cluster.py) and for trying `snakemake --profile workflow/profiles/slurm`.
#
#   eval "$(tests/cluster/start-slurm.sh)"     # starts (or reuses) it; exports SLURM_CONF
#                                               # and PATH (client wrappers, see below)
#   tests/cluster/stop-slurm.sh                 # ends the daemons this script started
#
# Needs root (slurmd runs jobs as their user; munged runs as the munge user). Installs
# Debian's slurmctld, slurmd, slurm-client and munge when they are missing. Everything it
# writes (config, munge key, state, spool, logs, pid files, sockets) lives in
# $TRAINMAP_SLURM_DIR (default /tmp/trainmap-slurm), so it never touches /etc/slurm,
# /etc/munge or a munged/slurmd the machine may already run: it uses its own munge socket
# and its own ports.
#
# stdout carries only `export NAME=value` lines (so `eval` works); progress and errors
# go to stderr. Running it again while the cluster is up reuses it; leftovers of a dead
# or half-started cluster are stopped and cleared first.
#
# Settings (environment):
#   TRAINMAP_SLURM_DIR        state directory                  (/tmp/trainmap-slurm)
#   TRAINMAP_SLURM_PARTITION  name of the one partition        (debug)
#   TRAINMAP_SLURM_PORT       slurmctld port; slurmd uses +1   (16817: not SLURM's
#                             default 6817, so a site SLURM on this machine is left alone)
#   TRAINMAP_SLURM_CPUS       CPUs the node offers             (all: nproc)
#   TRAINMAP_SLURM_TIMEOUT    seconds to wait for an idle node (60)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
DIR=${TRAINMAP_SLURM_DIR:-/tmp/trainmap-slurm}
PARTITION=${TRAINMAP_SLURM_PARTITION:-debug}
CTLD_PORT=${TRAINMAP_SLURM_PORT:-16817}
SLURMD_PORT=$((CTLD_PORT + 1))
CPUS=${TRAINMAP_SLURM_CPUS:-$(nproc)}
TIMEOUT=${TRAINMAP_SLURM_TIMEOUT:-60}

log() { echo "start-slurm: $*" >&2; }
die() { echo "start-slurm: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd and munged need it)"

# One start at a time on this machine (two test sessions starting together would clear
# each other's files and race for the ports): lock this script itself, which leaves no
# lock file behind. The daemons get `9<&-`: one that inherited the descriptor would hold
# the lock for as long as it runs (munged did, and the next start waited forever).
exec 9<"$here/start-slurm.sh"
flock 9

CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
NODE=$(hostname -s)

print_env() {
    local path=$PATH
    case ":$PATH:" in *":$DIR/bin:"*) ;; *) path=$DIR/bin:$PATH ;; esac
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export PATH=%q\n' "$path"
}

# --- packages --------------------------------------------------------------------------
install_packages() {
    local missing=()
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} from Debian packages"
    # The packages' own services must not start: they would read /etc/slurm (absent) or
    # take the system munge socket. A policy-rc.d that says 101 ("not allowed") keeps
    # invoke-rc.d and deb-systemd-invoke from starting them; it is removed right after,
    # and only when this script put it there.
    local policy=/usr/sbin/policy-rc.d placed=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && placed=1
    fi
    local rc=0 aptlog
    aptlog=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1 || rc=$?
    [ "$placed" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || { cat "$aptlog" >&2; rm -f "$aptlog"; die "apt-get install ${missing[*]} failed (exit $rc)"; }
    rm -f "$aptlog"
}

# --- reuse a running cluster -----------------------------------------------------------
# A pid file names a live process of the expected program (guards against PID reuse).
alive() {  # alive NAME PIDFILE
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2")
    [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_state() {
    SLURM_CONF=$CONF timeout 10 sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null | head -n1
}

install_packages

if [ -f "$CONF" ] && alive munged "$DIR/run/munged.pid" && alive slurmctld "$DIR/run/slurmctld.pid" \
        && alive slurmd "$DIR/run/slurmd.pid"; then
    case $(node_state) in
        idle|mix|alloc|comp)
            log "cluster already running in $DIR; reusing it"
            print_env
            exit 0 ;;
    esac
fi

# --- a fresh state directory -----------------------------------------------------------
if [ -e "$DIR" ]; then
    # Only ever clear a directory this script made (it leaves a marker), never, say, a
    # mistyped TRAINMAP_SLURM_DIR=/home.
    [ -f "$DIR/.trainmap-slurm" ] || die "$DIR exists and was not made by this script; set TRAINMAP_SLURM_DIR"
    log "stopping and clearing leftovers of a previous cluster in $DIR"
    TRAINMAP_SLURM_DIR=$DIR "$here/stop-slurm.sh" >&2
    rm -rf "$DIR"
fi
mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
touch "$DIR/.trainmap-slurm"
chmod 755 "$DIR"

show_logs() {
    local f
    for f in "$DIR/munge/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2 2>/dev/null || echo "(missing)" >&2
    done
}

# From here on a failure shows the daemons' logs and stops what did start (the logs
# stay in $DIR), so a failed start leaves no daemon behind.
fail() {
    show_logs
    TRAINMAP_SLURM_DIR=$DIR "$here/stop-slurm.sh" >&2 || true
    die "$*"
}

# --- munge -----------------------------------------------------------------------------
# A private key and socket: munged insists that its key, socket directory, log and pid
# files belong to the user it runs as and are not writable by others.
chown munge:munge "$DIR/munge"
chmod 755 "$DIR/munge"
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$DIR/munge/munge.key"
chmod 400 "$DIR/munge/munge.key"
log "starting munged"
runuser -u munge -- munged 9<&- \
    --key-file="$DIR/munge/munge.key" \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    --num-threads=2 \
    || fail "munged failed to start"
# The munge user owns its pid file; keep a root-owned copy with the others for stop-slurm.
cp "$DIR/munge/munged.pid" "$DIR/run/munged.pid"
munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET" >/dev/null \
    || fail "munge credential round trip failed"

# --- slurm.conf ------------------------------------------------------------------------
# Memory: 90 % of what the kernel reports, so slurmd (which checks RealMemory against the
# hardware and drains the node when the config asks for more) always accepts it.
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
cat >"$CONF" <<EOF
# Generated by tests/cluster/start-slurm.sh: one node ($NODE), loopback only.
ClusterName=trainmap
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups (and no cgroup.conf: 22.05 cannot disable its cgroup plugin and slurmd
# would not start), no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# No mail on this machine; the default /bin/mail is absent and slurmctld says so.
MailProg=/bin/true

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without accounting, finished jobs are only known to slurmctld: keep them for a day so
# \`squeue --states=all\` (the executor's status query here) still reports their end state.
MinJobAge=86400
ReturnToService=2

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- client commands that always find this cluster -----------------------------------
# Snakemake's SLURM job runs `snakemake --executor slurm-jobstep`, which starts the rule
# with `srun` after deleting every SLURM_* variable but the job's identity, SLURM_CONF
# included (snakemake-executor-plugin-slurm-jobstep 0.6). A real site keeps slurm.conf
# where srun looks without being told (/etc/slurm, or configless), but this cluster's
# config is private, so that srun failed with "fetch_config: DNS SRV lookup failed".
# Rather than writing /etc/slurm/slurm.conf (machine-wide, and a site's own file may be
# there), $DIR/bin holds wrappers that point each client at this config; callers put it
# first on PATH, and jobs inherit that PATH.
mkdir -p "$DIR/bin"
for cmd in srun sbatch salloc squeue sinfo scancel scontrol sacct sacctmgr sshare sstat; do
    real=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -vxF "$DIR/bin" | paste -sd:) command -v "$cmd" || true)
    [ -n "$real" ] || continue
    printf '#!/bin/sh\n# %s for the trainmap test cluster (see tests/cluster/start-slurm.sh)\nexport SLURM_CONF=%q\nexec %q "$@"\n' \
        "$cmd" "$CONF" "$real" >"$DIR/bin/$cmd"
    chmod 755 "$DIR/bin/$cmd"
done

# --- slurmctld and slurmd --------------------------------------------------------------
log "starting slurmctld and slurmd (ports $CTLD_PORT, $SLURMD_PORT)"
SLURM_CONF=$CONF slurmctld -f "$CONF" 9<&- || fail "slurmctld failed to start"
SLURM_CONF=$CONF slurmd -f "$CONF" 9<&- || fail "slurmd failed to start"

log "waiting up to ${TIMEOUT}s for node $NODE to be idle"
deadline=$((SECONDS + TIMEOUT))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(node_state || true)
    [ "$state" = idle ] && break
    for d in slurmctld slurmd; do
        alive "$d" "$DIR/run/$d.pid" || { sleep 1; alive "$d" "$DIR/run/$d.pid"; } \
            || fail "$d exited while starting"
    done
    sleep 1
done
if [ "$state" != idle ]; then
    SLURM_CONF=$CONF sinfo -R >&2 || true
    fail "node $NODE is '${state:-unknown}', not idle, after ${TIMEOUT}s"
fi
log "cluster up: node $NODE idle in partition $PARTITION ($CPUS CPUs, $MEM_MB MB)"
print_env
