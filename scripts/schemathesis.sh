#!/usr/bin/env bash
# Schemathesis against the OpenAPI document the server serves (issue 7, item 5): every operation
# gets EXAMPLES generated requests (default 1000, valid and invalid ones), and every answer must
# be free of 5xx and match the document (status code, content type, response schema).
#
#   bash scripts/schemathesis.sh                 # the full run, 1000 examples per operation
#   EXAMPLES=50 bash scripts/schemathesis.sh     # a quick one
#   RUNS=admin bash scripts/schemathesis.sh      # one of the two runs (installation, admin)
#   ST_ARGS='--phases coverage --include-path-regex ops$' bash scripts/schemathesis.sh
#
# Needs `pip install schemathesis` (4.x). Starts `target/release/tresor serve` (built first
# unless TRESOR_BIN names a binary) on a throwaway data directory with a known admin token,
# creates an app, an account and an installation, then runs twice: the record, batch,
# credential, OAuth and operations endpoints with the installation token, and the admin API with
# the admin token. Reports (JUnit and NDJSON, with every request) go to
# ${REPORT_DIR:-target/schemathesis}. Exits non-zero when either run finds a failure.
set -euo pipefail

cd "$(dirname "$0")/.."
EXAMPLES=${EXAMPLES:-1000}
WORKERS=${WORKERS:-1}
REPORT_DIR=${REPORT_DIR:-target/schemathesis}
RUNS=${RUNS:-installation admin}
CHECKS=${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}

if ! command -v schemathesis >/dev/null; then
    echo "schemathesis is not installed: pip install schemathesis" >&2
    exit 2
fi
if [ -n "${TRESOR_BIN:-}" ]; then
    bin=$TRESOR_BIN
else
    cargo build --release -p tresor
    bin=target/release/tresor
fi

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
# A known admin token (only for this throwaway server).
admin=tsr_00000000000000ad_schemathesisAdminTokenForAThrowawayServer0
TRESOR_ADMIN_TOKEN=$admin TRESOR_LOG=${TRESOR_LOG:-warn} \
    "$bin" serve --data-dir "$tmp/data" --listen "127.0.0.1:$port" >"$tmp/server.log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for _ in $(seq 100); do
    curl -fs "$base/healthz" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.1
done

as_admin() {
    curl -fsS -X PUT "$base$1" -H "Authorization: Bearer $admin" \
        -H 'Content-Type: application/json' -d "$2"
}
as_admin /v1/admin/apps/fuzzapp '{"scopes": ["secrets:read", "secrets:write", "settings:read",
    "settings:write", "kv:read", "kv:write", "shared:read", "shared:write", "credentials:read",
    "credentials:store", "credentials:use"]}' >/dev/null
as_admin /v1/admin/accounts/fuzzacct '{}' >/dev/null
token=$(as_admin /v1/admin/installations/fuzzinst '{"app_id": "fuzzapp", "account_id": "fuzzacct"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

mkdir -p "$REPORT_DIR"
run() {
    local name=$1 bearer=$2
    shift 2
    echo "== schemathesis: $name ($EXAMPLES examples per operation)"
    schemathesis run "$base/openapi.json" \
        --checks "$CHECKS" \
        --max-examples "$EXAMPLES" \
        --workers "$WORKERS" \
        --header "Authorization: Bearer $bearer" \
        --suppress-health-check all \
        --report junit,ndjson \
        --report-junit-path "$REPORT_DIR/$name.xml" \
        --report-ndjson-path "$REPORT_DIR/$name.ndjson" \
        --seed "${SEED:-7}" \
        "$@" ${ST_ARGS:-}
}

status=0
for name in $RUNS; do
    case $name in
        installation) run installation "$token" --exclude-path-regex '^/v1/admin/' || status=1 ;;
        admin) run admin "$admin" --include-path-regex '^/v1/admin/' || status=1 ;;
        *) echo "unknown run $name (installation, admin)" >&2; status=2 ;;
    esac
done
python3 scripts/schemathesis_summary.py "$REPORT_DIR"/*.ndjson || true
if grep -q 'panicked' "$tmp/server.log"; then
    echo "the server panicked:" >&2
    grep -A3 'panicked' "$tmp/server.log" >&2
    status=1
fi
exit $status
