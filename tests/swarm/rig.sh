#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine: one network namespace, UTS and mount
# namespace and dockerd per node, all on one bridge. Needs root, docker.io, iproute2,
# iptables, util-linux (nsenter, unshare). See ../shared/notes/multi-node-swarm.md.
#
#   tests/swarm/rig.sh up [MANAGERS] [WORKERS]   (default 3 managers, 2 workers)
#   tests/swarm/rig.sh down
#   tests/swarm/rig.sh docker N ARGS...           docker CLI against node N
#   tests/swarm/rig.sh cut N | restore N          pull / plug node N's cable
#   tests/swarm/rig.sh loss N P [in|out|both]     node N's link drops a share P (0..1) of its
#                                                 packets, inbound, outbound or both (default)
#   tests/swarm/rig.sh clear N                    no more loss on node N's link
#   tests/swarm/rig.sh engine-kill N | engine-start N   crash node N's dockerd (SIGKILL) / start it
#                                                 (returns once it runs, not once it is ready)
#   tests/swarm/rig.sh freeze N [all|engine]      SIGSTOP every process of node N (a gray
#                                                 failure: its kernel still answers TCP), or
#                                                 only its engine (dockerd and containerd)
#   tests/swarm/rig.sh thaw N [all|engine]        SIGCONT them again
#   tests/swarm/rig.sh deafen N | hear N          drop / pass node N's traffic with the
#                                                 gateways' broker address (172.30.0.2): the
#                                                 gateway there is cut from the broker alone,
#                                                 its agent still reaches it at 172.30.0.1
#
# Nodes are node1..nodeN with addresses 172.30.0.11.., on bridge lmbr0 (172.30.0.1, and
# 172.30.0.2: the address the gateways reach the broker at).
set -euo pipefail

BR=lmbr0
NET=172.30.0
ROOT=${LEAKMON_SWARM_ROOT:-/var/lib/leakmon-swarm}
RUN=/run/lmsw

ns() { echo "lmn$1"; }
# iptables in a node's network namespace (this kernel has no sch_netem: the statistic match
# drops a random share of packets instead; loopback is spared).
niptables() { local n=$1; shift; nsenter --net="/var/run/netns/$(ns "$n")" iptables "$@"; }

loss() {
    local n=$1 p=$2 dir=${3:-both}
    clear_loss "$n"
    case "$dir" in
        in | both) niptables "$n" -A INPUT ! -i lo -m statistic --mode random --probability "$p" -j DROP ;;
    esac
    case "$dir" in
        out | both) niptables "$n" -A OUTPUT ! -o lo -m statistic --mode random --probability "$p" -j DROP ;;
    esac
}

# In the raw table, so that `clear` (which flushes the filter table's chains) keeps it.
deafen() {
    hear "$1"
    niptables "$1" -t raw -A OUTPUT -d "$NET.2" -j DROP
    niptables "$1" -t raw -A PREROUTING -s "$NET.2" -j DROP
}

hear() {
    niptables "$1" -t raw -F OUTPUT
    niptables "$1" -t raw -F PREROUTING
}

clear_loss() {
    niptables "$1" -F INPUT
    niptables "$1" -F OUTPUT
}
sock() { echo "unix://$RUN/n$1/docker.sock"; }
ndocker() { local n=$1; shift; docker -H "$(sock "$n")" "$@"; }

node_up() {
    local n=$1 addr="$NET.$((10 + $1))"
    ip netns add "$(ns "$n")"
    ip link add "lmv$n" type veth peer name eth0 netns "$(ns "$n")"
    ip link set "lmv$n" master $BR up
    ip -n "$(ns "$n")" addr add "$addr/24" dev eth0
    ip -n "$(ns "$n")" link set eth0 up
    ip -n "$(ns "$n")" link set lo up
    ip -n "$(ns "$n")" route add default via "$NET.1"
    mkdir -p "$ROOT/n$n/data" "$RUN/n$n"
    # By hostname too: a stack can mount /run/lmsw/{{.Node.Hostname}}/docker.sock.
    ln -sfn "n$n" "$RUN/node$n"
    # its Swarm node certificate, where a stack can name it by hostname (deploy/stack.yml)
    ln -sfn "$ROOT/n$n/data/swarm/certificates" "$RUN/n$n/swarm-certificates"
    # A resolver that refuses at once: image pulls fail fast and the local image is used.
    echo "nameserver 127.0.0.1" >"$RUN/n$n/resolv.conf"
    engine_start "$n"
}

