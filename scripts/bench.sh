#!/usr/bin/env bash
# The Pressline benchmark suite, with Debian's Mosquitto as the peer in the
# same run on the same machine. Writes Markdown for BENCHMARKS.md to stdout
# (progress to stderr).
#
#   ./scripts/bench.sh [RUNS]          (default 3; each figure is a median)
#
# Environment (defaults in brackets):
#   BENCH_TERMINALS [100] BENCH_PRESSES [2000]   ingest load
#   BENCH_CONNECTIONS [10000]                    concurrent terminals
#   BENCH_BACKLOG [1000000]                      presses stored before the drain
#   BENCH_HISTORY [1000000] BENCH_HISTORY_RATE [20000]   memory as history grows
#   PRESSLINE_BIN [built here]                directory of prebuilt release binaries
#   BENCH_CENTRAL [100000]                       presses for section 6
#   BENCH_PRESS_BATCH [100]                      upstream.press_batch of the gateways in section 6
#   BENCH_SWAP_ROUNDS [10]                       flashes started over in section 3d (100,000 presses each)
#   BENCH_SECTIONS ["1 2 3 4"]                   which sections to run (5 needs 3 and 4; 3d, 3e, 6, 7, 8 and 9 on request)
#   BENCH_REPORT_PRESSES [10000000]              presses in the central database of sections 7 and 9
#   BENCH_PAGE_LOADS [100]                       loads of each web page from the rollups in section 9
#   BENCH_ENERGY_SECS [300]                      length of section 8's host run
#
# 1. Ingest ceiling: BENCH_TERMINALS x BENCH_PRESSES presses, QoS 1, through
#    (a) the gateway (dedup, durable sled commit, application ack),
#    (b) bare rumqttd with the gateway's broker settings relaying to one
#        subscriber, (c) Mosquitto relaying to one subscriber.
# 2. Latency at 1,000 presses/s: press -> durable ack (simulator), and
#    press -> arrival at a subscriber of the upstream Mosquitto.
#    2b (on request): the same latency while one more client (paho-mqtt)
#    floods 200,000 JSON presses: in order (seq 0, 1, 2, ...)
#    and with every other seq missing (0, 2, 4, ...), the pattern that
#    grows a deduplication record with every press.
# 3. Memory: gateway RSS idle and with BENCH_CONNECTIONS terminals
#    connected and heartbeating; RSS as BENCH_HISTORY presses are stored
#    and forwarded (every 100,000), idle RSS after a restart on that data,
#    and disk per stored, delivered press.
#    3d (on request, or with 3): a season with swaps: 100 terminal ids,
#    BENCH_SWAP_ROUNDS rounds of 100,000 presses, each round on fresh
#    flashes (a new boot generation for every id, as a spare or a
#    reflashed board starts): every press stored, RSS per round against
#    the upstream Mosquitto's in the same run, idle RSS after a restart.
#    3e (on request): ids that come and go: 1,000,000 presses over 100
#    unknown terminal ids and over 1,000, gateway RSS once they are
#    forgotten (open mode), against the upstream Mosquitto's.
# 4. Backlog drain: BENCH_BACKLOG stored presses forwarded to a freshly
#    started Mosquitto, with live presses (100/s) timed during the drain;
#    once with a subscriber of the live presses only, once with a consumer
#    of every press on the same machine.
#    RSS with the whole backlog waiting in the outbox.
# 5. Storage: bytes on disk per stored press, delivered and waiting.
# 6. Central side (on request: BENCH_SECTIONS="6"): (6a) pressline-central
#    taking BENCH_CENTRAL press messages from the quorum queue of a
#    three-node RabbitMQ cluster into PostgreSQL, against a plain `COPY` of
#    the same rows into a table of the same schema; (6b) presses/s from
#    terminals through the gateway to the upstream broker's acknowledgement:
#    the RabbitMQ cluster (quorum queue) against one Mosquitto.
# 7. Central reports (on request): `fleet report` (7 days, their change,
#    4 weeks of hour x weekday) over BENCH_REPORT_PRESSES presses from 200
#    sites in five time zones across 52 weeks, read from the rollups
#    against the same report read from every press.
# 9. Central web view (on request): the network overview and a site page
#    of `pressline-central web` over section 7's database, server time per
#    page (p50, p95 of BENCH_PAGE_LOADS loads), against the same pages
#    computed from every press (`source=presses`, 5 loads).
# 8. Battery life (on request, as root: a network namespace): two host
#    terminals (battery with a 60 s upload delay, and mains) take the same
#    presses against the gateway; their counters and the firmware's power
#    plan over a simulated day give the estimated life on 3 x AA and 4 x D
#    at 100, 500 and 2,000 presses a day (tests/tests/battery_life.rs).
# Sections 1 and 2 also run the production transport: terminals over the
# gateway's TLS listener (ingest), and upstream over mqtts:// (latency),
# with a private CA made by openssl for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TERMINALS=${BENCH_TERMINALS:-100}
PRESSES=${BENCH_PRESSES:-2000}
CONNECTIONS=${BENCH_CONNECTIONS:-10000}
BACKLOG=${BENCH_BACKLOG:-1000000}
HISTORY=${BENCH_HISTORY:-1000000}
HISTORY_RATE=${BENCH_HISTORY_RATE:-20000}
SWAP_ROUNDS=${BENCH_SWAP_ROUNDS:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pressline/target}"
if [ -n "${PRESSLINE_BIN:-}" ]; then
    BIN=$PRESSLINE_BIN # prebuilt release binaries, e.g. a copy kept while the tree changes
else
    cargo build --release --locked --bin gateway --bin terminal-sim --bin bench-relay --bin bench-subscriber \
        --bin pressline-central --bin fleet >&2
    BIN="$CARGO_TARGET_DIR/release"
