#!/usr/bin/env bash
# proxy-candidate.sh — starts Glass as the candidate gateway of ../shared/bench/proxy-bench.sh.
#
# The bench runs this with UPSTREAM=127.0.0.1:PORT and CANDIDATE_PORT in the environment, in
# its own process group, pinned to the server CPU. It starts `glass serve` with the gateway on
# 127.0.0.1:$CANDIDATE_PORT (HTTP/1.1 and h2c), one worker thread like the one-worker peers,
# access logs on (to a file) and metrics on, then applies one catch-all route to UPSTREAM and
# stays in the foreground until the bench stops the process group.
#
# Usage (from the repository root, after `cargo build --release -p glass`):
#   CANDIDATE_NAME=glass CANDIDATE_PORT=18090 CANDIDATE_CMD=bench/proxy-candidate.sh \
#     ../shared/bench/proxy-bench.sh | tee proxy.txt
# Knobs: GLASS_BIN (default target/release/glass), GLASS_THREADS (default 1),
#        GLASS_ACCESS_LOG (default: a file in the temp dir; "off" to disable).
set -euo pipefail

: "${UPSTREAM:?set by proxy-bench.sh}"
: "${CANDIDATE_PORT:?set by proxy-bench.sh}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLASS_BIN="${GLASS_BIN:-$ROOT/target/release/glass}"
[[ -x "$GLASS_BIN" ]] || { echo "proxy-candidate: $GLASS_BIN missing (cargo build --release -p glass)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/glass-proxy-candidate.XXXXXX)"
GLASS_PID=""
cleanup() {
  [[ -n "$GLASS_PID" ]] && kill "$GLASS_PID" 2>/dev/null && wait "$GLASS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

cat > "$WORK/routes.toml" <<TOML
[[routes]]
name = "bench"
match = { path_prefix = "/" }
target = { addresses = ["$UPSTREAM"] }
TOML

"$GLASS_BIN" serve --dev \
  --gateway-addr "127.0.0.1:$CANDIDATE_PORT" \
  --api-addr 127.0.0.1:0 \
  --dns-addr 127.0.0.1:0 \
  --data-dir "$WORK/data" \
  --worker-threads "${GLASS_THREADS:-1}" \
  --access-log "${GLASS_ACCESS_LOG:-$WORK/access.log}" \
  --log-level warn &
GLASS_PID=$!

for _ in $(seq 1 200); do
  [[ -f "$WORK/data/addrs.json" ]] && break
  kill -0 "$GLASS_PID" 2>/dev/null || { echo "proxy-candidate: glass exited" >&2; exit 1; }
  sleep 0.05
done
[[ -f "$WORK/data/addrs.json" ]] || { echo "proxy-candidate: glass did not start" >&2; exit 1; }
"$GLASS_BIN" apply --data-dir "$WORK/data" -f "$WORK/routes.toml" >&2
wait "$GLASS_PID"
