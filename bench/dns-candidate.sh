#!/usr/bin/env bash
# dns-candidate.sh — starts Glass as the candidate of ../shared/bench/dns-bench.sh.
#
# The bench runs this with RECORDS_JSON (its SRV and A records) and CANDIDATE_PORT in the
# environment, in its own process group, pinned to the server CPU. This script turns the
# records into one file-provider file (one registration per SRV target host, with a named
# port per service that points at it) and execs `glass serve` answering DNS on
# 127.0.0.1:$CANDIDATE_PORT. With the records the bench generates, Glass's answers are
# exactly the expected sets: a service name's A records are the addresses of the instances
# its SRV records point at, and an instance name answers its own address.
#
# Usage (from the repository root, after `cargo build --release -p glass`):
#   CANDIDATE_NAME=glass CANDIDATE_PORT=15360 CANDIDATE_CMD=bench/dns-candidate.sh \
#     ../shared/bench/dns-bench.sh | tee dns.txt
# Knobs: GLASS_BIN (default: target/release/glass next to this script's repository).
set -euo pipefail

: "${RECORDS_JSON:?set by dns-bench.sh}"
: "${CANDIDATE_PORT:?set by dns-bench.sh}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLASS_BIN="${GLASS_BIN:-$ROOT/target/release/glass}"
[[ -x "$GLASS_BIN" ]] || { echo "dns-candidate: $GLASS_BIN missing (cargo build --release -p glass)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/glass-dns-candidate.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/providers" "$WORK/data"

python3 - "$RECORDS_JSON" "$WORK/providers/bench.json" <<'PY'
import json, sys

records = json.load(open(sys.argv[1]))
DOMAIN = "glass"

def labels(name):
    parts = name.rstrip(".").split(".")
    if len(parts) != 6 or parts[-1] != DOMAIN:
        sys.exit(f"dns-candidate: {name} is not <label>.<job>.<env>.<product>.<zone>.{DOMAIN}.")
    return parts[:5]

addresses, hosts, service_a = {}, {}, {}
for r in records:
    if r["type"] == "A":
        addresses.setdefault(r["name"], set()).add(r["ip"])
for r in records:
    if r["type"] != "SRV":
        continue
    port_name, job, env, product, zone = labels(r["name"])
    target = r["target"]
    t_id, t_job, t_env, t_product, t_zone = labels(target)
    if (t_job, t_env, t_product, t_zone) != (job, env, product, zone):
        sys.exit(f"dns-candidate: {target} is not in the job of {r['name']}")
    host = hosts.setdefault(target, {"id": t_id, "product": product, "env": env, "job": job,
                                     "zone": zone, "ports": {}})
    host["ports"][port_name] = r["port"]
    service_a.setdefault(r["name"], set())
for target, host in hosts.items():
    ips = addresses.get(target, set())
    if len(ips) != 1:
        sys.exit(f"dns-candidate: {target} needs exactly one A record, has {sorted(ips)}")
    host["address"] = ips.pop()
# Glass derives a service name's A records from its instances: check the bench agrees.
for r in records:
    if r["type"] == "SRV":
        service_a[r["name"]].add(hosts[r["target"]]["address"])
for name, want in service_a.items():
    if addresses.get(name, set()) != want:
        sys.exit(f"dns-candidate: A records of {name} are not its SRV targets' addresses")
json.dump({"instances": sorted(hosts.values(), key=lambda h: (h["job"], h["id"]))},
          open(sys.argv[2], "w"), indent=1)
print(f"dns-candidate: {len(hosts)} instances, {len(service_a)} services", file=sys.stderr)
PY

# Not `exec`: the trap removes the temp dir when Glass exits (the bench stops
# the whole process group).
"$GLASS_BIN" serve --dev \
  --dns-addr "127.0.0.1:$CANDIDATE_PORT" \
  --api-addr 127.0.0.1:0 \
  --gateway-addr 127.0.0.1:0 \
  --access-log off \
  --data-dir "$WORK/data" \
  --providers-dir "$WORK/providers" \
  --zone eu1 \
  --log-level warn
