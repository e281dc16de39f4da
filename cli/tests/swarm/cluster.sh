#!/usr/bin/env bash
# A three-node Docker Swarm on this one machine, for the multi-host tests and benchmarks: three
# extra dockerd engines, each in its own network namespace (and mount namespace, for its own /run,
# /etc/docker and /var/lib/docker), bridged through a switch namespace, joined as a Swarm, with
# Debian's docker-registry as the registry. The machine's own engine is never touched.
#
#   cluster.sh up NAME      make the cluster; prints shell assignments (HOST_ADDR, MANAGER, REGISTRY, ...)
#   cluster.sh down NAME    tear it down completely (idempotent)
#   cluster.sh cut NAME N   cut node N's link (node loss); `heal NAME N` restores it
#
# NAME is a short random prefix (≤ 6 characters) that every namespace, link, directory and cgroup
# carries, so a run cleans up exactly what it made. Traffic stays on the addresses made here.
set -eEuo pipefail

cmd=${1:?usage: cluster.sh up|down|cut|heal NAME [N]}
name=${2:?a cluster name}
[[ $name =~ ^[a-z0-9]{1,6}$ ]] || { echo "cluster.sh: NAME must be 1-6 lowercase letters or digits" >&2; exit 64; }
root=/tmp/docker-agent-swarm-$name
# One /24 per cluster name, so two clusters on one machine do not collide.
octet=$(( $(printf '%s' "$name" | cksum | cut -d' ' -f1) % 200 + 20 ))
net=10.251.$octet
host_addr=$net.1
registry_addr=$net.2
nodes=(1 2 3)

node_addr() { echo "$net.$((10 + $1))"; }
ns() { echo "da$name-$1"; }

up() {
  mkdir -p "$root"
  ip netns add "$(ns sw)"
  ip -n "$(ns sw)" link set lo up
  ip -n "$(ns sw)" link add br0 type bridge
  ip -n "$(ns sw)" link set br0 up
  ip -n "$(ns sw)" addr add "$registry_addr/24" dev br0
  # The machine's end of the switch: the hub listens here and the agents dial it.
  ip link add "da$name-h" type veth peer name host netns "$(ns sw)"
  ip addr add "$host_addr/24" dev "da$name-h"
  ip link set "da$name-h" up
  ip -n "$(ns sw)" link set host master br0 up

  # "memory:memory name=systemd:none,name=systemd ...": each v1 hierarchy and its mount options.
  local cgroups
  cgroups=$(awk '$3 == "cgroup" { split($2, p, "/"); o = $4; sub(/^rw,(relatime,)?/, "", o); printf "%s:%s ", p[5], o }' /proc/mounts)
  for n in "${nodes[@]}"; do
    local nsn dir
    nsn=$(ns "n$n")
    dir=$root/n$n
    mkdir -p "$dir/etc" "$dir/lib" "$dir/run"
    ip netns add "$nsn"
    ip -n "$nsn" link set lo up
    ip -n "$(ns sw)" link add "n$n" type veth peer name eth0 netns "$nsn"
    ip -n "$(ns sw)" link set "n$n" master br0 up
    ip -n "$nsn" addr add "$(node_addr "$n")/24" dev eth0
    ip -n "$nsn" link set eth0 up
    ip -n "$nsn" route add default via "$host_addr"
    # "tls": false skips dockerd's deliberate 15 s delay on a plain TCP socket; the cgroup parent
    # keeps each node's containers apart from the machine engine's in the shared hierarchy.
    cat >"$dir/etc/daemon.json" <<EOF
{
  "hosts": ["unix:///run/docker.sock", "tcp://$(node_addr "$n"):2375"],
  "tls": false,
  "storage-driver": "fuse-overlayfs",
  "cgroup-parent": "/da$name-n$n",
  "insecure-registries": ["$registry_addr:5000"],
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m"},
  "bip": "172.30.$n.1/24",
  "default-address-pools": [{"base": "172.31.0.0/16", "size": 24}]
}
EOF
    # dockerd hard-codes paths under /run, /etc/docker and /var/lib/docker whatever --data-root
    # says, so each node gets its own of all three in a private mount namespace.
    # `ip netns exec` mounts a fresh /sys, which hides the cgroup hierarchies dockerd needs: the
    # node mounts the machine's cgroup v1 controllers again, as the machine has them.
    ip netns exec "$nsn" unshare --mount --uts --propagation private bash -c "
      set -e
      hostname '$nsn'
      mount --bind '$dir/run' /run
      mount --bind '$dir/etc' /etc/docker
      mount --bind '$dir/lib' /var/lib/docker
      mount -t tmpfs cgroup_root /sys/fs/cgroup
      for c in $cgroups; do
        mkdir -p /sys/fs/cgroup/\${c%%:*}
        mount -t cgroup -o \${c#*:} cgroup /sys/fs/cgroup/\${c%%:*}
      done
      exec dockerd --config-file /etc/docker/daemon.json
    " >"$root/n$n.log" 2>&1 &
    echo $! >"$root/n$n.pid"
  done

  cat >"$root/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $root/registry}, delete: {enabled: true}}
http: {addr: "$registry_addr:5000"}
EOF
  ip netns exec "$(ns sw)" docker-registry serve "$root/registry.yml" >"$root/registry.log" 2>&1 &
  echo $! >"$root/registry.pid"

  for n in "${nodes[@]}"; do
    wait_for "node $n's engine" docker -H "tcp://$(node_addr "$n"):2375" version
  done
  wait_for "the registry" curl -fsS "http://$registry_addr:5000/v2/"

  local manager
  manager="tcp://$(node_addr 1):2375"
  # A 1 s dispatcher heartbeat: a lost node shows Down in about 3 s instead of 11.
  docker -H "$manager" swarm init --advertise-addr "$(node_addr 1)" --dispatcher-heartbeat 1s >/dev/null
  local token
  token=$(docker -H "$manager" swarm join-token -q worker)
  for n in 2 3; do
    docker -H "tcp://$(node_addr "$n"):2375" swarm join --advertise-addr "$(node_addr "$n")" \
      --token "$token" "$(node_addr 1):2377" >/dev/null
  done
  wait_for "three ready nodes" bash -c \
    "[ \$(docker -H '$manager' node ls --format '{{.Status}}' | grep -c Ready) = 3 ]"
  echo "HOST_ADDR=$host_addr"
  echo "MANAGER=$manager"
  echo "REGISTRY=$registry_addr:5000"
  for n in "${nodes[@]}"; do echo "NODE$n=tcp://$(node_addr "$n"):2375"; done
}

wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 600); do
    "$@" >/dev/null 2>&1 && return 0
    # Readiness polling, not a timing assumption: 600 × 0.1 s is the give-up bound.
    sleep 0.1
  done
  echo "cluster.sh: timed out waiting for $what" >&2
  return 1
}