# The node's dockerd (it starts its own containerd under its exec root).
engine_start() {
    local n=$1 old
    # dockerd refuses to start over a pid file whose process it thinks runs
    old=$(cat "$RUN/n$n/docker.pid" 2>/dev/null || true)
    if [ -n "$old" ] && ! alive "$old"; then rm -f "$RUN/n$n/docker.pid"; fi
    # nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts dockerd needs).
    # / shared inside the node (as on a systemd host), so containers may bind it with rslave.
    setsid nsenter --net="/var/run/netns/$(ns "$n")" unshare --uts --mount sh -c "
        mount --make-rshared /
        hostname node$n
        mount --bind $RUN/n$n/resolv.conf /etc/resolv.conf
        exec dockerd --data-root $ROOT/n$n/data --exec-root $RUN/n$n/exec \
            --pidfile $RUN/n$n/docker.pid -H $(sock "$n") \
            --bridge=none --iptables=false --ip-masq=false
    " >>"$RUN/n$n/dockerd.log" 2>&1 </dev/null &
}

# A crash of node n's engine: SIGKILL to dockerd alone (containerd and the containers live on,
# as with docker.service's KillMode=process); `engine-start` brings it back.
engine_kill() {
    local pid
    pid=$(cat "$RUN/n$1/docker.pid")
    kill -9 "$pid"
    # gone (or a zombie) before we return, so a restart does not find it "running"
    for _ in $(seq 1 100); do
        alive "$pid" || return 0
        sleep 0.1
    done
}

# The processes of node n: `engine` is its dockerd and containerd; `all` is every process of
# the node: the engine and all it started (containerd's shims name the node's exec root, the
# containers descend from them) and whatever else runs in its network namespace (the agent,
# the gateway).
node_pids() {
    local n=$1 what=${2:-all} roots pid
    pid=$(cat "$RUN/n$n/docker.pid" 2>/dev/null || true)
    roots="$pid $(pgrep -d ' ' -P "$pid" -x containerd 2>/dev/null || true)"
    if [ "$what" = all ]; then
        roots="$roots $(pgrep -d ' ' -f -- "$RUN/n$n/exec" || true) $(ip netns pids "$(ns "$n")" 2>/dev/null | tr '\n' ' ')"
        # and every descendant of those
        ps -e -o pid=,ppid= | awk -v roots="$roots" '
            BEGIN { split(roots, r, " "); for (i in r) if (r[i] != "") keep[r[i]] = 1 }
            { parent[$1] = $2 }
            END {
                do { grew = 0
                     for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
                } while (grew)
                for (p in keep) print p
            }'
    else
        printf '%s\n' $roots
    fi
}

# SIGSTOP (freeze) or SIGCONT (thaw) node n's processes; `ps` lists what is left running.
signal_node() {
    local sig=$1 n=$2 what=${3:-all} pids
    pids=$(node_pids "$n" "$what" | sort -un)
    [ -n "$pids" ] || { echo "node$n has no processes" >&2; return 1; }
    # shellcheck disable=SC2086
    kill "-$sig" $pids 2>/dev/null || true
}

