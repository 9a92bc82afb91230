#!/bin/bash
# Runs once, when PostgreSQL initialises an empty data directory
# (/docker-entrypoint-initdb.d; the ConfigMap volume makes it executable).
#
# Every key of the Secret switchyard-database (mounted at /etc/switchyard-database, one
# file per key) is one service's DATABASE_URL, postgres://ROLE:PASSWORD@postgres:5432/DB.
# For each: a login role ROLE with that password, the database DB owned by it, and the
# right to connect to DB taken from every other role (PUBLIC). A service's credentials
# open its own database and no other one: that, not the network, separates the databases
# of one server (the NetworkPolicy lets every service with a database reach this pod).
#
# The Secret is the only place the passwords are written: passwords of letters and digits
# only (e.g. `openssl rand -hex 24`), so that the URL needs no percent-encoding.
set -Eeuo pipefail
shopt -s nullglob

dir=/etc/switchyard-database
name_re='^[a-z_][a-z0-9_]{0,62}$'
password_re='^[A-Za-z0-9]{16,}$'

fail() {
  printf 'postgres-init: %s\n' "$*" >&2
  exit 1
}

# Parse and check every URL before creating anything: a half-done run leaves a data
# directory the image will not initialise again.
roles=() passwords=() databases=()
for file in "$dir"/*; do
  key="${file##*/}"
  url="$(<"$file")"
  [[ "$url" == postgres://* || "$url" == postgresql://* ]] ||
    fail "switchyard-database/$key is not a postgres:// URL"
  rest="${url#*://}"
  credentials="${rest%%@*}"
  [[ "$credentials" != "$rest" && "$credentials" == *:* ]] ||
    fail "switchyard-database/$key has no ROLE:PASSWORD@"
  role="${credentials%%:*}"
  password="${credentials#*:}"
  database="${rest#*/}"
  database="${database%%\?*}"
  [[ "$role" =~ $name_re ]] || fail "switchyard-database/$key: role name ${role@Q} is not a plain lower-case name"
  [[ "$database" =~ $name_re ]] || fail "switchyard-database/$key: database name ${database@Q} is not a plain lower-case name"
  [[ "$password" =~ $password_re ]] || fail "switchyard-database/$key: the password must be 16 or more letters and digits"
  [[ "$role" != "$POSTGRES_USER" ]] || fail "switchyard-database/$key: the service role must not be POSTGRES_USER"
  roles+=("$role") passwords+=("$password") databases+=("$database")
done
((${#roles[@]} > 0)) || fail "the Secret switchyard-database has no keys (mounted at $dir)"

for i in "${!roles[@]}"; do
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
    --set=role="${roles[$i]}" --set=password="${passwords[$i]}" --set=database="${databases[$i]}" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
  printf 'postgres-init: database %s for role %s\n' "${databases[$i]}" "${roles[$i]}"
done
