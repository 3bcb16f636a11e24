#!/usr/bin/env bash
# Press-ingest benchmark: the Pressline gateway against Mosquitto (Debian's) on
# the same machine, same load, same run. Prints a Markdown table for
# BENCHMARKS.md.
#
#   ./scripts/bench.sh [TERMINALS] [PRESSES_PER_TERMINAL] [RUNS]
#
# Load: terminal-sim, TERMINALS terminals each publishing PRESSES presses as
# fast as their session allows (32 awaiting an ack per terminal), QoS 1.
# Scenarios:
#   gateway, durable ack  - what real terminals get: released only after the
#                           press is committed to sled and fsynced
#   gateway, PUBACK       - released on the embedded broker's PUBACK (the
#                           gateway still stores everything)
#   mosquitto, PUBACK     - Debian's Mosquitto as the broker (stores nothing)
# Reported: median wall time over RUNS, presses/s, broker CPU seconds and peak
# RSS (VmHWM) of the broker process.
set -euo pipefail
cd "$(dirname "$0")/.."
TERMINALS=${1:-50}
PRESSES=${2:-400}
RUNS=${3:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pressline/target}"
cargo build --release --locked --bin gateway --bin terminal-sim >&2
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
TICKS=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
cpu_secs() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
peak_rss_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# run_one NAME MODE -> "wall_ms cpu_s rss_mb"
run_one() {
    local kind=$1 mode=$2 port pid
    port=$(free_port)
    if [ "$kind" = gateway ]; then
        RUST_LOG=warn "$BIN/gateway" run --site bench --data-dir "$WORK/data-$RANDOM" \
            --mqtt-listen "127.0.0.1:$port" --http-listen "127.0.0.1:$(free_port)" >"$WORK/gw.log" 2>&1 &
    else
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$port" >"$WORK/m.conf"
        mosquitto -c "$WORK/m.conf" >"$WORK/m.log" 2>&1 &
    fi
    pid=$!
    wait_port "$port"
    local report
    report=$("$BIN/terminal-sim" --broker "127.0.0.1:$port" --terminals "$TERMINALS" --presses "$PRESSES" \
        --rate 0 --ack-mode "$mode" --timeout 600 --json)
    local wall cpu rss
    wall=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["complete"], r; print(r["elapsed_ms"])' "$report")
    cpu=$(cpu_secs "$pid"); rss=$(peak_rss_mb "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$wall $cpu $rss"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

total=$((TERMINALS * PRESSES))
echo "| scenario | presses | wall (median of $RUNS) | presses/s | broker CPU s | broker peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for scenario in "gateway durable" "gateway puback" "mosquitto puback"; do
    set -- $scenario
    : >"$WORK/res"
    for _ in $(seq 1 "$RUNS"); do run_one "$1" "$2" >>"$WORK/res"; done
    wall=$(cut -d' ' -f1 "$WORK/res" | median)
    cpu=$(cut -d' ' -f2 "$WORK/res" | median)
    rss=$(cut -d' ' -f3 "$WORK/res" | median)
    label="$1, $( [ "$2" = durable ] && echo 'durable ack (fsynced)' || echo 'PUBACK (in memory)')"
    rate=$(python3 -c "print(round($total / ($wall / 1000)))")
    echo "| $label | $total | $(python3 -c "print(f'{$wall/1000:.2f} s')") | $rate | $cpu | $rss |"
done
