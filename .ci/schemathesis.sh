#!/usr/bin/env bash
# Schemathesis against a running node: every check, against the OpenAPI
# document the node serves. Starts a standalone node (debug build) on a
# temporary SQLite file and a free loopback port, imports one example
# workflow and starts one execution of it so that their operations have
# something to find, runs
# schemathesis with a bounded number of examples and a time budget, stops
# the node, and fails if schemathesis found anything.
#
#   .ci/schemathesis.sh            # builds the debug binary if needed
#   BATON_BIN=path/to/baton .ci/schemathesis.sh
#   SCHEMATHESIS_MAX_EXAMPLES=50 SCHEMATHESIS_SEED=1 .ci/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
bin="${BATON_BIN:-$target/debug/baton}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
max_time="${SCHEMATHESIS_MAX_TIME:-120}"

if [ -z "${BATON_BIN:-}" ]; then
  echo "schemathesis: building the debug baton binary"
  cargo build --quiet --bin baton
fi

# One version, so that a release of schemathesis cannot turn the run red
# on its own (4.32 changed how invalid data is drawn); raise it on purpose.
want="${SCHEMATHESIS_VERSION:-4.32.5}"
if ! schemathesis --version 2>/dev/null | grep -qF "version $want"; then
  echo "schemathesis: installing $want from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$want"
fi

work="$(mktemp -d)"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/baton.toml" <<EOF
[node]
id = "schemathesis"
[http]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$work/baton.db?mode=rwc"
EOF

BATON_LOG="${BATON_LOG:-warn}" "$bin" serve --config "$work/baton.toml" >"$work/node.log" 2>&1 &
node_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/api/healthstatus" >/dev/null 2>&1 && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; echo "schemathesis: the node did not start" >&2; exit 1; }
  sleep 0.1
done
# One workflow, and one execution of it that waits (for a signal, then an
# answer), so that the execution operations reach an execution that
# exists: schemathesis.toml names it as every `eid`.
"$bin" workflow import --server "$base" examples/workflows/approval.yaml >/dev/null
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d '{"execution_id": "st-waiting"}' "$base/api/workflows/approval/executions"

echo "schemathesis: $(schemathesis --version) against $base (at most $max_examples examples per operation, ${max_time}s)"
status=0
started=$SECONDS
repo="$(pwd)"
# From the temporary directory: schemathesis keeps its state in the
# current directory (.schemathesis/), which must not land in the checkout.
# The stateful phase is left out: with `parameters` in schemathesis.toml
# (which the execution operations need to reach an execution that exists)
# schemathesis 4.32 adds that parameter to links it infers for other
# operations and refuses to run the phase ("Parameter `eid` is not
# defined in API operation GET /api/workflows/{id}").
(cd "$work" && schemathesis --config-file "$repo/.ci/schemathesis.toml" run "$base/api/openapi.json" \
  --checks all \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --workers 1 \
  --request-timeout 10 \
  --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
  --no-color \
  --generation-database none \
  --report-dir "$work/report") \
  || status=$?
echo "schemathesis: finished in $((SECONDS - started))s with status $status"
if ! kill -0 "$node_pid" 2>/dev/null; then
  echo "schemathesis: the node died during the run; its log:" >&2
  tail -50 "$work/node.log" >&2
  status=1
fi
exit "$status"
