#!/bin/sh
# Create crmsync's Redis Cluster once its nodes run (the compose redis-cluster-create service, the Kubernetes
# Job crmsync-redis-cluster-create): every other node a replica of a master (3 masters, 3 replicas from 6
# nodes). Idempotent: a cluster that already has every slot is left alone, so the job may run at every start.
# A half-made cluster (some slots or nodes joined) is not touched: repair it by hand (deploy/README.md).
#
#   sh create-cluster.sh HOST:PORT HOST:PORT ...
#
# Environment: CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD or ..._FILE (the clusteradmin user of cluster-users.acl),
# CRMSYNC_REDIS_CLUSTER_REPLICAS (replicas per master, default 1), CRMSYNC_REDIS_WAIT_SECONDS (default 300).
set -eu

[ "$#" -ge 3 ] || { echo "usage: create-cluster.sh HOST:PORT HOST:PORT HOST:PORT ..." >&2; exit 2; }
if [ -n "${CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD_FILE:-}" ]; then
  REDISCLI_AUTH=$(cat "$CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD_FILE")
else
  REDISCLI_AUTH=${CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD:-}
fi
[ -n "$REDISCLI_AUTH" ] || { echo "create-cluster.sh: set CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD(_FILE)" >&2; exit 2; }
export REDISCLI_AUTH  # redis-cli reads the password from here, not from its command line
replicas=${CRMSYNC_REDIS_CLUSTER_REPLICAS:-1}
wait_seconds=${CRMSYNC_REDIS_WAIT_SECONDS:-300}

ask() {  # ask HOST:PORT COMMAND...: the node's answer, as clusteradmin
  node=$1
  shift
  redis-cli -h "${node%:*}" -p "${node##*:}" --user clusteradmin --no-auth-warning "$@"
}

field() {  # field HOST:PORT NAME: a field of CLUSTER INFO
  ask "$1" cluster info 2>/dev/null | tr -d '\r' | awk -F: -v name="$2" '$1 == name { print $2 }'
}

deadline=$(( $(date +%s) + wait_seconds ))
for node in "$@"; do
  until [ "$(ask "$node" ping 2>/dev/null)" = "PONG" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "create-cluster.sh: $node does not answer PING as clusteradmin" >&2
      exit 1
    fi
    sleep 1
  done
done

if [ "$(field "$1" cluster_slots_assigned)" = "16384" ]; then
  echo "create-cluster.sh: the cluster exists (every slot assigned); nothing to do"
  exit 0
fi
for node in "$@"; do
  if [ "$(field "$node" cluster_known_nodes)" != "1" ] || [ "$(field "$node" cluster_slots_assigned)" != "0" ]; then
    echo "create-cluster.sh: $node already knows other nodes or holds slots: a half-made cluster, left as it is" \
      "(check it with redis-cli --cluster check, see deploy/README.md)" >&2
    exit 1
  fi
done

# CLUSTER MEET takes IP addresses: resolve the names (the nodes announce their names to clients themselves).
addresses=""
for node in "$@"; do
  host=${node%:*}
  ip=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
  [ -n "$ip" ] || { echo "create-cluster.sh: cannot resolve $host" >&2; exit 1; }
  addresses="$addresses $ip:${node##*:}"
done
# shellcheck disable=SC2086  # one argument per node
redis-cli --user clusteradmin --no-auth-warning --cluster create $addresses \
  --cluster-replicas "$replicas" --cluster-yes

for node in "$@"; do
  until [ "$(field "$node" cluster_state)" = "ok" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "create-cluster.sh: $node does not report cluster_state:ok" >&2
      exit 1
    fi
    sleep 1
  done
done
echo "create-cluster.sh: cluster created: $(field "$1" cluster_size) masters, $(field "$1" cluster_known_nodes) nodes"