down() {
  local pid
  for n in "${nodes[@]}"; do
    # Leaving the swarm first is not needed: the whole state goes with the data root.
    if [ -f "$root/n$n.pid" ]; then
      pid=$(cat "$root/n$n.pid")
      stop_tree "$pid"
    fi
  done
  [ -f "$root/registry.pid" ] && stop_tree "$(cat "$root/registry.pid")"
  for n in "${nodes[@]}"; do ip netns del "$(ns "n$n")" 2>/dev/null || true; done
  ip netns del "$(ns sw)" 2>/dev/null || true
  ip link del "da$name-h" 2>/dev/null || true
  # Each node's containers' cgroups, left behind if a container outlived its engine.
  find /sys/fs/cgroup -maxdepth 2 -type d -name "da$name-n*" 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$root"
}

# Stops a process and everything under it (dockerd, its containerd and shims, their containers).
stop_tree() {
  local pid=$1 all
  all=$(descendants "$pid")
  kill -TERM $all 2>/dev/null || true
  for _ in $(seq 1 300); do
    local alive=0
    for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL $all 2>/dev/null || true
}

descendants() {
  local out=$1 c
  for c in $(pgrep -P "$1" || true); do out="$out $(descendants "$c")"; done
  echo "$out"
}

case "$cmd" in
  up)
    # A failed bring-up leaves nothing behind.
    trap 'rc=$?; trap - ERR; down; exit $rc' ERR
    up
    trap - ERR
    ;;
  down) down ;;
  cut) ip -n "$(ns sw)" link set "n${3:?node}" down ;;
  heal) ip -n "$(ns sw)" link set "n${3:?node}" up ;;
  *) echo "cluster.sh: unknown command $cmd" >&2; exit 64 ;;
esac
