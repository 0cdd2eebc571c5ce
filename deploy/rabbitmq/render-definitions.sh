#!/bin/sh
# Render definitions.json (a template) into the definitions file RabbitMQ imports at boot (rabbitmq.conf's
# load_definitions): @CRMSYNC_PASSWORD_HASH@ becomes the salted SHA-256 RabbitMQ keeps for the crmsync user
# (rabbit_password_hashing_sha256: base64 of a 4-byte random salt followed by SHA-256(salt + password)), of the
# password in $CRMSYNC_RABBITMQ_PASSWORD or in the file named by $CRMSYNC_RABBITMQ_PASSWORD_FILE. Only the hash
# reaches OUTPUT (mode 0600).
#
#   sh render-definitions.sh TEMPLATE OUTPUT
#
# Needs sh, sed, awk, head, sha256sum and base64 (all in the rabbitmq image).
set -eu

template=${1:?usage: render-definitions.sh TEMPLATE OUTPUT}
output=${2:?usage: render-definitions.sh TEMPLATE OUTPUT}

if [ -n "${CRMSYNC_RABBITMQ_PASSWORD_FILE:-}" ]; then
  password=$(cat "$CRMSYNC_RABBITMQ_PASSWORD_FILE")
else
  password=${CRMSYNC_RABBITMQ_PASSWORD:-}
fi
if [ -z "$password" ]; then
  echo "render-definitions.sh: set CRMSYNC_RABBITMQ_PASSWORD or CRMSYNC_RABBITMQ_PASSWORD_FILE" >&2
  exit 1
fi

umask 077
salt=$(mktemp)
trap 'rm -f "$salt"' EXIT
head -c 4 /dev/urandom > "$salt"
digest=$({ cat "$salt"; printf '%s' "$password"; } | sha256sum | cut -d ' ' -f 1)
# The digest's bytes, written as octal escapes for printf (sh's printf has no \x): salt + digest, base64.
escapes=$(printf '%s' "$digest" | awk '{
  for (i = 1; i < length($0); i += 2)
    printf "\\%03o", (index("0123456789abcdef", substr($0, i, 1)) - 1) * 16 + index("0123456789abcdef", substr($0, i + 1, 1)) - 1
}')
# shellcheck disable=SC2059  # the format is the escapes, made above from hex digits only
hash=$({ cat "$salt"; printf "$escapes"; } | base64 | tr -d '\n')
sed -e "s|@CRMSYNC_PASSWORD_HASH@|$hash|" "$template" > "$output.tmp"
mv "$output.tmp" "$output"
