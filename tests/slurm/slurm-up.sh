#!/bin/bash
# slurm-up.sh STATE_DIR (part of the dpcnn test suite: tests/test_slurm.sh)
#
# Start a private single-node Slurm cluster (munged + slurmctld + slurmd) on
# localhost. Everything (configs, key, sockets, spool, logs, pid files) lives
# under STATE_DIR; nothing is written to /etc, /run/munge, /var/spool/slurm...
#
# Exit codes: 0 = cluster up (prints the `export SLURM_CONF=...` line on stdout)
#             2 = usage error
#            77 = Slurm cannot be started here (skip); everything started by
#                 this script has been stopped again.
#
# Optional environment:
#   SLURM_UP_CPUS=N       declare N CPUs on the node (default: real count; more
#                         than real uses SlurmdParameters=config_overrides)
#   SLURM_UP_PORT=P       use SlurmctldPort=P, SlurmdPort=P+1 (default: derived
#                         from a hash of STATE_DIR, skipping ports in use)
#   SLURM_UP_TIMEOUT=S    seconds to wait for each daemon (default 30)
#   SLURM_UP_SMOKE=0      skip the `srun true` smoke test (default 1)
#   SLURM_UP_QUIET=1      only print the export line on stdout
#   SLURM_UP_CRED_EXPIRE=S  AuthInfo cred_expire (default 10, min 5, Slurm's own
#                         default 120); a requeued job waits this long + 1 s
#   SLURM_UP_EXTRA_CONF=..  extra slurm.conf lines (newline separated), placed
#                         before the NodeName line; later duplicates override

set -u
umask 022

SKIP=77
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { [ "${SLURM_UP_QUIET:-0}" = 1 ] || echo "slurm-up: $*" >&2; }
usage() { echo "usage: $0 STATE_DIR" >&2; exit 2; }

