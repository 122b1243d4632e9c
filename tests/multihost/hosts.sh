# hosts.sh: emulated hosts on this one machine, for tests of dpcnn across nodes.
#
# Sourced by a test (tests/test_multihost.sh). mh_enter runs the test again
# inside private namespaces:
#
#   unshare --user --map-root-user --mount --pid --fork --mount-proc --kill-child --net
#
# (as root inside a chroot, where the kernel refuses user namespaces, the same
# without --user: root needs none). mh_setup puts a tmpfs on /run and on /tmp
# (unless the build tree lives there). Nothing made inside is visible outside,
# no packet can leave it, and when the test ends, however it ends (pass, fail,
# hang, SIGKILL), the kernel removes every namespace, interface, mount and
# process of it: there is nothing to clean up.
#
# mh_setup N then makes the hosts h1 .. hN: each a network namespace with its
# own hostname (UTS namespace) and mount namespace, the address 10.77.0.N/24
# on eth0, and loopback. Each eth0 is one end of a veth pair whose other end,
# vhN, is a port of the bridge br0 in a namespace of its own, the switch "sw":
#
#     h1:eth0 <-veth-> sw:vh1 --+
#     h2:eth0 <-veth-> sw:vh2 --+-- sw:br0
#     h3:eth0 <-veth-> sw:vh3 --+
#
# A host is held by one process (sleep) in its namespaces; mh_on joins them
# with nsenter. The hosts share the file system, as cluster nodes share a
# network file system, but for what a test makes private (mh_private). One
# /etc/hosts, bind-mounted over the real one inside the private mount
# namespace only, names them all. mpirun runs on h1 (mh_mpirun) and starts
# its daemons on the others through $MH/agent, which behaves like ssh:
# `agent HOST WORDS...` joins the words with spaces and runs them with sh -c
# on HOST. Ranks on different hosts talk TCP only (the shared-memory
# transport, vader, serves ranks on one host).
#
# Faults go through the switch or the processes (this kernel has no netem and
# no firewall): mh_cut HOST detaches the host's port from the bridge, a silent
# partition (the carrier stays up, nobody sees an error, packets vanish);
# mh_heal HOST puts it back; mh_pids HOST lists the host's processes.
#
# Needs: unshare and nsenter (util-linux), mount, ip (iproute2).

MH_SUBNET=10.77.0
MH_MCA_IF=$MH_SUBNET.0/24

# mh_enter SCRIPT ARGS...: run SCRIPT again inside the private namespaces
# (once: the second time it returns); exit 77 with the reason where they
# cannot be made.
mh_enter() {
    [ -n "${MH_INSIDE:-}" ] && return 0
    for p in unshare nsenter ip mount; do
        command -v "$p" >/dev/null 2>&1 ||
            { echo "SKIP: $p not found (apt-get install util-linux mount iproute2)"; exit 77; }
    done
    # What the harness needs, tried first: a private mount, a veth pair, a tmpfs.
    probe='ip link add mh0 type veth peer name mh1 && mount -t tmpfs tmpfs /run'
    ns="--mount --propagation private --pid --fork --mount-proc --net"
    # shellcheck disable=SC2086
    if why=$(unshare --user --map-root-user $ns sh -c "$probe" 2>&1); then
        ns="--user --map-root-user $ns"
    elif [ "$(id -u)" = 0 ] && why2=$(unshare $ns sh -c "$probe" 2>&1); then
        : # root in a chroot: no user namespace, and none needed
    else
        echo "SKIP: cannot make private user, mount, pid and network namespaces here: $why" \
            "${why2:+(and as root without a user namespace: $why2)}"
        case ${why2:-} in *propagation*)
            echo "SKIP: (in a chroot whose / is not a mount point: make it one with" \
                "mount --bind ROOT ROOT before entering it)" ;;
        esac
        exit 77
    fi
    # shellcheck disable=SC2086
    MH_INSIDE=1 exec unshare $ns --kill-child sh "$@"
}