fi
WORK=$(mktemp -d)
# Servers a section starts are stopped at exit whatever happens: each adds
# its stop command here.
STOPS=()
cleanup() {
    local stop
    for stop in "${STOPS[@]+"${STOPS[@]}"}"; do eval "$stop" >/dev/null 2>&1 || true; done
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
TICKS=$(getconf CLK_TCK)
# Thousands of simulated terminals need thousands of sockets.
ulimit -n "$(ulimit -Hn)"

log() { echo "bench: $*" >&2; }
# PostgreSQL of the run's own (Debian's newest installed server), in
# $WORK/NAME on a free loopback port, stopped at exit; its URL in
# $STARTED_PG_URL. As root the server runs as the postgres user.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() { # NAME
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    local dir="$WORK/$1" port
    mkdir -p "$dir"; chmod 755 "$WORK"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    as_pg "$PG_BIN/initdb" -D "$dir" -U pressline --auth=trust -E UTF8 --no-sync >/dev/null
    port=$(free_port)
    as_pg "$PG_BIN/pg_ctl" -D "$dir" -w -l "$dir/server.log" \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir" start >/dev/null
    STOPS+=("as_pg \"\$PG_BIN/pg_ctl\" -D \"$dir\" -m immediate stop")
    STARTED_PG_URL="postgres://pressline@127.0.0.1:$port/postgres"
}
SECTIONS=" ${BENCH_SECTIONS:-1 2 3 4} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
# A private CA and a certificate for localhost/127.0.0.1 (keys owner-only).
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/tls/srv.key" -out "$WORK/tls/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/tls/ext"
openssl x509 -req -in "$WORK/tls/srv.csr" -CA "$WORK/tls/ca.pem" -CAkey "$WORK/tls/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/tls/ext" -out "$WORK/tls/srv.pem" 2>/dev/null
chmod 600 "$WORK/tls/"*.key
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
wait_file() { for _ in $(seq 1 400); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "$1 never appeared" >&2; exit 1; }
cpu_secs() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
rss_mb() { awk -v k="$2" '$1 == k":" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
now_us() { python3 -c 'import time; print(int(time.time() * 1e6))'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
json() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"r": r}))' "$1" "$2"; }
stat_of() { curl -s -H "Authorization: Bearer $(cat "$1/api-token")" "http://127.0.0.1:$2/api/v1/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$3'])"; }

start_gateway() { # DATA_DIR MQTT_PORT HTTP_PORT [UPSTREAM_URL] [CONFIG] -> pid in $GW_PID
    local args=(run --open --site bench --data-dir "$1" --mqtt-listen "127.0.0.1:$2" --http-listen "127.0.0.1:$3"
        --mqtt-v5-listen "127.0.0.1:$(free_port)")
    [ -n "${4:-}" ] && args+=(--upstream "$4")
    [ -n "${5:-}" ] && args+=(--config "$5")
    RUST_LOG=warn "$BIN/gateway" "${args[@]}" >>"$WORK/gateway.log" 2>&1 &
    GW_PID=$!
    wait_port "$2"; wait_port "$3"
}
start_mosquitto() { # PORT [TLS_PORT] -> pid in $MQ_PID
    # As deploy/mosquitto-central.conf recommends: TCP_NODELAY, unlimited queues.
    printf 'user root\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\nlistener %s 127.0.0.1\n' "$1" >"$WORK/m-$1.conf"
    [ -n "${2:-}" ] && printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n' "$2" "$WORK/tls/srv.pem" "$WORK/tls/srv.key" >>"$WORK/m-$1.conf"
    mosquitto -c "$WORK/m-$1.conf" >"$WORK/m-$1.log" 2>&1 &
    MQ_PID=$!
    wait_port "$1"
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- 1. ingest
if want 1; then
TOTAL=$((TERMINALS * PRESSES))
ingest_run() { # KIND -> "rate cpu rss delivered"
    local kind=$1 port pid start report end delivered sub_out
    port=$(free_port)
    local broker="127.0.0.1:$port" tls_args=()
    case $kind in
        gateway) start_gateway "$WORK/ingest-$RANDOM" "$port" "$(free_port)"; pid=$GW_PID ;;
        gateway-tls)
            printf '[mqtt]\ntls_listen = "127.0.0.1:%s"\ntls_cert_file = "%s"\ntls_key_file = "%s"\n' \
                "$port" "$WORK/tls/srv.pem" "$WORK/tls/srv.key" >"$WORK/tls.toml"
            start_gateway "$WORK/ingest-$RANDOM" "$(free_port)" "$(free_port)" "" "$WORK/tls.toml"; pid=$GW_PID
            wait_port "$port"; broker="localhost:$port"; tls_args=(--tls-ca "$WORK/tls/ca.pem") ;;
        rumqttd) "$BIN/bench-relay" --listen "127.0.0.1:$port" >"$WORK/relay.log" 2>&1 & pid=$!; wait_port "$port" ;;
        mosquitto) start_mosquitto "$port"; pid=$MQ_PID ;;
    esac
    local mode=durable sub_pid=""
    if [ "$kind" != gateway ] && [ "$kind" != gateway-tls ]; then
        mode=puback
        rm -f "$WORK/ready" "$WORK/sub.json"
        "$BIN/bench-subscriber" --broker "127.0.0.1:$port" --topic 'pressline/v1/term/+/press' \
            --count "$TOTAL" --idle-secs 5 --ready-file "$WORK/ready" >"$WORK/sub.json" &
        sub_pid=$!
        wait_file "$WORK/ready"
    fi
    start=$(now_us)
    report=$("$BIN/terminal-sim" --broker "$broker" "${tls_args[@]}" --terminals "$TERMINALS" --presses "$PRESSES" \
        --rate 0 --ack-mode "$mode" --timeout 900 --json)
    [ "$(json "$report" 'r["complete"]')" = True ] || { echo "incomplete run: $report" >&2; exit 1; }
    if [ -n "$sub_pid" ]; then
        wait "$sub_pid"
        sub_out=$(cat "$WORK/sub.json")
        delivered=$(json "$sub_out" 'r["count"]')
        end=$(json "$sub_out" 'max(r["last_us"], 0)')
    else
        delivered=$TOTAL # every press durably acked is stored (the gateway's own count says so)
        end=$(( start + $(json "$report" 'r["elapsed_ms"]') * 1000 ))
    fi
    local cpu rss
    cpu=$(cpu_secs "$pid"); rss=$(rss_mb "$pid" VmHWM)
    stop "$pid"
    python3 -c "print(round($delivered / (($end - $start) / 1e6)), '$cpu', '$rss', $delivered)"
}

