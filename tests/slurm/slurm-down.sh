#!/bin/bash
# slurm-down.sh STATE_DIR
#
# Stop the private Slurm cluster started by slurm-up.sh STATE_DIR: cancel jobs,
# then stop slurmd, slurmctld, munged and any leftover slurmstepd / job
# processes belonging to this cluster. Safe to call repeatedly, and when some
# or all daemons already died. A process counts as stopped when /proc/PID is
# gone or its state (/proc/PID/stat field 3) is Z (zombie) or X (dead).
#
# Exit: 0 = nothing of this cluster is running any more; 1 = something survived
# SIGKILL (listed on stderr); 2 = usage error. Logs in STATE_DIR/log are kept.

set -u
say() { [ "${SLURM_DOWN_QUIET:-0}" = 1 ] || echo "slurm-down: $*" >&2; }
[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
DIR=$1
case $DIR in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
if [ ! -d "$DIR" ]; then say "$DIR does not exist, nothing to stop"; exit 0; fi
DIR=$(cd "$DIR" && pwd -P)
CONF=$DIR/slurm.conf

# state of a pid: prints R/S/D/Z/X/T..., or nothing if the process is gone
pstate() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }          # comm may contain spaces/parentheses: cut after last ')'
    printf '%s' "${s%% *}"
}
alive() { local st; st=$(pstate "$1"); [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]; }
pcomm() { cat "/proc/$1/comm" 2>/dev/null; }
has_env() {  # $1 pid, $2 exact NAME=VALUE entry
    grep -qzxF -- "$2" "/proc/$1/environ" 2>/dev/null
}

