#!/bin/sh
# A CI job's latency check: start a service under the tracer, load it,
# judge latency budgets. Exit status: 0 when every budget holds, 3 when
# one is broken, anything else for an error.
#
# Environment (all optional):
#   TRACER    the tracer binary (default: dist/tracer-x86_64-linux-musl,
#             built by `cargo xtask dist`)
#   OUT       the output folder (default: latency-trace)
#   SECONDS_  seconds of load (default: 10)
#   BUDGETS   budgets, one per line (default: below)
#   PORT      the bundled service's port (default: 18181)
#   SERVICE   the service's command line (default: the bundled Go
#             scenario scenarios/basic, built here, on 127.0.0.1:PORT)
#   URL       what the load asks for (default: http://127.0.0.1:PORT/sleep/5)
set -eu
cd "$(dirname "$0")/.."

TRACER=${TRACER:-dist/tracer-x86_64-linux-musl}
OUT=${OUT:-latency-trace}
SECONDS_=${SECONDS_:-10}
PORT=${PORT:-18181}
URL=${URL:-http://127.0.0.1:$PORT/sleep/5}
BUDGETS=${BUDGETS:-'GET /sleep/5 p99 < 100ms
GET /sleep/5 handler p50 < 20ms
accept_queue p99 < 5ms
dropped_events == 0'}

if [ -z "${SERVICE:-}" ]; then
    mkdir -p target/ci
    (cd scenarios && go build -o ../target/ci/service ./basic)
    SERVICE="target/ci/service -addr 127.0.0.1:$PORT"
fi

# The budgets as arguments, one --budget each.
set --
while IFS= read -r budget; do
    [ -n "$budget" ] && set -- "$@" --budget "$budget"
done <<BUDGETS_END
$BUDGETS
BUDGETS_END

rm -rf "$OUT"
mkdir -p "$OUT"
# The load starts once the service answers, and runs for SECONDS_.
(
    for _ in $(seq 100); do
        curl -s -o /dev/null "$URL" && break
        sleep 0.1
    done
    hey -z "${SECONDS_}s" -c 10 "$URL" > "$OUT/load.txt"
) &
load=$!

status=0
# shellcheck disable=SC2086 # SERVICE is a command line
"$TRACER" exec --duration "$((SECONDS_ + 3))" --out "$OUT" --overwrite --max-overhead 0 \
    --junit "$OUT/junit.xml" "$@" -- $SERVICE || status=$?
wait "$load" || true
echo "ci-latency: tracer exited with $status; outputs in $OUT"
exit "$status"