declare -A RATE CPU
echo "## 1. Ingest ceiling: $TERMINALS terminals x $PRESSES presses, QoS 1 (median of $RUNS)"
echo
echo "| path | presses/s | delivered | broker CPU s | broker peak RSS MiB |"
echo "|---|---:|---:|---:|---:|"
for kind in gateway gateway-tls rumqttd mosquitto; do
    : >"$WORK/res"
    for run in $(seq 1 "$RUNS"); do log "ingest $kind run $run"; ingest_run "$kind" >>"$WORK/res"; done
    rate=$(cut -d' ' -f1 "$WORK/res" | median)
    RATE[$kind]=$rate
    CPU[$kind]=$(cut -d' ' -f2 "$WORK/res" | median)
    label=$(case $kind in
        gateway) echo "(a) gateway: dedup + durable sled commit + application ack" ;;
        gateway-tls) echo "(a') the same, terminals over the gateway's TLS listener" ;;
        rumqttd) echo "(b) bare rumqttd (gateway's settings) relaying to 1 subscriber" ;;
        mosquitto) echo "(c) Mosquitto relaying to 1 subscriber" ;;
    esac)
    echo "| $label | $rate | $(cut -d' ' -f4 "$WORK/res" | median) of $TOTAL | $(cut -d' ' -f2 "$WORK/res" | median) | $(cut -d' ' -f3 "$WORK/res" | median) |"
done
echo
python3 -c "a,t,b,c=${RATE[gateway]},${RATE[gateway-tls]},${RATE[rumqttd]},${RATE[mosquitto]}; print(f'(a)/(b) = {a/b:.2f} (target >= 0.5), (a)/(c) = {a/c:.2f} (target >= 3); TLS terminals: (a\')/(a) = {t/a:.2f}')"
python3 -c "g,m=${CPU[gateway]},${CPU[mosquitto]}; print(f'CPU: gateway {g / $TOTAL * 1e6:.1f} us per durable press, Mosquitto {m / $TOTAL * 1e6:.1f} us per relayed message (target: gateway <= Mosquitto)')"
echo

fi

# --------------------------------------------------------------- 2. latency
if want 2; then
latency_run() { # [tls] -> "ack_p50 ack_p99 ack_max up_p50 up_p99 up_max" in ms
    local mq gw http report mqs upstream conf=""
    mq=$(free_port); gw=$(free_port); http=$(free_port); mqs=$(free_port)
    start_mosquitto "$mq" "$mqs"; local mq_pid=$MQ_PID
    wait_port "$mqs"
    upstream="mqtt://127.0.0.1:$mq"
    if [ "${1:-}" = tls ]; then
        upstream="mqtts://localhost:$mqs"
        printf '[upstream]\nca_file = "%s"\n' "$WORK/tls/ca.pem" >"$WORK/lat-tls.toml"; conf="$WORK/lat-tls.toml"
    fi
    start_gateway "$WORK/lat-$RANDOM" "$gw" "$http" "$upstream" "$conf"; local gw_pid=$GW_PID
    rm -f "$WORK/ready"
    "$BIN/bench-subscriber" --broker "127.0.0.1:$mq" --topic 'pressline/v1/bench/+/press' \
        --count 10000 --idle-secs 5 --ready-file "$WORK/ready" --ids-out "$WORK/arrivals" >/dev/null &
    local sub_pid=$!
    wait_file "$WORK/ready"
    report=$("$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 100 --presses 100 --rate 1000 --press-once-connected \
        --press-log "$WORK/presses" --timeout 300 --json)
    wait "$sub_pid"
    stop "$gw_pid"; stop "$mq_pid"
    python3 - "$report" "$WORK/presses" "$WORK/arrivals" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
made = {}
for line in open(sys.argv[2]):
    t, boot, seq, us = line.split()
    made[f"bench:{t}:{boot}:{seq}"] = int(us)
lat = []
for line in open(sys.argv[3]):
    pid, us = line.split()
    if pid in made:
        lat.append(int(us) - made.pop(pid))
lat.sort()
q = lambda p: lat[round((len(lat) - 1) * p)] / 1000
a = r["ack_latency"]
assert len(lat) == 10000, f"{len(lat)} of 10000 presses arrived upstream"
print(a["p50_us"] / 1000, a["p99_us"] / 1000, a["max_us"] / 1000, q(0.5), q(0.99), q(1.0))
PY
}
echo "## 2. Latency at 1,000 presses/s (100 terminals, 10,000 presses; median of $RUNS runs)"
echo
: >"$WORK/res"
for run in $(seq 1 "$RUNS"); do log "latency run $run"; latency_run >>"$WORK/res"; done
: >"$WORK/res-tls"
for run in $(seq 1 "$RUNS"); do log "latency run $run, upstream over TLS"; latency_run tls >>"$WORK/res-tls"; done
col() { cut -d' ' -f"$1" "${2:-$WORK/res}" | median; }
echo "| path | p50 ms | p99 ms | max ms | target p99 |"
echo "|---|---:|---:|---:|---:|"
echo "| press -> durable application ack | $(col 1) | $(col 2) | $(col 3) | 10 ms |"
echo "| press -> upstream subscriber | $(col 4) | $(col 5) | $(col 6) | 25 ms |"
echo "| press -> upstream subscriber, upstream over mqtts:// | $(col 4 "$WORK/res-tls") | $(col 5 "$WORK/res-tls") | $(col 6 "$WORK/res-tls") | 25 ms |"
echo

fi

# ------------------------------------------------ 2b. latency beside a flood
if want 2b; then
PY=${PRESSLINE_PYTHON:-$HOME/.cache/pressline/venv/bin/python} # with paho-mqtt, as scripts/test.sh sets up
flood_run() { # STEP|none -> "ack_p50 ack_p99 ack_max flood_secs" (ms, s)
    local gw http report flood_pid="" start end data="$WORK/flood-$RANDOM"
    gw=$(free_port); http=$(free_port)
    start_gateway "$data" "$gw" "$http"; local gw_pid=$GW_PID
    if [ "$1" != none ]; then
        start=$(date +%s.%N)
        "$PY" - "$gw" "$1" <<'PY' &
# 200,000 JSON presses from one terminal (paho-mqtt, QoS 1, 100 in
# flight), seq 0, STEP, 2 x STEP, ..., over four connections one after the
# other: paho gives every queued message a 16-bit id, so more than 65,535
# queued at once collide and stall it (against any broker). Exits once
# every press is PUBACKed.
import json, sys, threading
import paho.mqtt.client as mqtt
port, step = int(sys.argv[1]), int(sys.argv[2])
for part in range(4):
    done = threading.Semaphore(0)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood")
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.on_publish = lambda *a: done.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in range(part * 50_000, (part + 1) * 50_000):
        press = {"seq": i * step, "button": "happy", "boot": 7, "terminal": "flood"}
        c.publish("pressline/v1/term/flood/press/json", json.dumps(press), qos=1)
    for _ in range(50_000):
        done.acquire()
    c.disconnect()
    c.loop_stop()
PY
        flood_pid=$!
    fi
    report=$("$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 100 --presses 100 --rate 1000 --press-once-connected \
        --timeout 300 --json)
    if [ -n "$flood_pid" ]; then
        wait "$flood_pid"
        # Stored means committed: the flood is over when its last press is.
        for _ in $(seq 1 3000); do
            [ "$(stat_of "$data" "$http" presses_stored)" -ge 210000 ] && break
            sleep 0.1
        done
        [ "$(stat_of "$data" "$http" presses_stored)" -ge 210000 ] || { echo "the flood was not all stored" >&2; exit 1; }
        end=$(date +%s.%N)
    fi
    stop "$gw_pid"
    python3 - "$report" "${start:-0}" "${end:-0}" <<'PY'
import json, sys
a = json.loads(sys.argv[1])["ack_latency"]
print(a["p50_us"] / 1000, a["p99_us"] / 1000, a["max_us"] / 1000, f"{float(sys.argv[3]) - float(sys.argv[2]):.1f}")
PY
}
echo "## 2b. Latency at 1,000 presses/s beside a 200,000-press flood (median of $RUNS runs)"
echo
echo "| one more client sends | p50 ms | p99 ms | max ms | flood stored in s |"
echo "|---|---:|---:|---:|---:|"
for step in ${BENCH_FLOOD_STEPS:-none 1 2}; do
    : >"$WORK/res-flood"
    for run in $(seq 1 "$RUNS"); do log "latency beside a flood, step $step, run $run"; flood_run "$step" >>"$WORK/res-flood"; done
    label=$(case $step in none) echo "nothing";; 1) echo "200,000 presses, seq 0, 1, 2, ...";; 2) echo "200,000 presses, seq 0, 2, 4, ...";; esac)
    flood_secs=$(cut -d' ' -f4 "$WORK/res-flood" | median)
    [ "$step" = none ] && flood_secs="-"
    echo "| $label | $(cut -d' ' -f1 "$WORK/res-flood" | median) | $(cut -d' ' -f2 "$WORK/res-flood" | median) | $(cut -d' ' -f3 "$WORK/res-flood" | median) | $flood_secs |"