# Whether a process runs (a zombie does not count).
alive() {
    [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"
}

# Until node n's dockerd (just started) has written its pid file: its namespaces exist, the
# engine itself may still be starting (`wait_engine` waits for that).
wait_pid() {
    local n=$1 old=$2
    for _ in $(seq 1 600); do
        local pid
        pid=$(cat "$RUN/n$n/docker.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && [ "$pid" != "$old" ] && kill -0 "$pid" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "node$n's dockerd wrote no pid file within 60 s" >&2
    tail -20 "$RUN/n$n/dockerd.log" >&2
    return 1
}

wait_engine() {
    for _ in $(seq 1 120); do
        ndocker "$1" info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    tail -20 "$RUN/n$1/dockerd.log" >&2
    echo "node$1's dockerd did not come up" >&2
    return 1
}

build_image() {
    local n=$1 dir
    dir=$(mktemp -d)
    cp "$(command -v busybox)" "$dir/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nCMD ["/bin/sh"]\n' >"$dir/Dockerfile"
    DOCKER_BUILDKIT=0 ndocker "$n" build -q -t leakmon-test/busybox:latest "$dir" >/dev/null
    rm -rf "$dir"
}

up() {
    local managers=${1:-3} workers=${2:-2} total
    total=$((managers + workers))
    down >/dev/null 2>&1 || true
    ip link add $BR type bridge
    ip addr add "$NET.1/24" dev $BR
    ip addr add "$NET.2/24" dev $BR
    ip link set $BR up
    iptables -I FORWARD -i $BR -o $BR -j ACCEPT
    echo "$total" >"$ROOT.nodes" 2>/dev/null || { mkdir -p "$(dirname "$ROOT")"; echo "$total" >"$ROOT.nodes"; }
    for n in $(seq 1 "$total"); do node_up "$n"; done
    for n in $(seq 1 "$total"); do wait_engine "$n"; done
    ndocker 1 swarm init --advertise-addr "$NET.11" >/dev/null
    local mtoken wtoken
    mtoken=$(ndocker 1 swarm join-token -q manager)
    wtoken=$(ndocker 1 swarm join-token -q worker)
    for n in $(seq 2 "$total"); do
        local token=$wtoken
        [ "$n" -le "$managers" ] && token=$mtoken
        for attempt in 1 2 3; do
            ndocker "$n" swarm join --advertise-addr "$NET.$((10 + n))" --token "$token" "$NET.11:2377" >/dev/null 2>&1 && break
            ndocker "$n" swarm leave --force >/dev/null 2>&1 || true
            [ "$attempt" = 3 ] && { echo "node$n could not join" >&2; return 1; }
        done
    done
    for n in $(seq 1 "$total"); do build_image "$n"; done
    ndocker 1 node ls
}

down() {
    local total
    total=$(cat "$ROOT.nodes" 2>/dev/null || echo 9)
    for n in $(seq 1 "$total"); do
        [ -f "$RUN/n$n/docker.pid" ] && kill "$(cat "$RUN/n$n/docker.pid")" 2>/dev/null || true
    done
    sleep 2
    # containerd and its shims of each node (named by the node's exec root)
    pkill -9 -f "$RUN/n" 2>/dev/null || true
    for n in $(seq 1 "$total"); do
        [ -f "$RUN/n$n/docker.pid" ] && kill -9 "$(cat "$RUN/n$n/docker.pid")" 2>/dev/null || true
        ip netns del "$(ns "$n")" 2>/dev/null || true
        ip link del "lmv$n" 2>/dev/null || true
    done
    iptables -D FORWARD -i $BR -o $BR -j ACCEPT 2>/dev/null || true
    ip link del $BR 2>/dev/null || true
    grep -o "$ROOT[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$RUN" "$ROOT" "$ROOT.nodes"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    docker) shift; n=$1; shift; ndocker "$n" "$@" ;;
    cut) ip link set "lmv$2" down ;;
    restore) ip link set "lmv$2" up ;;
    engine-kill) engine_kill "$2" ;;
    engine-start) old=$(cat "$RUN/n$2/docker.pid" 2>/dev/null || true); engine_start "$2"; wait_pid "$2" "$old" ;;
    loss) shift; loss "$@" ;;
    clear) clear_loss "$2" ;;
    freeze) signal_node STOP "$2" "${3:-all}" ;;
    thaw) signal_node CONT "$2" "${3:-all}" ;;
    deafen) deafen "$2" ;;
    hear) hear "$2" ;;
    *) sed -n '2,25p' "$0"; exit 2 ;;
esac
