#!/usr/bin/env bash
# Installs and starts what the test suite needs on a Debian machine:
# headless Chromium with its driver (browser test), PostgreSQL and NATS with JetStream
# (the production-backend suite), wrk (benchmarks), schemathesis (fuzzing from the services'
# OpenAPI documents, in a virtual environment of its own), the AsyncAPI parser (node). Safe
# to run again.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# schemathesis, pinned so that a seed replays the same cases; cli/tests/it/openapi.rs finds it
# here (or through SCHEMATHESIS, or on the PATH).
SCHEMATHESIS_VERSION=4.32.5
schemathesis_venv="${HOME}/.cache/switchyard/schemathesis"
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $schemathesis_venv"
  rm -rf "$schemathesis_venv"
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$schemathesis_venv/bin/schemathesis" --version

# The official AsyncAPI parser, pinned, for infra/asyncapi/validate.mjs (.ci/run validates
# docs/asyncapi/*.json with it).
ASYNCAPI_PARSER_VERSION=3.6.6
asyncapi_dir="${HOME}/.cache/switchyard/asyncapi"
command -v npm >/dev/null 2>&1 || {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
}
if ! grep -qs "\"version\": \"$ASYNCAPI_PARSER_VERSION\"" "$asyncapi_dir/node_modules/@asyncapi/parser/package.json"; then
  echo "installing @asyncapi/parser $ASYNCAPI_PARSER_VERSION into $asyncapi_dir"
  rm -rf "$asyncapi_dir"
  mkdir -p "$asyncapi_dir"
  echo '{"private": true}' > "$asyncapi_dir/package.json"
  (cd "$asyncapi_dir" && npm install --no-audit --no-fund --loglevel=error "@asyncapi/parser@$ASYNCAPI_PARSER_VERSION")
fi
echo "@asyncapi/parser $ASYNCAPI_PARSER_VERSION in $asyncapi_dir"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
fi
if ! port_open 4222; then
  echo "starting NATS with JetStream"
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
for i in $(seq 1 50); do
  if port_open 5432 && port_open 4222; then break; fi
  sleep 0.2
done
port_open 5432 && echo "PostgreSQL: up on 127.0.0.1:5432" || echo "PostgreSQL: NOT reachable"
port_open 4222 && echo "NATS: up on 127.0.0.1:4222" || echo "NATS: NOT reachable"
chromium --version 2>/dev/null || true