done
echo

fi

# ----------------------------------------------------------- 3. connections
if want 3; then
echo "## 3. Connections: $CONNECTIONS terminals with heartbeats"
echo
gw=$(free_port); http=$(free_port)
printf '[mqtt]\nmax_terminals = %s\n' "$((CONNECTIONS + 100))" >"$WORK/conn.toml"
start_gateway "$WORK/conn-data" "$gw" "$http" "" "$WORK/conn.toml"; conn_pid=$GW_PID
sleep 2 # settle after start-up before reading the idle figure (a reading, not synchronisation)
idle=$(rss_mb "$conn_pid" VmRSS)
"$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals "$CONNECTIONS" --presses 0 --duration 3600 \
    --heartbeat-secs 30 --timeout 3600 --json >/dev/null 2>"$WORK/conn-sim.log" &
conn_sim=$!
connect_start=$(date +%s.%N)
for _ in $(seq 1 1200); do
    [ "$(stat_of "$WORK/conn-data" "$http" heartbeats_received)" -ge "$CONNECTIONS" ] && break
    sleep 0.5
done
connected=$(stat_of "$WORK/conn-data" "$http" heartbeats_received)
connect_secs=$(python3 -c "import time; print(round(time.time() - $connect_start, 1))")
at_n=$(rss_mb "$conn_pid" VmRSS); peak=$(rss_mb "$conn_pid" VmHWM)
stop "$conn_sim"; stop "$conn_pid"
echo "| gateway RSS idle | RSS with $connected terminals connected | peak RSS | connect time | target |"
echo "|---:|---:|---:|---:|---|"
echo "| $idle MiB | $at_n MiB | $peak MiB | $connect_secs s | <= 30 MB idle, <= 200 MB at 10k |"
echo

# A steady rate the forwarder keeps up with, so RSS shows what history
# costs, not a forwarding backlog (section 4 measures that).
echo "## 3b. Memory as history grows: $HISTORY presses at $HISTORY_RATE/s, upstream connected"
echo
gw=$(free_port); http=$(free_port); mq=$(free_port)
start_mosquitto "$mq"; hist_mq=$MQ_PID
start_gateway "$WORK/hist-data" "$gw" "$http" "mqtt://127.0.0.1:$mq"; hist_pid=$GW_PID
"$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 100 --presses "$((HISTORY / 100))" --rate "$HISTORY_RATE" \
    --id-prefix hist --timeout 3600 --json >/dev/null &
hist_sim=$!
echo "| presses stored | RSS MiB | waiting upstream |"
echo "|---:|---:|---:|"
next=100000
while kill -0 "$hist_sim" 2>/dev/null || [ "$next" -le "$HISTORY" ]; do
    stored=$(stat_of "$WORK/hist-data" "$http" presses_stored)
    if [ "$stored" -ge "$next" ]; then
        echo "| $stored | $(rss_mb "$hist_pid" VmRSS) | $(stat_of "$WORK/hist-data" "$http" forward_pending) |"
        next=$((next + 100000))
    fi
    # Read again: the simulator may have finished (every press acked, so
    # stored) since the reading above.
    kill -0 "$hist_sim" 2>/dev/null || [ "$(stat_of "$WORK/hist-data" "$http" presses_stored)" -ge "$HISTORY" ] ||
        { echo "history run stopped early" >&2; exit 1; }
    sleep 0.2
done
wait "$hist_sim"
for _ in $(seq 1 600); do
    [ "$(stat_of "$WORK/hist-data" "$http" forward_pending)" -eq 0 ] && break
    sleep 0.2
done
hist_rss=$(rss_mb "$hist_pid" VmRSS)
stop "$hist_pid"
hist_disk=$(du -sb "$WORK/hist-data" | cut -f1)
start_gateway "$WORK/hist-data" "$gw" "$http" "mqtt://127.0.0.1:$mq"; hist_pid=$GW_PID
sleep 10 # the restart's idle figure, read after start-up settles (not synchronisation)
hist_idle=$(rss_mb "$hist_pid" VmRSS)
stop "$hist_pid"; stop "$hist_mq"
echo
echo "After all $HISTORY delivered: RSS $hist_rss MiB (target <= 96 MiB, within 15 % of the 100,000 row); idle after a restart on that data: $hist_idle MiB (target <= 48 MiB); disk $hist_disk bytes, $((hist_disk / HISTORY)) bytes per stored, delivered press (target <= 120)."
echo

