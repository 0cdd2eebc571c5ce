#!/bin/sh
# Render users.acl (a template) into the ACL file redis-server loads: each @NAME_PASSWORD_SHA256@ becomes the
# SHA-256 of the password in $CRMSYNC_REDIS_<NAME>_PASSWORD, or in the file named by ..._PASSWORD_FILE
# (Docker/Kubernetes secrets); comment and blank lines are dropped (ACL files allow none).
#
#   sh render-acl.sh TEMPLATE OUTPUT
#
# Only hashes reach OUTPUT (mode 0600). Needs sh, sed, grep and sha256sum (all in the redis image).
set -eu

template=${1:?usage: render-acl.sh TEMPLATE OUTPUT}
output=${2:?usage: render-acl.sh TEMPLATE OUTPUT}

password_hash() {
  var="CRMSYNC_REDIS_$1_PASSWORD"
  eval "file=\${${var}_FILE:-}"
  if [ -n "$file" ]; then
    value=$(cat "$file")
  else
    eval "value=\${${var}:-}"
  fi
  if [ -z "$value" ]; then
    echo "render-acl.sh: set $var or ${var}_FILE" >&2
    return 1
  fi
  printf '%s' "$value" | sha256sum | cut -d ' ' -f 1
}

admin=$(password_hash ADMIN)
worker=$(password_hash WORKER)
metrics=$(password_hash METRICS)

umask 077
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$template" \
  | sed -e "s/@ADMIN_PASSWORD_SHA256@/$admin/" \
        -e "s/@WORKER_PASSWORD_SHA256@/$worker/" \
        -e "s/@METRICS_PASSWORD_SHA256@/$metrics/" > "$output.tmp"
if grep -q '@[A-Z_]*_PASSWORD_SHA256@' "$output.tmp"; then
  echo "render-acl.sh: unknown placeholder left in $template" >&2
  rm -f "$output.tmp"
  exit 1
fi
mv "$output.tmp" "$output"
