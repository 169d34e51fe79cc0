#!/bin/sh
# Entry wrapper for servers that declare secrets. Bosun sends the secrets on stdin before the
# MCP stream starts, so they never appear in the container's config, `docker inspect` or logs.
# Each is written to /run/secrets (an in-memory mount only this user can read); those that
# the server wants as environment variables are exported from the file, then the server runs
# with the rest of stdin untouched (`read` consumes exactly one line at a time from a pipe).
set -eu
IFS= read -r header
case "$header" in
  "BOSUN-SECRETS 1 "*) ;;
  *) echo "bosun-entry: expected the secrets preamble on stdin" >&2; exit 70 ;;
esac
count=${header#BOSUN-SECRETS 1 }
umask 077
i=0
while [ "$i" -lt "$count" ]; do
  IFS=' ' read -r name var value
  printf '%s' "$value" | base64 -d > "/run/secrets/$name"
  if [ "$var" != "-" ]; then
    export "$var=$(cat "/run/secrets/$name")"
  fi
  i=$((i + 1))
done
unset header count i name var value
exec "$@"