fi

# ------------------------------------------------- 3d. a season with swaps
if want 3 || want 3d; then
# Each terminal-sim run starts with erased in-memory flash, as a spare
# provisioned under a broken terminal's id or a board reflashed with
# probe-rs does: the same 100 ids, a new boot generation each round.
echo "## 3d. A season with swaps: 100 terminal ids, $SWAP_ROUNDS rounds of 100,000 presses, fresh flash each round"
echo
gw=$(free_port); http=$(free_port); mq=$(free_port)
start_mosquitto "$mq"; swap_mq=$MQ_PID
start_gateway "$WORK/swap-data" "$gw" "$http" "mqtt://127.0.0.1:$mq"; swap_pid=$GW_PID
echo "| round | presses stored | duplicates | gateway RSS MiB | upstream Mosquitto RSS MiB |"
echo "|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$SWAP_ROUNDS"); do
    "$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 100 --presses 1000 --rate "$HISTORY_RATE" \
        --id-prefix swap --timeout 600 --json >"$WORK/swap-$round.json"
    stored=$(stat_of "$WORK/swap-data" "$http" presses_stored)
    [ "$stored" -eq $((round * 100000)) ] ||
        { echo "round $round: $stored presses stored, expected $((round * 100000))" >&2; exit 1; }
    for _ in $(seq 1 600); do
        [ "$(stat_of "$WORK/swap-data" "$http" forward_pending)" -eq 0 ] && break
        sleep 0.2
    done
    echo "| $round | $stored | $(stat_of "$WORK/swap-data" "$http" presses_duplicate) | $(rss_mb "$swap_pid" VmRSS) | $(rss_mb "$swap_mq" VmRSS) |"
done
stop "$swap_pid"
start_gateway "$WORK/swap-data" "$gw" "$http" "mqtt://127.0.0.1:$mq"; swap_pid=$GW_PID
sleep 10 # the restart's idle figure, read after start-up settles (not synchronisation)
echo
echo "Idle after a restart on that data: $(rss_mb "$swap_pid" VmRSS) MiB (target <= 24 MiB); RSS at the last round within 15 % of the first and <= 40 MiB."
echo
stop "$swap_pid"; stop "$swap_mq"
fi

# ---------------------------------------- 3e. ids that come and go (open mode)
if want 3e; then
# 1,000,000 presses from 100 terminal ids, then from 1,000 ids, each run
# on a fresh gateway forwarding to its own Mosquitto; none of the ids is
# registered or in a zone, so once silent for forget_unknown_after_secs
# they are forgotten. RSS is read when every id is forgotten.
echo "## 3e. Ids that come and go: 1,000,000 presses over 100 and over 1,000 unknown ids, read once forgotten"
echo
printf '[health]\noffline_after_secs = 5\nforget_unknown_after_secs = 15\n[misuse]\nmemory_secs = 15\n' >"$WORK/forget.toml"
terminals_known() { # DATA_DIR HTTP_PORT
    curl -s -H "Authorization: Bearer $(cat "$1/api-token")" "http://127.0.0.1:$2/api/v1/terminals" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}
echo "| ids | presses stored | gateway RSS MiB, all delivered | gateway RSS MiB, ids forgotten | upstream Mosquitto RSS MiB |"
echo "|---:|---:|---:|---:|---:|"
for ids in 100 1000; do
    gw=$(free_port); http=$(free_port); mq=$(free_port)
    start_mosquitto "$mq"; ids_mq=$MQ_PID
    start_gateway "$WORK/ids-$ids" "$gw" "$http" "mqtt://127.0.0.1:$mq" "$WORK/forget.toml"; ids_pid=$GW_PID
    "$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals "$ids" --presses $((1000000 / ids)) \
        --rate "$HISTORY_RATE" --id-prefix "ids$ids-" --timeout 900 --json >"$WORK/ids-$ids.json"
    stored=$(stat_of "$WORK/ids-$ids" "$http" presses_stored)
    [ "$stored" -eq 1000000 ] || { echo "$ids ids: $stored presses stored, expected 1000000" >&2; exit 1; }
    for _ in $(seq 1 3000); do
        [ "$(stat_of "$WORK/ids-$ids" "$http" forward_pending)" -eq 0 ] && break
        sleep 0.2
    done
    delivered_rss=$(rss_mb "$ids_pid" VmRSS)
    for _ in $(seq 1 600); do
        [ "$(terminals_known "$WORK/ids-$ids" "$http")" -eq 0 ] && break
        sleep 0.2
    done
    [ "$(terminals_known "$WORK/ids-$ids" "$http")" -eq 0 ] || { echo "$ids ids: not forgotten" >&2; exit 1; }
    echo "| $ids | $stored | $delivered_rss | $(rss_mb "$ids_pid" VmRSS) | $(rss_mb "$ids_mq" VmRSS) |"
    stop "$ids_pid"; stop "$ids_mq"
done
echo
echo "Target: RSS once 1,000 ids are forgotten within 15 % of RSS once 100 are."
echo
fi

