#!/bin/sh
# Start one Redis Cluster node for crmsync (the compose redis-N services, the Kubernetes crmsync-redis-cluster
# pods): render the ACL file from users.acl + cluster-users.acl (hashes only), write the replication login that
# a node uses once it is a replica, bring the addresses of nodes.conf up to date, then exec redis-server with
# redis.conf + cluster.conf. Extra arguments go to redis-server (tests give --port, --dir).
#
# Environment (the container paths are the defaults):
#   CRMSYNC_REDIS_<USER>_PASSWORD[_FILE|_SHA256]  as for render-acl.sh, for the users of both templates; the
#                                     REPLICA password itself is needed (not only its hash): it is masterauth
#   CRMSYNC_REDIS_ANNOUNCE_HOSTNAME  the name clients and the other nodes reach this node by (default: hostname)
#   CRMSYNC_REDIS_CONF_DIR           where redis.conf, cluster.conf and the templates are (/usr/local/etc/crmsync)
#   CRMSYNC_REDIS_RUN_DIR            a private, writable directory for the rendered files (/run/redis)
#   CRMSYNC_REDIS_DATA_DIR           the node's data directory, holding nodes.conf (/data)
set -eu

conf_dir=${CRMSYNC_REDIS_CONF_DIR:-/usr/local/etc/crmsync}
run_dir=${CRMSYNC_REDIS_RUN_DIR:-/run/redis}
data_dir=${CRMSYNC_REDIS_DATA_DIR:-/data}
announce=${CRMSYNC_REDIS_ANNOUNCE_HOSTNAME:-$(hostname)}

umask 077
mkdir -p "$run_dir"
cat "$conf_dir/users.acl" "$conf_dir/cluster-users.acl" > "$run_dir/users.acl.template"
sh "$conf_dir/render-acl.sh" "$run_dir/users.acl.template" "$run_dir/users.acl"
rm -f "$run_dir/users.acl.template"

if [ -n "${CRMSYNC_REDIS_REPLICA_PASSWORD_FILE:-}" ]; then
  replica_password=$(cat "$CRMSYNC_REDIS_REPLICA_PASSWORD_FILE")
else
  replica_password=${CRMSYNC_REDIS_REPLICA_PASSWORD:-}
fi
if [ -z "$replica_password" ]; then
  echo "node-start.sh: set CRMSYNC_REDIS_REPLICA_PASSWORD or CRMSYNC_REDIS_REPLICA_PASSWORD_FILE" >&2
  exit 1
fi
# Kept out of the command line (visible in ps) and out of redis.conf (shared, in the repository).
printf 'masteruser replica\nmasterauth "%s"\n' "$replica_password" > "$run_dir/replication.conf"

# nodes.conf keeps each node's IP, and the cluster bus reconnects by IP: after pods or containers come back
# with new IPs (a whole-cluster restart), no node could reach the others. Each node also announces a hostname
# (kept in nodes.conf as ip:port@bus,hostname): resolve those again and write the current IPs in. A name that
# does not resolve yet keeps its old IP; gossip corrects the rest once any node is reached.
nodes="$data_dir/nodes.conf"
if [ -s "$nodes" ]; then
  script=""
  for name in $(awk '$2 ~ /,/ { split($2, parts, ","); print parts[2] }' "$nodes" | sort -u); do
    ip=$(getent ahostsv4 "$name" 2>/dev/null | awk 'NR == 1 { print $1 }') || ip=""
    if [ -n "$ip" ]; then
      script="$script if (\$2 ~ /,$(printf '%s' "$name" | sed 's/[.]/[.]/g')\$/) sub(/^[^:]*:/, \"$ip:\", \$2);"
    fi
  done
  if [ -n "$script" ]; then
    awk "{ $script print }" "$nodes" > "$nodes.refreshed" && mv "$nodes.refreshed" "$nodes"
  fi
fi

exec redis-server "$conf_dir/redis.conf" --include "$conf_dir/cluster.conf" --include "$run_dir/replication.conf" \
  --aclfile "$run_dir/users.acl" --cluster-announce-hostname "$announce" "$@"
