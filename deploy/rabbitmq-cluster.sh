#!/usr/bin/env bash
# A three-node RabbitMQ cluster with the MQTT plugin on one machine, for
# trials and tests: its own node names, ports, data directories and Erlang
# cookie, listening on loopback only, never through systemd.
#
#   deploy/rabbitmq-cluster.sh start DIR BASE_PORT   # nodes pl<BASE_PORT>n1..n3
#   deploy/rabbitmq-cluster.sh stop DIR
#
# Node i (1..3) is pl<BASE_PORT>n<i>@<short host name> (names unique per
# cluster, so clusters side by side never meet), its data in DIR/pl<i>; its
# ports, from BASE_PORT: MQTT BASE_PORT+i, AMQP BASE_PORT+10+i, Erlang
# distribution BASE_PORT+20+i. With RABBITMQ_CLUSTER_TLS=DIR (holding
# ca.pem, server.pem, server.key), also AMQP over TLS on BASE_PORT+30+i and
# MQTT over TLS on BASE_PORT+40+i.
# Prints one line per node: "NODE mqtt://127.0.0.1:PORT amqp PORT".
#
# Three nodes, never two: client-id tracking and quorum queues need a
# majority. MQTT subscriptions with a persistent session get quorum queues
# (mqtt.durable_queue_type, RabbitMQ 3.10+, new clusters only), so a node
# that dies loses no message a subscriber has not yet taken. For production
# see deploy/README.md ("Clustered brokers").
set -euo pipefail
cmd=${1:?usage: rabbitmq-cluster.sh start DIR BASE_PORT | stop DIR}
dir=${2:?data directory}
host=$(hostname -s)
export HOME="$dir" # the Erlang cookie lives in $HOME/.erlang.cookie
export ERL_EPMD_ADDRESS=127.0.0.1
# Debian's /usr/sbin wrappers switch to the rabbitmq user and its home;
# these nodes run as the caller, with their own data directories.
bin=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
PATH="$bin:$PATH"

node() { echo "$(cat "$dir/prefix")$1@$host"; }
node_env() { # i
    local i=$1 base=$dir/pl$i
    export RABBITMQ_NODENAME="$(node "$i")"
    export RABBITMQ_MNESIA_BASE="$base/mnesia"
    export RABBITMQ_LOG_BASE="$base/log"
    export RABBITMQ_CONFIG_FILE="$base/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    # Crash dumps and Mnesia core files go next to the node's data, not
    # into the caller's working directory.
    export ERL_CRASH_DUMP="$base/erl_crash.dump"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

case $cmd in
start)
    base_port=${3:?base port}
    mkdir -p "$dir"
    cd "$dir"
    echo "pl${base_port}n" >"$dir/prefix"
    # A node that fails to start must not leave the others running.
    trap 'status=$?; [ "$status" -eq 0 ] || "$0" stop "$dir" >/dev/null 2>&1; exit "$status"' EXIT
    [ -f "$dir/.erlang.cookie" ] || { head -c 32 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$dir/.erlang.cookie"; }
    chmod 400 "$dir/.erlang.cookie"
    for i in 1 2 3; do
        node_env "$i"
        mkdir -p "$dir/pl$i/log"
        cat >"$dir/pl$i/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$((base_port + 10 + i))
distribution.listener.port_range.min = $((base_port + 20 + i))
distribution.listener.port_range.max = $((base_port + 20 + i))
mqtt.listeners.tcp.1 = 127.0.0.1:$((base_port + i))
mqtt.allow_anonymous = true
mqtt.durable_queue_type = quorum
loopback_users = none
EOF
        if [ -n "${RABBITMQ_CLUSTER_TLS:-}" ]; then
            tls=$(cd "$RABBITMQ_CLUSTER_TLS" && pwd)
            cat >>"$dir/pl$i/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$((base_port + 30 + i))
mqtt.listeners.ssl.1 = 127.0.0.1:$((base_port + 40 + i))
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
        fi
        echo '[rabbitmq_mqtt].' >"$dir/pl$i/enabled_plugins"
        RABBITMQ_NODE_PORT=$((base_port + 10 + i)) RABBITMQ_DIST_PORT=$((base_port + 20 + i)) \
            rabbitmq-server -detached >"$dir/pl$i/log/start.out" 2>&1
    done
    for i in 1 2 3; do
        node_env "$i"
        # -detached returns before the node registers with epmd.
        for _ in $(seq 1 240); do
            rabbitmqctl -q -n "$(node "$i")" ping >/dev/null 2>&1 && break
            sleep 0.5
        done
        rabbitmqctl -q -n "$(node "$i")" await_startup --timeout 120 >/dev/null
        # The OS pid, for `stop` (and for tests that kill a node).
        rabbitmqctl -q -n "$(node "$i")" eval 'list_to_integer(os:getpid()).' >"$dir/pl$i/pid"
    done
    for i in 2 3; do
        node_env "$i"
        rabbitmqctl -q -n "$(node "$i")" stop_app
        rabbitmqctl -q -n "$(node "$i")" join_cluster "$(node 1)"
        rabbitmqctl -q -n "$(node "$i")" start_app
        rabbitmqctl -q -n "$(node "$i")" await_startup --timeout 120 >/dev/null
    done
    for i in 1 2 3; do
        echo "$(node "$i") mqtt://127.0.0.1:$((base_port + i)) amqp $((base_port + 10 + i))"
    done
    ;;
stop)
    [ -f "$dir/prefix" ] || exit 0
    for i in 1 2 3; do
        node_env "$i"
        [ -f "$dir/pl$i/pid" ] || continue
        pid=$(cat "$dir/pl$i/pid")
        rabbitmqctl -q -n "$(node "$i")" stop >/dev/null 2>&1 || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pl$i/pid"
    done
    # Nodes that never finished starting have no pid file; their VMs run
    # with HOME=DIR.
    pkill -9 -f -- "-home $dir -- " 2>/dev/null || true
    ;;
*)
    echo "usage: rabbitmq-cluster.sh start DIR BASE_PORT | stop DIR" >&2
    exit 2
    ;;
esac