# ---------------------------------------------------- 4 and 5. drain, storage
if want 4; then
# Two drains. (4a) what the gateway forwards: the upstream Mosquitto PUBACKs
# every press (forward_pending reaches 0) and a subscriber takes only the
# live presses, to time them. (4b) the same with a consumer subscribed to
# every press on this machine too, so Mosquitto relays each one and three
# processes share the two cores: a lower bound for a real deployment, where
# the central broker and analytics run elsewhere.
echo "## 4. Backlog drain: $BACKLOG stored presses to a freshly started Mosquitto"
echo
echo "| upstream subscriber | drained | drain time | presses/s | gateway CPU | Mosquitto CPU | live presses timed | live p50 ms | live p99 ms | live max ms | target |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
live_topics=()
for i in $(seq 0 9); do live_topics+=(--topic "pressline/v1/bench/live$(printf %03d "$i")/press"); done
for consumer in live-only every-press; do
    gw=$(free_port); http=$(free_port); mq=$(free_port)
    rm -rf "$WORK/drain-data"
    start_gateway "$WORK/drain-data" "$gw" "$http" "mqtt://127.0.0.1:$mq"; drain_pid=$GW_PID
    log "drain ($consumer): storing $BACKLOG presses with upstream down"
    "$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 100 --presses "$((BACKLOG / 100))" --rate 0 \
        --id-prefix backlog --timeout 1800 --json >/dev/null
    stored=$(stat_of "$WORK/drain-data" "$http" presses_stored)
    disk=$(du -sb "$WORK/drain-data" | cut -f1)
    waiting_rss=$(rss_mb "$drain_pid" VmRSS)
    rm -f "$WORK/ready"
    start_mosquitto "$mq"; drain_mq=$MQ_PID
    if [ "$consumer" = live-only ]; then
        topics=("${live_topics[@]}"); expect=3000
    else
        topics=(--topic 'pressline/v1/bench/+/press'); expect=$((BACKLOG + 3000))
    fi
    "$BIN/bench-subscriber" --broker "127.0.0.1:$mq" "${topics[@]}" \
        --count "$expect" --idle-secs 10 --ready-file "$WORK/ready" --ids-out "$WORK/drain-arrivals" >/dev/null &
    drain_sub=$!
    wait_file "$WORK/ready"
    # Live presses start once the gateway is back upstream (its reconnect
    # backoff is not what this measures; presses made before the reconnect
    # are backlog by definition).
    for _ in $(seq 1 600); do
        [ "$(stat_of "$WORK/drain-data" "$http" upstream_connected)" = True ] && break
        sleep 0.1
    done
    drain_start=$(date +%s.%N)
    gw_cpu0=$(cpu_secs "$drain_pid"); mq_cpu0=$(cpu_secs "$drain_mq")
    "$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals 10 --presses 300 --rate 100 --id-prefix live \
        --press-log "$WORK/live-presses" --timeout 600 --json >/dev/null &
    live_sim=$!
    for _ in $(seq 1 3600); do
        [ "$(stat_of "$WORK/drain-data" "$http" forward_pending)" -eq 0 ] && break
        sleep 0.2
    done
    drain_secs=$(python3 -c "import time; print(time.time() - $drain_start)")
    gw_cpu=$(python3 -c "print(f'{$(cpu_secs "$drain_pid") - $gw_cpu0:.1f} s')")
    drain_peak=$(rss_mb "$drain_pid" VmHWM)
    mq_cpu=$(python3 -c "print(f'{$(cpu_secs "$drain_mq") - $mq_cpu0:.1f} s')")
    wait "$live_sim" || true
    wait "$drain_sub" || true
    stop "$drain_pid"; stop "$drain_mq"
    python3 - "$WORK/live-presses" "$WORK/drain-arrivals" "$stored" "$drain_secs" "$consumer" "$gw_cpu" "$mq_cpu" <<'PY'
import sys
made = {}
for line in open(sys.argv[1]):
    t, boot, seq, us = line.split()
    made[f"bench:{t}:{boot}:{seq}"] = int(us)
lat = []
for line in open(sys.argv[2]):
    pid, us = line.split()
    if pid in made:
        lat.append((int(us) - made.pop(pid)) / 1000)
lat.sort()
q = lambda p: lat[round((len(lat) - 1) * p)] if lat else float("nan")
stored, secs, consumer, gw_cpu, mq_cpu = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
print(f"| {consumer} | {stored} | {secs:.1f} s | {round(stored / secs)} | {gw_cpu} | {mq_cpu} | {len(lat)} | {q(0.5):.1f} | {q(0.99):.1f} | {q(1.0):.1f} | >= 50k/s, live p99 <= 100 ms |")
PY
    rm -f "$WORK/live-presses" "$WORK/drain-arrivals"
    echo "|  | RSS with all $stored waiting upstream: $waiting_rss MiB (target <= 128 MiB); peak RSS over store and drain: $drain_peak MiB |  |  |  |  |  |  |  |  |  |"
done
echo
fi
# ---------------------------------------------------------- 6. central side
if want 6; then
CENTRAL_N=${BENCH_CENTRAL:-100000}
start_postgres pg; PG_URL=$STARTED_PG_URL
STOPS+=('bash deploy/rabbitmq-cluster.sh stop "$WORK/rmq"')
psql_q() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
RMQ_BASE=$(( $(free_port) % 20000 + 30000 ))
log "central: starting a three-node RabbitMQ cluster"
bash deploy/rabbitmq-cluster.sh start "$WORK/rmq" "$RMQ_BASE" >&2
AMQP="amqp://guest:guest@127.0.0.1:$((RMQ_BASE + 11))/%2f,amqp://guest:guest@127.0.0.1:$((RMQ_BASE + 12))/%2f,amqp://guest:guest@127.0.0.1:$((RMQ_BASE + 13))/%2f"
"$BIN/pressline-central" migrate --postgres "$PG_URL" >/dev/null
"$BIN/pressline-central" declare --amqp "$AMQP" >/dev/null
# 6b: the same terminal load through the gateway to each upstream. The
# cluster's run leaves its presses in the quorum queue for 6a.
# The gateway as a central deployment sets it up: presses ready together
# go upstream as one message (upstream.press_batch).
PRESS_BATCH=${BENCH_PRESS_BATCH:-100}
printf '[upstream]\npress_batch = %s\n' "$PRESS_BATCH" >"$WORK/central-gateway.toml"
e2e_run() { # UPSTREAM_URLS -> "presses/s seconds"
    local gw http data start
    gw=$(free_port); http=$(free_port); data="$WORK/e2e-$RANDOM"
    start_gateway "$data" "$gw" "$http" "$1" "$WORK/central-gateway.toml"
    for _ in $(seq 1 600); do [ "$(stat_of "$data" "$http" upstream_connected)" = True ] && break; sleep 0.1; done
    start=$(now_us)
    "$BIN/terminal-sim" --broker "127.0.0.1:$gw" --terminals "$TERMINALS" --presses "$((CENTRAL_N / TERMINALS))" \
        --rate 0 --timeout 1800 --json >/dev/null
    for _ in $(seq 1 18000); do
        [ "$(stat_of "$data" "$http" forward_pending)" -eq 0 ] && break
        sleep 0.1
    done
    python3 -c "s = ($(now_us) - $start) / 1e6; print(round($CENTRAL_N / s), f'{s:.1f}')"
    stop "$GW_PID"
}
log "central: $CENTRAL_N presses through the gateway to the cluster"
cluster_urls="mqtt://127.0.0.1:$((RMQ_BASE + 1)),mqtt://127.0.0.1:$((RMQ_BASE + 2)),mqtt://127.0.0.1:$((RMQ_BASE + 3))"
read -r cl_rate cl_secs < <(e2e_run "$cluster_urls")
mq=$(free_port); start_mosquitto "$mq"; e2e_mq=$MQ_PID
if [ "$PRESS_BATCH" -gt 1 ]; then
    sub_topic=pressline/v1/bench/presses; sub_count=$(( (CENTRAL_N + PRESS_BATCH - 1) / PRESS_BATCH ))