[ $# -eq 1 ] && [ -n "$1" ] || usage
DIR=$1

STARTED=0
skip() {
    echo "slurm-up: SKIP: $*" >&2
    if [ "$STARTED" = 1 ]; then
        for f in slurmctld slurmd; do
            [ -s "$DIR/log/$f.log" ] && { echo "---- tail $DIR/log/$f.log" >&2; tail -n 15 "$DIR/log/$f.log" >&2; }
        done
        [ -s "$DIR/munge/munged.log" ] && { echo "---- tail $DIR/munge/munged.log" >&2; tail -n 5 "$DIR/munge/munged.log" >&2; }
        SLURM_DOWN_QUIET=1 "$HERE/slurm-down.sh" "$DIR" >/dev/null 2>&1 || true
    fi
    exit $SKIP
}

# ------------------------------------------------------------------ checks
for b in munged munge unmunge slurmctld slurmd sinfo scontrol sbatch srun squeue scancel runuser; do
    command -v "$b" >/dev/null 2>&1 || skip "required program '$b' not found (apt-get install slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || skip "must run as root (munged must be started as user 'munge', slurmd as root)"
id munge >/dev/null 2>&1 || skip "system user 'munge' does not exist (install the munge package)"
[ -d "$HERE" ] && [ -x "$HERE/slurm-down.sh" ] || skip "slurm-down.sh not found next to $0"

case $DIR in
    /*) ;;
    *) DIR=$(pwd)/$DIR ;;
esac
case $DIR in
    *[$'\n\t'\"\#=,\;\\]*)
        skip "state dir '$DIR' contains a newline, tab or one of \" # = , ; \\ (slurm.conf cannot express such paths)";;
esac
DIR=${DIR%/}
# Unix socket paths are limited to 108 bytes; slurmd puts
# "<spool>/<node>_<jobid>.<stepid>" sockets under the spool dir.
NODE=$(hostname -s 2>/dev/null || hostname)
NODE=${NODE:-localhost}
[ ${#DIR} -le 60 ] || skip "state dir path too long (${#DIR} > 60 chars; unix socket paths would exceed 108 bytes)"

mkdir -p "$DIR" || skip "cannot create $DIR"
DIR=$(cd "$DIR" && pwd -P) || skip "cannot enter $DIR"

# If a cluster from an earlier run is still (partly) alive there, stop it.
if [ -e "$DIR/run/pids" ] || [ -e "$DIR/munge/munged.pid" ] || [ -e "$DIR/run/slurmctld.pid" ]; then
    say "stopping leftovers of a previous cluster in $DIR"
    SLURM_DOWN_QUIET=1 "$HERE/slurm-down.sh" "$DIR" >/dev/null 2>&1 || true
fi

# munged runs as user munge: it must be able to traverse every parent dir.
chmod a+rx "$DIR" 2>/dev/null
runuser -u munge -- test -x "$DIR" ||
    skip "user 'munge' cannot traverse $DIR (a parent directory is not world-searchable)"

# ------------------------------------------------------------------ layout
rm -rf "$DIR/munge" "$DIR/spool" "$DIR/run" "$DIR/tmp" "$DIR/log.prev"
[ -d "$DIR/log" ] && mv "$DIR/log" "$DIR/log.prev"   # keep the previous run's logs
mkdir -p "$DIR/munge" "$DIR/spool/ctld" "$DIR/spool/d" "$DIR/run" "$DIR/log" "$DIR/tmp" || skip "cannot create dirs in $DIR"
chmod 0755 "$DIR/spool" "$DIR/run" "$DIR/log"
chmod 1777 "$DIR/tmp"     # TmpFS: the pmix plugin puts per-step dirs here instead of /tmp
chmod 0700 "$DIR/spool/ctld" "$DIR/spool/d"
STARTED=1   # from here on, failure triggers slurm-down.sh
: > "$DIR/run/pids"

# ------------------------------------------------------------------ ports
port_in_use() {  # $1 = port; checks /proc/net/tcp{,6} for a listening socket on it
    local hex
    hex=$(printf '%04X' "$1")
    # field 2 = local addr:port, field 4 = state (0A = LISTEN)
    awk -v p="$hex" 'NR>1 && $4=="0A" { n=split($2,a,":"); if (a[n] == p) f=1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
if [ -n "${SLURM_UP_PORT:-}" ]; then
    PORT=$SLURM_UP_PORT
else
    h=$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
    PORT=$(( 20000 + (h % 5000) * 2 ))
    for _ in $(seq 1 50); do
        port_in_use "$PORT" || port_in_use $((PORT + 1)) || break
        PORT=$((PORT + 2)); [ $PORT -lt 30000 ] || PORT=20000
    done
fi
port_in_use "$PORT" && skip "port $PORT already in use"
port_in_use $((PORT + 1)) && skip "port $((PORT + 1)) already in use"

# ------------------------------------------------------------------ node
HWLINE=$(slurmd -C 2>/dev/null | head -n 1)
REALCPUS=$(nproc 2>/dev/null || echo 1)
topo=""
for k in Boards SocketsPerBoard CoresPerSocket ThreadsPerCore; do
    v=$(printf '%s\n' "$HWLINE" | tr ' ' '\n' | sed -n "s/^$k=//p")
    [ -n "$v" ] && topo="$topo $k=$v"
done
HWCPUS=$(printf '%s\n' "$HWLINE" | tr ' ' '\n' | sed -n 's/^CPUs=//p')
HWCPUS=${HWCPUS:-$REALCPUS}
CPUS=${SLURM_UP_CPUS:-$HWCPUS}
SLURMD_PARAMS=""
if [ "$CPUS" != "$HWCPUS" ]; then
    topo=""   # a custom CPU count does not match the probed topology
    SLURMD_PARAMS="SlurmdParameters=config_overrides"
fi
MEM=$(printf '%s\n' "$HWLINE" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
MEM=${MEM:-1000}
MEM=$(( MEM > 2000 ? MEM - 1000 : MEM ))   # leave headroom: slurmd drains a node with less memory than declared

# ------------------------------------------------------------------ munge
KEY=$DIR/munge/munge.key
SOCK=$DIR/munge/munged.sock
if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$KEY" --force >/dev/null 2>&1 || rm -f "$KEY"
fi
[ -s "$KEY" ] || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none || skip "cannot create munge key"
chown -R munge:munge "$DIR/munge" && chmod 0755 "$DIR/munge" && chmod 0400 "$KEY" ||
    skip "cannot chown munge dir"
runuser -u munge -- env DPCNN_SLURM_DIR="$DIR" munged \
    --socket="$SOCK" --key-file="$KEY" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >"$DIR/log/munged.out" 2>&1 ||
    skip "munged failed to start: $(cat "$DIR/log/munged.out")"
# munged daemonizes: parent exits after the socket is ready and pid file written
[ -s "$DIR/munge/munged.pid" ] && echo "munged $(cat "$DIR/munge/munged.pid")" >> "$DIR/run/pids"
munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 ||
    skip "munge credential round-trip failed on $SOCK"

# ------------------------------------------------------------------ configs
CONF=$DIR/slurm.conf
# cred_expire (min 5) is also the delay before a requeued job may start again
# (BeginTime = requeue time + cred_expire + 1); Slurm's default is 120 s.
CRED_EXPIRE=${SLURM_UP_CRED_EXPIRE:-10}
cat > "$CONF" <<EOF
# generated by slurm-up.sh -- private single-node cluster in $DIR
ClusterName=dpcnn$(( PORT ))
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo="socket=$SOCK,cred_expire=$CRED_EXPIRE"
StateSaveLocation="$DIR/spool/ctld"
SlurmdSpoolDir="$DIR/spool/d"
TmpFS="$DIR/tmp"
SlurmctldPidFile="$DIR/run/slurmctld.pid"
SlurmdPidFile="$DIR/run/slurmd.pid"
SlurmctldLogFile="$DIR/log/slurmctld.log"
SlurmdLogFile="$DIR/log/slurmd.log"
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig="$DIR/plugstack.conf"
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
# sched_interval=1: without it the first batch job waits ~3 s after slurmctld
# start (batch_sched_delay is only parsed in the first scheduling pass) and a
# requeued job waits for the next backfill pass once its BeginTime has passed.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
EnforcePartLimits=ALL
JobRequeue=1
ReturnToService=2
KillWait=5
OverTimeLimit=0
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=60
MessageTimeout=10
$SLURMD_PARAMS
${SLURM_UP_EXTRA_CONF:-}
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS$topo RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
: > "$DIR/plugstack.conf"
cat > "$DIR/cgroup.conf" <<EOF
# slurmd 22.05 always loads a cgroup plugin; cgroup/v1 is the one that
# tolerates hosts without usable cgroups (there is no "disabled" in 22.05).
CgroupPlugin=cgroup/v1
CgroupAutomount=no
IgnoreSystemd=yes
EOF
printf 'export SLURM_CONF=%q\n' "$CONF" > "$DIR/env.sh"
export SLURM_CONF=$CONF

# ------------------------------------------------------------------ daemons
TIMEOUT=${SLURM_UP_TIMEOUT:-30}
wait_for() {  # $1 = description, rest = command; polls every 0.1 s
    local what=$1 i; shift
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    skip "timed out after ${TIMEOUT}s waiting for $what (node state: $(sinfo -h -o '%T %E' 2>/dev/null))"
}
pid_alive() {  # running = /proc/PID exists and state is not Z (zombie) / X (dead)
    local s
    [ -n "$1" ] && s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    case ${s%% *} in Z|X) return 1;; esac
    return 0
}

# stdin/stdout/stderr of the daemons must not be the caller's (a harness reading
# our output through a pipe would otherwise wait for EOF forever)
DPCNN_SLURM_DIR=$DIR slurmctld -c -f "$CONF" </dev/null >"$DIR/log/slurmctld.out" 2>&1 ||
    skip "slurmctld failed to start: $(cat "$DIR/log/slurmctld.out")"
wait_for "slurmctld pid file" test -s "$DIR/run/slurmctld.pid"
echo "slurmctld $(cat "$DIR/run/slurmctld.pid")" >> "$DIR/run/pids"
ctld_ready() {
    pid_alive "$(cat "$DIR/run/slurmctld.pid" 2>/dev/null)" || skip "slurmctld died during startup"
    scontrol ping
}
wait_for "slurmctld to answer" ctld_ready

DPCNN_SLURM_DIR=$DIR slurmd -f "$CONF" </dev/null >"$DIR/log/slurmd.out" 2>&1 ||
    skip "slurmd failed to start: $(cat "$DIR/log/slurmd.out")"
wait_for "slurmd pid file" test -s "$DIR/run/slurmd.pid"
echo "slurmd $(cat "$DIR/run/slurmd.pid")" >> "$DIR/run/pids"

node_ready() {
    pid_alive "$(cat "$DIR/run/slurmd.pid" 2>/dev/null)" || skip "slurmd died during startup"
    case $(sinfo -h -n "$NODE" -o %T 2>/dev/null) in
        idle|mixed|allocated) return 0;;
    esac
    return 1
}
wait_for "node $NODE to become idle" node_ready

if [ "${SLURM_UP_SMOKE:-1}" = 1 ]; then
    out=$(timeout 30 srun -N1 -n1 -t 1 -J slurm-up-smoke /bin/echo slurm-up-ok 2>&1)
    [ "$out" = slurm-up-ok ] || skip "smoke test 'srun echo' failed: $out"
fi

say "cluster up in $DIR (node $NODE, $CPUS CPUs, ports $PORT/$((PORT + 1)))"
cat "$DIR/env.sh"
exit 0
