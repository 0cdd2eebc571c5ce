#!/bin/sh
# Render users.acl (a template) into the ACL file redis-server loads: each @NAME_PASSWORD_SHA256@ becomes the
# SHA-256 of the password in $CRMSYNC_REDIS_<NAME>_PASSWORD, or in the file named by ..._PASSWORD_FILE
# (Docker/Kubernetes secrets), or the hash itself given in ..._PASSWORD_SHA256 (64 hex digits: the break-glass
# password need never reach the Redis host, only its hash does); comment and blank lines are dropped (ACL
# files allow none).
#
#   sh render-acl.sh TEMPLATE OUTPUT
#
# Only the placeholders TEMPLATE holds need a password: users.acl names the five users of every Redis,
# cluster-users.acl adds REPLICA and CLUSTERADMIN for a Redis Cluster's nodes.
# Only hashes reach OUTPUT (mode 0600). Needs sh, sed, grep and sha256sum (all in the redis image).
set -eu

template=${1:?usage: render-acl.sh TEMPLATE OUTPUT}
output=${2:?usage: render-acl.sh TEMPLATE OUTPUT}

password_hash() {
  var="CRMSYNC_REDIS_$1_PASSWORD"
  eval "file=\${${var}_FILE:-}"
  eval "hash=\${${var}_SHA256:-}"
  if [ -n "$hash" ]; then
    if ! printf '%s' "$hash" | grep -Eqx '[0-9a-fA-F]{64}'; then
      echo "render-acl.sh: ${var}_SHA256 is not a SHA-256 (64 hex digits)" >&2
      return 1
    fi
    printf '%s\n' "$hash" | tr 'A-F' 'a-f'
    return 0
  fi
  if [ -n "$file" ]; then
    value=$(cat "$file")
  else
    eval "value=\${${var}:-}"
  fi
  if [ -z "$value" ]; then
    echo "render-acl.sh: set $var, ${var}_FILE or ${var}_SHA256" >&2
    return 1
  fi
  printf '%s' "$value" | sha256sum | cut -d ' ' -f 1
}

# Each placeholder in the template, in a fixed order (so a missing password is named the same way every time).
substitutions=""
for name in BREAKGLASS ADMIN WORKER SCHEDULER METRICS REPLICA CLUSTERADMIN; do
  if grep -q "@${name}_PASSWORD_SHA256@" "$template"; then
    hash=$(password_hash "$name")
    substitutions="${substitutions}s/@${name}_PASSWORD_SHA256@/${hash}/;"
  fi
done

umask 077
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$template" | sed -e "${substitutions}" > "$output.tmp"
if grep -q '@[A-Z_]*_PASSWORD_SHA256@' "$output.tmp"; then
  echo "render-acl.sh: unknown placeholder left in $template" >&2
  rm -f "$output.tmp"
  exit 1
fi
mv "$output.tmp" "$output"