else
    sub_topic='pressline/v1/bench/+/press'; sub_count=$CENTRAL_N
fi
"$BIN/bench-subscriber" --broker "127.0.0.1:$mq" --topic "$sub_topic" --count "$sub_count" \
    --idle-secs 10 --ready-file "$WORK/e2e-ready" >/dev/null &
e2e_sub=$!
wait_file "$WORK/e2e-ready"
log "central: $CENTRAL_N presses through the gateway to one Mosquitto"
read -r mq_rate mq_secs < <(e2e_run "mqtt://127.0.0.1:$mq")
wait "$e2e_sub" || true
stop "$e2e_mq"

# 6a: the consumer drains what the gateway left in the quorum queue; then
# the same rows, exported, go into a table of the same schema by COPY.
rabbit_cpu() { local t=0 i; for i in 1 2 3; do t=$(python3 -c "print($t + $(cpu_secs "$(cat "$WORK/rmq/pl$i/pid")"))"); done; echo "$t"; }
rabbit_cpu0=$(rabbit_cpu)
CONSUMERS=${BENCH_CENTRAL_CONSUMERS:-1}
central_pids=(); central_https=()
start=$(now_us)
for i in $(seq 1 "$CONSUMERS"); do
    central_http=$(free_port); central_https+=("$central_http")
    RUST_LOG=warn "$BIN/pressline-central" run --amqp "$AMQP" --postgres "$PG_URL" --http "127.0.0.1:$central_http" ${BENCH_CENTRAL_ARGS:-} \
        >>"$WORK/central.log" 2>&1 &
    central_pids+=($!)