mh_fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# mh_setup N: the switch and the hosts h1 .. hN, /etc/hosts, the agent. Sets
# MH (the harness's own directory) and TMPDIR (scratch every host sees).
mh_setup() {
    n=$1
    mount -t tmpfs -o mode=755 tmpfs /run
    case "$PWD/ $(cd "${srcdir:-.}" && pwd)/" in
    /tmp/* | *" /tmp/"*) ;; # the build or source tree is under /tmp: keep it visible
    *) mount -t tmpfs -o mode=1777 tmpfs /tmp ;;
    esac
    MH=/run/mh
    mkdir -p "$MH" /run/tmp
    export TMPDIR=/run/tmp MH
    ip link set lo up
    {
        echo "127.0.0.1 localhost"
        i=1
        while [ "$i" -le "$n" ]; do echo "$MH_SUBNET.$i h$i"; i=$((i + 1)); done
    } >"$MH/hosts"
    mount --bind "$MH/hosts" /etc/hosts
    # The holders: unshare execs sleep inside the new namespaces, so $! is a
    # process in them. A host also sets its own name (its UTS namespace):
    # with hostname(1), as /proc/sys is not writable in a user namespace.
    unshare --net sleep infinity &
    echo $! >"$MH/sw.pid"
    i=1
    while [ "$i" -le "$n" ]; do
        unshare --net --uts --mount --propagation private \
            sh -c "{ hostname h$i || echo h$i >/proc/sys/kernel/hostname; } && exec sleep infinity" &
        echo $! >"$MH/h$i.pid"
        i=$((i + 1))
    done
    i=0 # until every holder is in its namespaces
    until [ "$(cat "/proc/$(cat "$MH/h$n.pid")/comm")" = sleep ] &&
        [ "$(cat "/proc/$(cat "$MH/sw.pid")/comm")" = sleep ]; do
        i=$((i + 1))
        [ $i -lt 200 ] || mh_fail "the host namespaces did not come up"
        sleep 0.01
    done
    mh_sw ip link add br0 type bridge
    mh_sw ip link set br0 up
    i=1
    while [ "$i" -le "$n" ]; do
        ip link add "vh$i" type veth peer name "eth0h$i"
        ip link set "vh$i" netns "$(cat "$MH/sw.pid")"
        ip link set "eth0h$i" netns "$(cat "$MH/h$i.pid")"
        mh_sw ip link set "vh$i" master br0 up
        mh_on "h$i" ip link set lo up
        mh_on "h$i" ip link set "eth0h$i" name eth0
        mh_on "h$i" ip addr add "$MH_SUBNET.$i/24" dev eth0
        mh_on "h$i" ip link set eth0 up
        [ "$(mh_on "h$i" cat /proc/sys/kernel/hostname)" = "h$i" ] || mh_fail "h$i has no hostname"
        i=$((i + 1))
    done
    cat >"$MH/agent" <<EOF
#!/bin/sh
# ssh HOST WORDS... for mpirun, on the emulated hosts
host=\$1
shift
pid=\$(cat "$MH/\$host.pid" 2>/dev/null) || { echo "agent: no host \$host" >&2; exit 255; }
exec nsenter -t "\$pid" --net --uts --mount --root --wd=/ sh -c "\$*"
EOF
    chmod +x "$MH/agent"
}

# mh_on HOST CMD...: run CMD on HOST (in its namespaces, in this directory).
mh_on() {
    h=$1
    shift
    nsenter -t "$(cat "$MH/$h.pid")" --net --uts --mount --root --wd="$PWD" "$@"
}
mh_sw() { nsenter -t "$(cat "$MH/sw.pid")" --net "$@"; }

# mh_private DIR HOST...: DIR becomes, on each HOST named, an empty read-only
# directory: those hosts can neither see nor write what the others put there.
mh_private() {
    d=$1
    shift
    mkdir -p "$d"
    for h in "$@"; do
        mh_on "$h" mount -t tmpfs -o ro,mode=555 tmpfs "$d"
    done
}

mh_cut() { mh_sw ip link set "vh${1#h}" nomaster; }
mh_heal() { mh_sw ip link set "vh${1#h}" master br0; }

# mh_pids HOST: the live processes on HOST but its holder. (Zombies do not
# count: the test's shell is this pid namespace's init, and reaps them late.)
mh_pids() {
    hp=$(cat "$MH/$1.pid")
    ns=$(readlink "/proc/$hp/ns/net")
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$hp" ] && continue
        [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$ns" ] || continue
        st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$p/status" 2>/dev/null)
        [ -n "$st" ] && [ "$st" != Z ] && echo "$p"
    done
    return 0
}

# mh_spawn HOST CMD...: CMD on HOST in the background; MH_PID is its pid
# (nsenter execs CMD: a signal sent to MH_PID reaches CMD itself).
mh_spawn() {
    h=$1
    shift
    nsenter -t "$(cat "$MH/$h.pid")" --net --uts --mount --root --wd="$PWD" "$@" &
    MH_PID=$!
}

# mpirun's options on the emulated hosts: its daemons started through the
# agent; the ob1 messaging layer (named: Debian's Open MPI also has UCX), TCP
# between hosts, both the runtime's and MPI's traffic on the test subnet only.
MH_MPIRUN="mpirun --mca plm_rsh_agent /run/mh/agent --mca pml ob1 --mca btl tcp,vader,self
 --mca btl_tcp_if_include $MH_MCA_IF --mca oob_tcp_if_include $MH_MCA_IF"

# mh_mpirun ARGS...: mpirun on h1 (mh_spawn h1 $MH_MPIRUN ARGS... to start it
# in the background).
mh_mpirun() {
    # shellcheck disable=SC2086
    mh_on h1 $MH_MPIRUN "$@"
}
