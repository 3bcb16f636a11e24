#!/usr/bin/env bash
# Gateway memory over time under reconnect churn: the soak that section 3
# of BENCHMARKS.md quotes. Writes Markdown to stdout (progress to stderr).
#
#   ./scripts/soak-memory.sh [SECONDS] [SAMPLE_EVERY]     (default 1200 60)
#
# Environment (defaults in brackets):
#   SOAK_TERMINALS [500]   simulated terminals
#   SOAK_RATE [50]         presses per second, all terminals together
#   PRESSLINE_BIN [built here]  directory of prebuilt release binaries
#   SOAK_KILL_RATE [0.2]   power cuts per terminal per second (0: no churn);
#                          each one drops the connection, and the terminal
#                          reboots from its flash and reconnects
#
# The gateway forwards to a Mosquitto (Debian's) started for the run, as
# deployed: without an upstream, every press and health document would stay
# in the outbox and the figure would be the outbox growing, not churn.
# The gateway's RSS is sampled every SAMPLE_EVERY seconds. Compare a run
# with SOAK_KILL_RATE=0 of the same length to tell churn from what the
# stored presses cost (BENCHMARKS.md, section 3b).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-1200}
EVERY=${2:-60}
TERMINALS=${SOAK_TERMINALS:-500}
RATE=${SOAK_RATE:-50}
KILL_RATE=${SOAK_KILL_RATE:-0.2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pressline/target}"
if [ -n "${PRESSLINE_BIN:-}" ]; then
    BIN=$PRESSLINE_BIN # prebuilt release binaries, e.g. a copy kept while the tree changes
else
    cargo build --release --locked --bin gateway --bin terminal-sim >&2
    BIN="$CARGO_TARGET_DIR/release"
fi
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
rss_mb() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

mqtt=$(free_port); mqtt_v5=$(free_port); http=$(free_port); upstream=$(free_port)
printf 'user root\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\nlistener %s 127.0.0.1\n' \
    "$upstream" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
wait_port "$upstream" || { tail -3 "$WORK/mosquitto.log" >&2; exit 1; }
RUST_LOG=warn "$BIN/gateway" run --open --site soak --data-dir "$WORK/data" --upstream "mqtt://127.0.0.1:$upstream" \
    --mqtt-listen "127.0.0.1:$mqtt" --mqtt-v5-listen "127.0.0.1:$mqtt_v5" --http-listen "127.0.0.1:$http" \
    >"$WORK/gateway.log" 2>&1 &
gw=$!
{ wait_port "$mqtt" && wait_port "$http"; } || { tail -3 "$WORK/gateway.log" >&2; exit 1; }
idle=$(rss_mb "$gw")
"$BIN/terminal-sim" --broker "127.0.0.1:$mqtt" --terminals "$TERMINALS" --presses 10000000 \
    --rate "$RATE" --kill-rate "$KILL_RATE" --heartbeat-secs 5 --duration "$SECS" --timeout "$SECS" \
    --json >"$WORK/sim.json" 2>"$WORK/sim.log" &
sim=$!

echo "## Gateway memory under reconnect churn"
echo
echo "$TERMINALS terminals, $RATE presses/s in all, $KILL_RATE power cuts per terminal per second, $SECS s;"
echo "upstream: a local Mosquitto, no subscribers."
echo
echo "| elapsed | gateway RSS MiB |"
echo "|---:|---:|"
echo "| 0 s (idle) | $idle |"
elapsed=0
while [ "$elapsed" -lt "$SECS" ] && kill -0 "$sim" 2>/dev/null; do
    sleep "$EVERY"
    elapsed=$((elapsed + EVERY))
    kill -0 "$gw" 2>/dev/null || { echo "the gateway stopped: $(tail -3 "$WORK/gateway.log")" >&2; exit 1; }
    echo "| $elapsed s | $(rss_mb "$gw") |"
    echo "soak: ${elapsed}s" >&2
done
wait "$sim" || true
pending=$(curl -s -H "Authorization: Bearer $(cat "$WORK/data/api-token")" "http://127.0.0.1:$http/api/v1/stats" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['forward_pending'])")
echo
echo "Outbox entries still waiting for the upstream at the end: $pending."
echo
python3 - "$WORK/sim.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"Simulator: {r['presses']} presses, {r['acked']} acked, {r['power_cuts']} power cuts, "
      f"{r['reconnects']} reconnects.")
EOF
echo
echo "Machine: $(nproc) vCPU, $(uname -sr); $(date -u +%F); command: ./scripts/soak-memory.sh $SECS $EVERY" \
    "(SOAK_TERMINALS=$TERMINALS SOAK_RATE=$RATE SOAK_KILL_RATE=$KILL_RATE)"
