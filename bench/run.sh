#!/usr/bin/env bash
# The Switchyard benchmark suite in one command.
#
#   bash bench/run.sh            # full run (~7 minutes), every scenario, both backends
#   bash bench/run.sh --quick    # CI-sized run (~1.5 minutes)
#   bash bench/run.sh bus        # one scenario: bus | query | write | startup | up | auth | ticketing | hops | tracing (with or without --quick)
#
# Builds the release binaries, then runs target/release/switchyard-bench, which prints
# Markdown tables and writes bench/results/latest.md and bench/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "run.sh: wrk is required (Debian/Ubuntu: apt-get install wrk)" >&2
    exit 1
fi

cargo build --release -p switchyard -p switchyard-bench

quick=()
scenario=all
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        all|bus|query|write|startup|up|auth|ticketing|hops|tracing) scenario="$arg" ;;
        *) echo "run.sh: unknown argument $arg (use --quick, all, bus, query, write, startup, up, auth, ticketing, hops, tracing)" >&2; exit 2 ;;
    esac
done

exec target/release/switchyard-bench "$scenario" "${quick[@]}"