# ------------------------------------------------------------ 1. cancel jobs
ctld_pid=$(cat "$DIR/run/slurmctld.pid" 2>/dev/null)
if [ -f "$CONF" ] && [ -n "$ctld_pid" ] && alive "$ctld_pid" && command -v scancel >/dev/null; then
    export SLURM_CONF=$CONF
    jobs=$(timeout 5 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 5 scancel $jobs >/dev/null 2>&1
        for _ in $(seq 1 30); do    # up to 3 s for slurmstepd to clean up
            [ -z "$(timeout 2 squeue -h -t R,CG -o %A 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

# ------------------------------------------------------------ 2. collect pids
# (a) pids recorded at start-up and current pid files, if the process name matches
declare -A want=()
add_named() {  # $1 pid, $2 expected comm
    [ -n "$1" ] && [ -d "/proc/$1" ] || return 0
    [ "$(pcomm "$1")" = "$2" ] && want[$1]=$2
}
if [ -f "$DIR/run/pids" ]; then
    while read -r name pid; do add_named "$pid" "$name"; done < "$DIR/run/pids"
fi
add_named "$(cat "$DIR/run/slurmd.pid" 2>/dev/null)" slurmd
add_named "$(cat "$DIR/run/slurmctld.pid" 2>/dev/null)" slurmctld
add_named "$(cat "$DIR/munge/munged.pid" 2>/dev/null)" munged

# (b) anything carrying this cluster's marker DPCNN_SLURM_DIR=<dir> (the daemons),
#     slurmstepd with SLURM_CONF=<our conf>, or job processes of this cluster
#     (SLURM_CONF=<our conf> + SLURM_JOB_ID in environ).
#     Never ourselves or our ancestors.
declare -A mine=()
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
    mine[$p]=1
    p=$(s=$(cat "/proc/$p/stat" 2>/dev/null); s=${s##*) }; set -- $s; echo "${2:-}")
done
scan() {  # one grep over all /proc/*/environ instead of a fork per process
    local f pid
    for f in $(grep -lzxF -e "DPCNN_SLURM_DIR=$DIR" /proc/[0-9]*/environ 2>/dev/null); do
        pid=${f#/proc/}; pid=${pid%/environ}
        [ -n "${mine[$pid]:-}" ] || [ -n "${want[$pid]:-}" ] && continue
        alive "$pid" && want[$pid]=$(pcomm "$pid")
    done
    for f in $(grep -lzxF -e "SLURM_CONF=$CONF" /proc/[0-9]*/environ 2>/dev/null); do
        pid=${f#/proc/}; pid=${pid%/environ}
        [ -n "${mine[$pid]:-}" ] || [ -n "${want[$pid]:-}" ] && continue
        alive "$pid" || continue
        if [ "$(pcomm "$pid")" = slurmstepd ]; then
            want[$pid]=slurmstepd     # slurmd hands SLURM_CONF to slurmstepd
        elif grep -qz '^SLURM_JOB_ID=' "/proc/$pid/environ" 2>/dev/null; then
            want[$pid]="job:$(pcomm "$pid")"
        fi
    done
}
add_descendants() {  # job processes that dropped SLURM_CONF from their environment
    local roots=() p c changed=1
    for p in "${!want[@]}"; do [ "${want[$p]}" = slurmstepd ] && roots+=("$p"); done
    [ ${#roots[@]} -gt 0 ] && command -v ps >/dev/null || return 0
    declare -A parent=()
    while read -r c p; do parent[$c]=$p; done < <(ps -eo pid=,ppid=)
    while [ $changed = 1 ]; do
        changed=0
        for c in "${!parent[@]}"; do
            [ -n "${want[$c]:-}" ] || [ -n "${mine[$c]:-}" ] && continue
            p=${parent[$c]}
            if [ -n "${want[$p]:-}" ] && { [ "${want[$p]}" = slurmstepd ] || [ "${want[$p]#job:}" != "${want[$p]}" ]; }; then
                alive "$c" && { want[$c]="job:$(pcomm "$c")"; changed=1; }
            fi
        done
    done
}
scan
add_descendants

# ------------------------------------------------------------ 3. stop them
wait_gone() {  # $1 = timeout in 0.1 s units, rest = pids; returns 0 when all dead
    local n=$1 p left; shift
    while :; do
        left=""
        for p in "$@"; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] && return 0
        [ "$n" -le 0 ] && return 1
        n=$((n - 1)); sleep 0.1
    done
}
stopped=()
term_then_kill() {  # pids...: SIGTERM all, wait up to 5 s, SIGKILL the rest
    local p live=()
    for p in "$@"; do alive "$p" && live+=("$p"); done
    [ ${#live[@]} -gt 0 ] || return 0
    for p in "${live[@]}"; do kill -TERM "$p" 2>/dev/null; stopped+=("${want[$p]}:$p"); done
    if ! wait_gone 50 "${live[@]}"; then
        for p in "${live[@]}"; do
            alive "$p" && { say "${want[$p]} ($p) ignored SIGTERM for 5 s, sending SIGKILL"; kill -KILL "$p" 2>/dev/null; }
        done
        wait_gone 30 "${live[@]}"
    fi
}
pids_of() {  # $1 = class: daemons | munged | other
    local p
    for p in "${!want[@]}"; do
        case $1:${want[$p]} in
            daemons:slurmd|daemons:slurmctld|munged:munged) echo "$p";;
            other:slurmd|other:slurmctld|other:munged) ;;
            other:*) echo "$p";;
        esac
    done
}
# slurm daemons first (graceful: they save state, slurmd leaves running steps alone)
term_then_kill $(pids_of daemons)
# leftover slurmstepd and job processes: jobs were already cancelled above if the
# controller was alive; whatever is left is orphaned, so SIGKILL it (slurmstepd
# blocks SIGTERM, srun needs two SIGINTs).
for pass in 1 2 3; do
    others=$(pids_of other)
    [ -n "$others" ] || break
    for p in $others; do alive "$p" && { kill -KILL "$p" 2>/dev/null; stopped+=("${want[$p]}:$p"); }; done
    wait_gone 30 $others
    want=(); scan; add_descendants   # catch anything forked meanwhile
done
# munged last: slurmctld/slurmd need it while shutting down
want=()
if [ -f "$DIR/run/pids" ]; then
    while read -r name pid; do add_named "$pid" "$name"; done < "$DIR/run/pids"
fi
add_named "$(cat "$DIR/munge/munged.pid" 2>/dev/null)" munged
scan
term_then_kill $(pids_of munged)

# ------------------------------------------------------------ 4. verify
want=()
if [ -f "$DIR/run/pids" ]; then
    while read -r name pid; do add_named "$pid" "$name"; done < "$DIR/run/pids"
fi
scan
survivors=""
for p in "${!want[@]}"; do alive "$p" && survivors="$survivors ${want[$p]}:$p($(pstate "$p"))"; done
if [ -n "$survivors" ]; then
    echo "slurm-down: ERROR: still running:$survivors" >&2
    exit 1
fi
rm -f "$DIR/run/pids" "$DIR/run/"*.pid "$DIR/munge/munged.pid" "$DIR/munge/munged.sock" "$DIR/munge/munged.sock.lock" 2>/dev/null
if [ ${#stopped[@]} -gt 0 ]; then say "stopped: ${stopped[*]}"; else say "nothing was running"; fi
exit 0