done
central_stat() { # FIELD -> sum over the consumers
    local t=0 h v
    for h in "${central_https[@]}"; do
        v=$(curl -s "http://127.0.0.1:$h/api/v1/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" 2>/dev/null || echo 0)
        t=$(python3 -c "print($t + $v)")
    done
    echo "$t"
}
# One poller process for the whole drain: a curl and two Pythons every
# 0.1 s would take CPU from the consumer on a 2-core machine.
python3 - "$CENTRAL_N" "${central_https[@]}" <<'PYEOF2'
import json, sys, time, urllib.request
want, ports = int(sys.argv[1]), sys.argv[2:]
deadline = time.time() + 600
def inserted(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats", timeout=5) as r:
            return json.load(r)["presses_inserted"]
    except OSError:
        return 0
while sum(inserted(p) for p in ports) < want and time.time() < deadline:
    time.sleep(0.05)
PYEOF2
consumer_secs=$(python3 -c "print(($(now_us) - $start) / 1e6)")
commit_secs=$(python3 -c "print(round($(central_stat commit_seconds), 1))")
consumer_cpu=0; consumer_rss=0
for pid in "${central_pids[@]}"; do
    consumer_cpu=$(python3 -c "print(round($consumer_cpu + $(cpu_secs "$pid"), 2))")
    consumer_rss=$(python3 -c "print(max($consumer_rss, $(rss_mb "$pid" VmHWM)))")
    stop "$pid"
done
rabbit_cpu_used=$(python3 -c "print(f'{$(rabbit_cpu) - $rabbit_cpu0:.1f}')")
stored=$(psql_q "SELECT count(*) FROM presses")
cols="id, site, terminal, zone, boot, seq, button, score, pressed_at, received_at, counted, not_counted_reason"
psql_q "\\copy (SELECT $cols FROM presses) TO '$WORK/central.tsv'"
# The columns and index of presses, and a primary key on the id (what
# press_ids gives presses across its months): a store that keeps each
# press once, without partitions or press_hours.
psql_q "CREATE TABLE presses_copy (LIKE presses INCLUDING ALL)"
psql_q "ALTER TABLE presses_copy ADD PRIMARY KEY (id)"
start=$(now_us)
psql_q "\\copy presses_copy ($cols) FROM '$WORK/central.tsv'"
copy_secs=$(python3 -c "print(($(now_us) - $start) / 1e6)")

echo "## 6. Central side: RabbitMQ 3-node cluster (quorum queue) and PostgreSQL"
echo
echo "| into PostgreSQL | rows | seconds | rows/s | of which in transactions s | consumer CPU s | RabbitMQ CPU s (3 nodes) | consumer peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
python3 -c "print(f'| (6a) $CONSUMERS pressline-central consumer(s) from the quorum queue (ack after commit) | $stored | {$consumer_secs:.1f} | {round($stored / $consumer_secs)} | $commit_secs | $consumer_cpu | $rabbit_cpu_used | $consumer_rss |')"
python3 -c "print(f'| plain COPY of the same rows (psql \\\\copy) | $stored | {$copy_secs:.1f} | {round($stored / $copy_secs)} | {$copy_secs:.1f} | | | |')"
python3 -c "c, p = $stored / $consumer_secs, $stored / $copy_secs; print(); print(f'consumer / COPY = {c / p:.2f} (target >= 0.5)')"
echo
echo "| terminals → gateway → upstream acknowledgement | presses | seconds | presses/s |"
echo "|---|---:|---:|---:|"
echo "| (6b) RabbitMQ 3-node cluster, quorum queue (PUBACK after a majority has it) | $CENTRAL_N | $cl_secs | $cl_rate |"
echo "| one Mosquitto with a subscriber | $CENTRAL_N | $mq_secs | $mq_rate |"
python3 -c "print(); print(f'cluster / Mosquitto = {$cl_rate / $mq_rate:.2f}')"
echo
fi
if want 3 && want 4; then
echo "## 5. Storage"
echo
python3 -c "print(f'{$disk} bytes on disk for {$stored} stored presses all waiting upstream (press log + outbox): {$disk / $stored:.0f} bytes per press; delivered: {$hist_disk / $HISTORY:.0f} bytes per press (section 3b)')"
echo
fi
# ------------------------------------------------------- 7. central reports
REPORT_PRESSES=${BENCH_REPORT_PRESSES:-10000000}
if want 7 || want 9; then
start_postgres pg7; PG7_URL=$STARTED_PG_URL
psql7() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$PG7_URL" -c "$1"; }
"$BIN/pressline-central" migrate --postgres "$PG7_URL" >/dev/null
psql7 "INSERT INTO sites (site, time_zone, state, version)
       SELECT 's' || lpad(i::text, 3, '0'),
              (ARRAY['Europe/London', 'America/New_York', 'Asia/Kolkata', 'Australia/Adelaide', 'Asia/Kathmandu'])[1 + i % 5],
              'online', '0.1.0'
       FROM generate_series(0, 199) i"
# Presses spread evenly over the 52 weeks to 2026-12-06, 8 terminals and
# 4 zones a site, a million an INSERT (the rollups kept by the same
# statement, as for the consumer's COPY).
# The months' partitions first, as the consumer makes them.
psql7 "SELECT press_partition_for(m) FROM generate_series(timestamptz '2025-12-01 00:00:00+00', '2026-12-01 00:00:00+00', interval '1 month') m" >/dev/null
log "report: inserting $REPORT_PRESSES presses"
load_start=$(date +%s.%N)
for ((c = 0; c < REPORT_PRESSES; c += 1000000)); do
    psql7 "INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, pressed_at, received_at, counted)
           SELECT site || ':t' || (n / 200 % 8) || ':0:' || n, site, 't' || (n / 200 % 8), 'z' || (n / 200 % 4), 0, n,
                  'happy', (1 + abs(hashint4(n::int4)) % 4)::int2, at, at, true
           FROM (SELECT n, 's' || lpad((n % 200)::text, 3, '0') AS site,
                        timestamptz '2025-12-08 00:00:00+00' + (n * (364 * 86400.0 / $REPORT_PRESSES)) * interval '1 second' AS at
                 FROM generate_series($c, least($c + 999999, $REPORT_PRESSES - 1)) n) x"
done
load_secs=$(python3 -c "import time; print(round(time.time() - $load_start, 1))")
psql7 "VACUUM ANALYZE" >/dev/null
rollup_rows=$(psql7 "SELECT count(*) FROM press_hours")
fi
if want 7; then
report_secs() { # SOURCE -> median of 3 wall-clock seconds
    for _ in 1 2 3; do
        local t0; t0=$(date +%s.%N)
        "$BIN/fleet" report --postgres "$PG7_URL" --to 2026-12-06 --days 7 --weeks 4 --json --source "$1" >/dev/null
        python3 -c "import time; print(time.time() - $t0)"
    done | sort -n | sed -n 2p
}
rollups_s=$(report_secs rollups)
presses_s=$(report_secs presses)
echo "## 7. Central reports: $REPORT_PRESSES presses, 200 sites, 52 weeks"
echo
echo "| read from | rows | fleet report (7 days, change, 4 weeks of hour x weekday), median of 3 | target |"
echo "|---|---:|---:|---|"
python3 -c "print(f'| press_hours | {$rollup_rows:,} | {$rollups_s:.2f} s | < 1 s |')"
python3 -c "print(f'| presses (every row) | {$REPORT_PRESSES:,} | {$presses_s:.2f} s | |')"
echo
echo "Loaded in $load_secs s, rollups kept by the insert's own statement."
echo
fi
# ------------------------------------------------------- 9. central web view
if want 9; then
log "web view: pages over $REPORT_PRESSES presses"
web_token=$("$BIN/pressline-central" viewers add bench --postgres "$PG7_URL" 2>/dev/null)
web_port=$(free_port)
RUST_LOG=warn "$BIN/pressline-central" web --postgres "$PG7_URL" --http "127.0.0.1:$web_port" 2>>"$WORK/web.log" &
web_pid=$!
wait_port "$web_port"
page_ms() { # PATH LOADS -> "p50 p95" in ms, each load a fresh request on loopback
    python3 - "http://127.0.0.1:$web_port$1" "$web_token" "$2" <<'PY'
import sys, time, urllib.request
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(n):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and len(r.read()) > 1000
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print(f"{times[len(times) // 2]:.0f} {times[min(len(times) - 1, int(len(times) * 0.95))]:.0f}")
PY
}
loads=${BENCH_PAGE_LOADS:-100}
q="to=2026-12-06&days=7&weeks=4"
read -r ov50 ov95 <<<"$(page_ms "/?$q" "$loads")"
read -r st50 st95 <<<"$(page_ms "/sites/s000?$q" "$loads")"
read -r ovraw50 ovraw95 <<<"$(page_ms "/?$q&source=presses" 5)"
read -r straw50 straw95 <<<"$(page_ms "/sites/s000?$q&source=presses" 5)"
stop "$web_pid"
echo "## 9. Central web view: $REPORT_PRESSES presses, 200 sites, 52 weeks"
echo
echo "| page | from press_hours p50 / p95 ms ($loads loads) | from every press p50 / p95 ms (5 loads) | target p95 |"
echo "|---|---:|---:|---|"
echo "| network overview (7 days, change, open alerts, terminals offline) | $ov50 / $ov95 | $ovraw50 / $ovraw95 | < 300 ms |"
echo "| a site (rank, zones, 52 weeks' trend, 4 weeks of hour x weekday, alerts, terminals) | $st50 / $st95 | $straw50 / $straw95 | < 300 ms |"
echo
fi
# ------------------------------------------------------- 8. battery life
if want 8; then
log "battery life: host terminals for ${BENCH_ENERGY_SECS:-300} s"
cargo build --release --locked -q -p pressline-gateway -p pressline-terminal-host --bins >&2
BENCH_ENERGY_SECS=${BENCH_ENERGY_SECS:-300} BENCH_ENERGY_OUT="$WORK/energy.md" \
    cargo test --release --locked -q -p pressline-e2e --test battery_life -- --ignored >&2
cat "$WORK/energy.md"
fi
echo "Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, Linux $(uname -r); $(mosquitto -h 2>/dev/null | head -1 | sed 's/ is an MQTT.*//'); $(date -u +%Y-%m-%d); command: ${BENCH_SECTIONS:+BENCH_SECTIONS=\"$BENCH_SECTIONS\" }./scripts/bench.sh $RUNS"
