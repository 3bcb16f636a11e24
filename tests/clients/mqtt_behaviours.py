#!/usr/bin/env python3
"""MQTT behaviours third-party clients rely on, checked with paho-mqtt (PyPI)
and mosquitto_pub/mosquitto_sub against the gateway's site broker.

    mqtt_behaviours.py --port P --version 4|5 CHECK [--user U --password PW]

Each check prints one line starting with "ok" and exits 0, or prints what
differed and exits 1. Run by tests/tests/mqtt_clients.rs on both terminal
listeners (MQTT 3.1.1 and MQTT 5); every wait is on a condition, bounded by
a generous timeout.
"""

import argparse
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 20.0
HOST = "127.0.0.1"


class Failed(Exception):
    pass


def wait_for(what, condition, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def code(rc):
    """A reason code as an int, from paho's ReasonCode or a plain int."""
    return int(getattr(rc, "value", rc))


class Broker:
    def __init__(self, port, version):
        self.port = port
        self.version = version
        self.protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        self.clients = []

    def client(self, client_id, persistent=False, manual_ack=False):
        if self.version == 5:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.protocol)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=self.protocol, clean_session=not persistent)
        c.persistent = persistent
        c.manual_ack_set(manual_ack)
        c.connack = None
        c.disconnected = None
        c.received = []
        c.subacks = {}
        c.pubacks = {}
        c.unsubacks = set()

        def on_connect(client, userdata, flags, rc, props=None):
            client.connack = (code(rc), flags.session_present)

        def on_disconnect(client, userdata, flags, rc, props=None):
            client.disconnected = code(rc)

        def on_message(client, userdata, msg):
            client.received.append(msg)

        def on_subscribe(client, userdata, mid, rcs, props=None):
            client.subacks[mid] = [code(rc) for rc in rcs]

        def on_publish(client, userdata, mid, rc, props=None):
            client.pubacks[mid] = code(rc)

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_message = on_message
        c.on_subscribe = on_subscribe
        c.on_publish = on_publish
        c.on_unsubscribe = lambda client, userdata, mid, *rest: client.unsubacks.add(mid)
        self.clients.append(c)
        return c

    def connect(self, c, keepalive=60, expect=0):
        """Connects and waits for the CONNACK; returns its code."""
        if self.version == 5:
            props = Properties(PacketTypes.CONNECT)
            if c.persistent:
                props.SessionExpiryInterval = 3600
            c.connect(HOST, self.port, keepalive, clean_start=not c.persistent, properties=props)
        else:
            c.connect(HOST, self.port, keepalive)
        c.loop_start()
        wait_for("CONNACK", lambda: c.connack is not None or c.disconnected is not None)
        if c.connack is None or c.connack[0] != 0:
            # paho's network thread would connect again on its own after a
            # refusal: the attempts a check counts are its own.
            c.loop_stop()
        if c.connack is None:
            raise Failed(f"connection closed without a CONNACK (code {c.disconnected})")
        if expect is not None and c.connack[0] != expect:
            raise Failed(f"CONNACK code {c.connack[0]}, expected {expect}")
        return c.connack[0]

    def subscribe(self, c, filters):
        result, mid = c.subscribe(filters)
        wait_for("SUBACK", lambda: mid in c.subacks)
        return c.subacks[mid]

    def close(self):
        for c in self.clients:
            try:
                c.loop_stop()
                c.disconnect()
            except Exception:
                pass


def check_keepalive_zero(b, args):
    """MQTT 3.1.1 §3.1.2.10: keep-alive 0 turns the mechanism off. A JSON
    terminal with keep-alive 0 connects and gets its presses acked."""
    terminal = f"ka0-v{b.version}-{uuid.uuid4().hex[:6]}"
    c = b.client(terminal)
    b.connect(c, keepalive=0)
    codes = b.subscribe(c, [(f"pressline/v1/gw/{terminal}/ack/json", 1)])
    if codes[0] >= 0x80:
        raise Failed(f"ack subscription refused: {codes}")
    count = 50
    for seq in range(1, count + 1):
        press = {"seq": seq, "button": "happy", "boot": 0, "age_ms": 0, "terminal": terminal}
        c.publish(f"pressline/v1/term/{terminal}/press/json", json.dumps(press), qos=1)

    def acked():
        seqs = set()
        for m in c.received:
            ack = json.loads(m.payload)
            seqs.update(range(ack["first_seq"], ack["last_seq"] + 1))
        return seqs

    wait_for(f"durable acks for {count} presses", lambda: len(acked()) >= count)
    print(f"ok: keep-alive 0 connected, {len(acked())}/{count} presses acked")


def check_dollar_topics(b, args):
    """MQTT 3.1.1 §4.7.2: filters starting with # or + do not match topics
    starting with $; a $SYS subscription gets a failure code, not a
    dropped connection."""
    sub = b.client(f"dollar-sub-{b.version}")
    b.connect(sub)
    codes = b.subscribe(sub, [("#", 1), ("+/probe", 1), ("+/+", 1)])
    if any(c >= 0x80 for c in codes):
        raise Failed(f"wildcard subscriptions refused: {codes}")
    pub = b.client(f"dollar-pub-{b.version}")
    b.connect(pub)
    pub.publish("$probe/probe", "dollar", qos=1)
    # Published after the $ one on the same connection: once it arrives, a
    # wrongly delivered $ topic would have arrived before it.
    pub.publish("plain/probe", "plain", qos=1)
    wait_for("plain/probe", lambda: any(m.topic == "plain/probe" for m in sub.received))
    leaked = [m.topic for m in sub.received if m.topic.startswith("$")]
    if leaked:
        raise Failed(f"wildcard filters matched $ topics: {leaked}")
    codes = b.subscribe(sub, [("$SYS/#", 1)])
    if codes[0] < 0x80:
        raise Failed(f"$SYS/# granted ({codes}) though the broker publishes nothing there")
    if sub.disconnected is not None or not sub.is_connected():
        raise Failed("the client was disconnected for subscribing to $SYS/#")
    print(f"ok: # and + did not match $ topics; $SYS/# SUBACK {codes[0]:#x}, still connected")


def check_will_on_keepalive_expiry(b, args):
    """MQTT 3.1.1 §3.1.2.5 and §3.1.2.10: a client silent for 1.5 x its
    keep-alive is disconnected and its will is published; a client that
    disconnects cleanly has its will discarded."""
    tag = uuid.uuid4().hex[:6]
    watcher = b.client(f"watcher-{tag}")
    b.connect(watcher)
    b.subscribe(watcher, [(f"wills/{tag}/#", 1)])
    polite = b.client(f"polite-{tag}")
    polite.will_set(f"wills/{tag}/polite", "polite gone", qos=1)
    b.connect(polite)
    polite.disconnect()
    polite.loop_stop()
    # Keep-alive 1 s, then silence: no PINGREQ is ever sent (the loop is not
    # started after the CONNACK).
    dying = b.client(f"dying-{tag}")
    dying.will_set(f"wills/{tag}/dying", "dying gone", qos=1)
    if b.version == 5:
        dying.connect(HOST, b.port, 1, clean_start=True)
    else:
        dying.connect(HOST, b.port, 1)
    wait_for("CONNACK", lambda: dying.loop(timeout=0.1) is not None and dying.connack is not None)
    started = time.monotonic()
    wait_for("the silent client's will", lambda: any(m.topic.endswith("/dying") for m in watcher.received))
    waited = time.monotonic() - started
    topics = [m.topic for m in watcher.received]
    if any(t.endswith("/polite") for t in topics):
        raise Failed(f"the will of a cleanly disconnected client was published: {topics}")
    print(f"ok: will published {waited:.1f} s after the silent client's last packet; clean disconnect sent none")


def check_session_takeover(b, args):
    """MQTT 3.1.1 §3.1.4, MQTT 5 §3.1.4 and §3.1.2.5: a second connection
    with the same client id takes the session over; the first is
    disconnected and its own will is published (as Mosquitto does), never
    the second's, which stays for when the second goes."""
    cid = f"takeover-{uuid.uuid4().hex[:6]}"
    watcher = b.client(f"watcher-{cid}")
    b.connect(watcher)
    b.subscribe(watcher, [(f"takeover/{cid}/#", 1)])
    first = b.client(cid)
    first.will_set(f"takeover/{cid}/will", "first gone", qos=1)
    b.connect(first)
    second = b.client(cid)
    second.will_set(f"takeover/{cid}/will", "second gone", qos=1)
    b.connect(second)
    wait_for("the first connection to be closed", lambda: first.disconnected is not None)
    first.loop_stop()
    wait_for("the first connection's will", lambda: any(m.payload == b"first gone" for m in watcher.received))
    b.subscribe(second, [(f"takeover/{cid}/data", 1)])
    second.publish(f"takeover/{cid}/data", "still here", qos=1)
    wait_for("the second connection to work", lambda: any(m.payload == b"still here" for m in second.received))
    second.disconnect()
    second.loop_stop()
    # After the clean disconnect, a marker through the same broker: a will
    # wrongly published earlier would have reached the watcher before it.
    watcher.publish(f"takeover/{cid}/end", "end", qos=1)
    wait_for("the marker", lambda: any(m.payload == b"end" for m in watcher.received))
    wills = [m.payload.decode() for m in watcher.received if m.topic.endswith("/will")]
    if wills != ["first gone"]:
        raise Failed(f"wills published: {wills}, expected only the first connection's")
    print("ok: the second connection took the session over; the first was closed and its own will published")


def mosquitto(tool, b, *args):
    version = "5" if b.version == 5 else "mqttv311"
    return subprocess.run([tool, "-h", HOST, "-p", str(b.port), "-V", version, *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def check_retained(b, args):
    """MQTT 3.1.1 §3.3.1.3, with mosquitto_pub/mosquitto_sub: a retained
    message reaches later subscribers; an empty retained message clears it."""
    tag = uuid.uuid4().hex[:6]
    out = mosquitto("mosquitto_pub", b, "-r", "-q", "1", "-t", f"retained/{tag}/a", "-m", "first")
    if out.returncode != 0:
        raise Failed(f"mosquitto_pub: {out.stderr}")
    out = mosquitto("mosquitto_sub", b, "-t", f"retained/{tag}/#", "-C", "1", "-W", "15", "-v")
    if out.stdout.strip() != f"retained/{tag}/a first":
        raise Failed(f"mosquitto_sub got {out.stdout!r} (exit {out.returncode}, {out.stderr.strip()})")
    # Clear a, retain b: a new subscriber's first message must be b.
    mosquitto("mosquitto_pub", b, "-r", "-q", "1", "-t", f"retained/{tag}/a", "-n")
    mosquitto("mosquitto_pub", b, "-r", "-q", "1", "-t", f"retained/{tag}/b", "-m", "second")
    out = mosquitto("mosquitto_sub", b, "-t", f"retained/{tag}/#", "-C", "1", "-W", "15", "-v")
    if out.stdout.strip() != f"retained/{tag}/b second":
        raise Failed(f"after clearing, mosquitto_sub got {out.stdout!r}")
    print("ok: retained message delivered to a later subscriber, and cleared by an empty one")


def check_persistent_session(b, args):
    """MQTT 3.1.1 §4.4 / MQTT 5 §4.4: on reconnect to a persistent session,
    QoS 1 messages sent but not acknowledged are resent with DUP set and
    their original packet ids, and messages published while the client was
    away are delivered."""
    tag = uuid.uuid4().hex[:6]
    cid = f"persist-{tag}"
    topic = f"persist/{tag}"
    sub = b.client(cid, persistent=True, manual_ack=True)
    b.connect(sub)
    b.subscribe(sub, [(f"{topic}/#", 1)])
    pub = b.client(f"publisher-{tag}")
    b.connect(pub)
    for i in range(5):
        pub.publish(f"{topic}/x", f"m{i}", qos=1)
    wait_for("5 messages", lambda: len(sub.received) >= 5)
    # Acknowledge the first two only; then the connection drops.
    for m in sub.received[:2]:
        sub.ack(m.mid, m.qos)
    wait_for("the acks to be written", lambda: not sub.want_write())
    unacked = {m.payload: m.mid for m in sub.received[2:]}
    # The connection drops without a DISCONNECT (a network failure). Then
    # two more: delivered on reconnect whether the broker had noticed the
    # drop when they arrived or not.
    sub.loop_stop()
    sub.socket().close()
    for i in range(5, 7):
        pub.publish(f"{topic}/x", f"m{i}", qos=1)
    again = b.client(cid, persistent=True)
    b.connect(again, expect=None)
    if again.connack[0] != 0 or not again.connack[1]:
        raise Failed(f"CONNACK {again.connack}: expected success with session present")
    wait_for("the 3 unacked and 2 new messages", lambda: len(again.received) >= 5)
    got = {m.payload: m for m in again.received}
    for payload, mid in unacked.items():
        m = got.get(payload)
        if m is None:
            raise Failed(f"{payload!r} was not resent")
        if not m.dup:
            raise Failed(f"{payload!r} was resent without DUP")
        if m.mid != mid:
            raise Failed(f"{payload!r} was resent with packet id {m.mid}, originally {mid}")
    for payload in (b"m5", b"m6"):
        if payload not in got:
            raise Failed(f"{payload!r}, published while away, was not delivered")
    if any(p in got for p in (b"m0", b"m1")):
        raise Failed("acknowledged messages were delivered again")
    print("ok: 3 unacked resent with DUP and original ids; 2 sent while away delivered; acked ones not repeated")


def raw_connect_as(port, client_id):
    """A 3.1.1 CONNECT without a login, by hand; returns the CONNACK bytes."""
    var = b"\x00\x04MQTT" + bytes([4, 0x02, 0, 60])
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = var + payload
    length = len(body)
    encoded = b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        s.sendall(bytes([0x10]) + encoded + body)
        data = b""
        while len(data) < 4:
            chunk = s.recv(16)
            if not chunk:
                break
            data += chunk
    return data


def check_refusal_flood(b, args):
    """1,000 CONNECTs without a login from one address, each with a new
    (long) client id, to a closed gateway: every one answered with
    CONNACK 5 (the gateway counts them; its log stays short)."""
    tag = uuid.uuid4().hex[:6]
    for i in range(1000):
        client_id = f"flood-{tag}-{i}-".encode() + b"x" * 2000
        connack = raw_connect_as(b.port, client_id)
        if connack[:4] != b"\x20\x02\x00\x05":
            raise Failed(f"CONNECT {i}: got {connack!r}, expected CONNACK 5")
    print("ok: 1000 refused logins answered with CONNACK 5")


def raw_connect(port, protocol_level):
    """A CONNECT with the given protocol level, sent by hand: paho refuses
    to speak a level it does not know. Returns the CONNACK bytes, or b''."""
    name = b"MQTT" if protocol_level >= 4 else b"MQIsdp"
    client_id = b"raw-level"
    var = len(name).to_bytes(2, "big") + name + bytes([protocol_level, 0x02, 0, 60])
    if protocol_level == 5:
        var += b"\x00"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = var + payload
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        s.sendall(packet)
        data = b""
        try:
            while len(data) < 4:
                chunk = s.recv(16)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    return data


def check_refusals(b, args):
    """Refused CONNECTs get a CONNACK with the reason (MQTT 3.1.1 §3.2.2.3,
    MQTT 5 §3.2.2.2). Needs a closed-mode gateway and one registered
    terminal (--user, --password); --other names another terminal."""
    # paho 2 reports a 3.1.1 CONNACK code as the MQTT 5 reason code of the
    # same meaning (5 "not authorized" as 0x87, 4 "bad user name or
    # password" as 0x86), one to one, so one expectation fits both.
    no_login, bad_login = 0x87, 0x86
    anon = b.client(f"anon-{uuid.uuid4().hex[:6]}")
    got = b.connect(anon, expect=None)
    if got != no_login:
        raise Failed(f"no credentials: CONNACK {got:#x}, expected {no_login:#x}")
    wrong = b.client(args.user)
    wrong.username_pw_set(args.user, "not-the-password")
    got = b.connect(wrong, expect=None)
    if got != bad_login:
        raise Failed(f"wrong password: CONNACK {got:#x}, expected {bad_login:#x}")
    # A protocol level the listener does not speak: 3.1.1's CONNACK 0x01.
    other_level = 5 if b.version == 4 else 4
    connack = raw_connect(b.port, other_level)
    if connack[:4] != b"\x20\x02\x00\x01":
        raise Failed(f"protocol level {other_level}: got {connack!r}, expected CONNACK 0x01")
    # The gateway's own link id: a client with it would take the link over.
    hijack = b.client("pressline-gateway")
    got = b.connect(hijack, expect=None)
    if got != 0x85:
        raise Failed(f"client id pressline-gateway: CONNACK {got:#x}, expected 0x85 (client identifier not valid)")
    # A last will naming another terminal.
    will = b.client(args.user)
    will.username_pw_set(args.user, args.password)
    will.will_set(f"pressline/v1/term/{args.other}/status", "offline", qos=1)
    got = b.connect(will, expect=None)
    if got != no_login:
        raise Failed(f"will naming {args.other}: CONNACK {got:#x}, expected {no_login:#x}")
    # Logged in properly: its own topics work; another terminal's do not.
    good = b.client(args.user)
    good.username_pw_set(args.user, args.password)
    good.will_set(f"pressline/v1/term/{args.user}/status", "offline", qos=1)
    b.connect(good)
    info = good.publish(f"pressline/v1/term/{args.other}/heartbeat", "spoofed", qos=1)
    wait_for("PUBACK", lambda: info.mid in good.pubacks)
    expected = 0x87 if b.version == 5 else 0
    if good.pubacks[info.mid] != expected:
        raise Failed(f"publish on {args.other}'s topic: PUBACK {good.pubacks[info.mid]:#x}, expected {expected:#x}")
    if not good.is_connected():
        raise Failed("disconnected after a refused publish")
    print(f"ok: CONNACK {no_login:#x} without login, {bad_login:#x} with a wrong one, 0x01 for protocol "
          f"level {other_level}, 0x85 for the gateway's own client id, {no_login:#x} for another "
          f"terminal's will; PUBACK {expected:#x} for its topic")


def check_forgeries(b, args):
    """Only the gateway speaks on pressline/v1/gw/: a client (anonymous in
    open mode, another registered terminal in closed mode: --user,
    --password) cannot forge the durable acks of --victim, live or
    retained, nor its offline status, nor take over its client id. Refused
    publishes are answered 0x87 on MQTT 5 (3.1.1 has no negative PUBACK)."""
    attacker = b.client(args.user or f"attacker-{uuid.uuid4().hex[:6]}")
    if args.user:
        attacker.username_pw_set(args.user, args.password)
    b.connect(attacker)
    victim = args.victim
    forged = [
        (f"pressline/v1/gw/{victim}/ack", b"FORGED", False),
        (f"pressline/v1/gw/{victim}/ack/json",
         json.dumps({"boot": 0, "first_seq": 0, "last_seq": 4294967295}).encode(), False),
        (f"pressline/v1/gw/{victim}/ack/json",
         json.dumps({"boot": 0, "first_seq": 0, "last_seq": 4294967295}).encode(), True),
        (f"pressline/v1/gw/{victim}/ota/command", b"FORGED", True),
        (f"pressline/v1/term/{victim}/status", b"offline", False),
    ]
    refused = 0x87 if b.version == 5 else 0
    for topic, payload, retain in forged:
        info = attacker.publish(topic, payload, qos=1, retain=retain)
        wait_for("PUBACK", lambda: info.mid in attacker.pubacks)
        if attacker.pubacks[info.mid] != refused:
            raise Failed(f"{topic} (retain {retain}): PUBACK {attacker.pubacks[info.mid]:#x}, expected {refused:#x}")
    if b.version == 5:
        # A topic alias set by a publish that passes (non-retained, on a
        # topic this client may use), then a retained publish naming the
        # topic by the alias only: checked as the topic it stands for.
        own = f"pressline/v1/term/{args.user or 'stranger-' + uuid.uuid4().hex[:6]}/status"
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = 1
        info = attacker.publish(own, b"offline", qos=1, properties=props)
        wait_for("PUBACK", lambda: info.mid in attacker.pubacks)
        if attacker.pubacks[info.mid] != 0:
            raise Failed(f"{own}: PUBACK {attacker.pubacks[info.mid]:#x}, expected 0")
        info = attacker.publish("", b"offline", qos=1, retain=True, properties=props)
        wait_for("PUBACK", lambda: info.mid in attacker.pubacks)
        if attacker.pubacks[info.mid] != refused:
            raise Failed(f"retained by alias for {own}: PUBACK {attacker.pubacks[info.mid]:#x}, expected {refused:#x}")
        forged.append((own + " (by alias, retained)", b"offline", True))
    if not attacker.is_connected():
        raise Failed("the attacker was disconnected (3.1.1 allows a close, but it was not expected here)")
    # Taking over the victim's client id: without its login, or with a
    # wrong one. paho 2 reports 3.1.1's 5 / 4 as 0x87 / 0x86.
    thief = b.client(victim)
    got = b.connect(thief, expect=None)
    thief.loop_stop()
    if got not in (0x86, 0x87):
        raise Failed(f"client id {victim} without its login: CONNACK {got:#x}, expected 0x86 or 0x87")
    thief = b.client(victim)
    thief.username_pw_set(victim, args.password or "guess")
    got = b.connect(thief, expect=None)
    thief.loop_stop()
    if got != 0x86:
        raise Failed(f"client id {victim} with another login: CONNACK {got:#x}, expected 0x86")
    if b.version == 5:
        # QoS 2 by an alias not set yet: no topic to check, so refused
        # (for QoS 2 by ending the connection), not held until PUBREL,
        # when the alias could name anything. (Last: in closed mode it
        # takes the attacker's session over.)
        sneak = b.client(args.user or f"sneak-{uuid.uuid4().hex[:6]}")
        if args.user:
            sneak.username_pw_set(args.user, args.password)
        b.connect(sneak)
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = 7
        sneak.publish("", b"offline", qos=2, retain=True, properties=props)
        wait_for("the QoS 2 publish without a topic to end the connection",
                 lambda: sneak.disconnected is not None)
        sneak.loop_stop()
    print(f"ok: {len(forged)} forged publishes refused (PUBACK {refused:#x}); takeover of {victim} refused")


def refused_code(b):
    """A refused subscription: 0x87 (not authorized) on MQTT 5, 0x80 on
    3.1.1, which knows one failure code (§3.9.3)."""
    return 0x87 if b.version == 5 else 0x80


def json_acks(c, terminal):
    """(boot, seq) pairs acked on `terminal`'s JSON ack topic."""
    acked = set()
    for m in list(c.received):
        if m.topic == f"pressline/v1/gw/{terminal}/ack/json":
            ack = json.loads(m.payload)
            acked.update((ack["boot"], s) for s in range(ack["first_seq"], ack["last_seq"] + 1))
    return acked


def press_mac(secret_hex, terminal, boot, seq, score):
    """PROTOCOL.md's press MAC, written from the spec: the first 8 bytes of
    HMAC-SHA256(secret, "pressline press v1\0" terminal "\0" boot seq score)."""
    message = (b"pressline press v1\0" + terminal.encode() + b"\0"
               + boot.to_bytes(4, "big") + seq.to_bytes(4, "big") + bytes([score]))
    return hmac.new(bytes.fromhex(secret_hex), message, hashlib.sha256).digest()[:8].hex()


def press_and_wait_for_ack(b, c, terminal, secret, boot, seq, alias=None):
    """Publishes a signed JSON press (on MQTT 5 with `alias` set: first
    naming the topic and setting the alias, then by the alias alone) and
    waits for its durable ack."""
    topic = f"pressline/v1/term/{terminal}/press/json"
    press = {"seq": seq, "button": "happy", "boot": boot, "age_ms": 0, "terminal": terminal,
             "mac": press_mac(secret, terminal, boot, seq, 3)}
    if alias is None:
        c.publish(topic, json.dumps(press), qos=1)
    else:
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = alias
        c.publish(topic if seq == 1 else "", json.dumps(press), qos=1, properties=props)
    wait_for(f"the durable ack of {terminal}'s press {seq}", lambda: (boot, seq) in json_acks(c, terminal))


def check_subscriptions(b, args):
    """Closed mode: a terminal (--user, --password, --secret in hex) reads
    only its own pressline/v1/gw/{id}/ topics. `#`, another terminal's
    (--other, --other-password, --other-secret) topics and everyone's acks are refused in the SUBACK,
    and nothing of the other terminal's reaches it while the other presses.
    On MQTT 5 its presses named by a topic alias are acked."""
    user, other = args.user, args.other
    reader = b.client(user)
    reader.username_pw_set(user, args.password)
    b.connect(reader)
    filters = ["#", f"pressline/v1/gw/{other}/#", f"pressline/v1/term/{other}/#",
               "pressline/v1/gw/+/ack/json", f"pressline/v1/gw/{user}/#"]
    codes = b.subscribe(reader, [(f, 1) for f in filters])
    expected = [refused_code(b)] * 4 + [1]
    if codes != expected:
        raise Failed(f"SUBACK {[hex(c) for c in codes]} for {filters}, expected {[hex(c) for c in expected]}")
    # The other terminal presses and gets its ack ...
    victim = b.client(other)
    victim.username_pw_set(other, args.other_password)
    b.connect(victim)
    b.subscribe(victim, [(f"pressline/v1/gw/{other}/ack/json", 1)])
    boot = 1 + int(uuid.uuid4().int % 1_000_000)
    press_and_wait_for_ack(b, victim, other, args.other_secret, boot, 1)
    # ... then the reader, whose ack the broker routes after the other's:
    # anything leaked would have reached it by then.
    alias = 1 if b.version == 5 else None
    for seq in (1, 2):
        press_and_wait_for_ack(b, reader, user, args.secret, boot, seq, alias)
    leaked = [m.topic for m in reader.received if not m.topic.startswith(f"pressline/v1/gw/{user}/")]
    if leaked:
        raise Failed(f"{user} read other topics: {leaked}")
    print(f"ok: SUBACK {[hex(c) for c in codes]}; nothing of {other}'s reached {user}; "
          f"presses{' by topic alias' if alias else ''} acked")


def check_filter_bound(b, args):
    """A client holds at most --limit filters: 10,000 distinct filters get
    --limit grants and then 0x97 (quota exceeded, MQTT 5) or 0x80 (3.1.1);
    the client stays connected, a filter it holds can be subscribed again,
    and one unsubscribed makes room for another."""
    tag = uuid.uuid4().hex[:6]
    c = b.client(f"filters-{tag}")
    b.connect(c)
    quota = 0x97 if b.version == 5 else 0x80
    codes = []
    for start in range(0, 10_000, 500):
        codes += b.subscribe(c, [(f"bound/{tag}/{i}", 1) for i in range(start, start + 500)])
    if codes[:args.limit] != [1] * args.limit or codes[args.limit:] != [quota] * (10_000 - args.limit):
        granted = sum(1 for x in codes if x < 0x80)
        raise Failed(f"{granted} of 10000 filters granted, expected the first {args.limit}; codes seen: "
                     f"{sorted(set(hex(x) for x in codes))}")
    if not c.is_connected():
        raise Failed("disconnected past the filter bound")
    again = b.subscribe(c, [(f"bound/{tag}/0", 1)])
    if again != [1]:
        raise Failed(f"a filter already held, subscribed again: SUBACK {again}")
    result, mid = c.unsubscribe(f"bound/{tag}/1")
    wait_for("UNSUBACK", lambda: mid in c.unsubacks)
    room = b.subscribe(c, [(f"bound/{tag}/new", 1)])
    if room != [1]:
        raise Failed(f"after an unsubscribe: SUBACK {room}, expected a grant")
    print(f"ok: {args.limit} of 10000 filters granted, the rest SUBACK {quota:#x}; still connected")


def check_shared_subscription_session(b, args):
    """MQTT 5 §4.8.2 shared subscriptions (also taken on 3.1.1): a
    persistent session, the last member of its group, leaves with a QoS 1
    message unacked; the broker keeps serving (it used to panic there)."""
    tag = uuid.uuid4().hex[:6]
    member = b.client(f"shared-{tag}", persistent=True, manual_ack=True)
    b.connect(member)
    codes = b.subscribe(member, [(f"$share/g-{tag}/shared/{tag}", 1)])
    if codes != [1]:
        raise Failed(f"shared subscription: SUBACK {codes}")
    pub = b.client(f"shared-pub-{tag}")
    b.connect(pub)
    pub.publish(f"shared/{tag}", "unacked", qos=1)
    wait_for("the shared message", lambda: len(member.received) > 0)
    member.loop_stop()
    member.disconnect()
    member.socket().close() if member.socket() else None
    # Still serving: a new client connects and a message goes round.
    probe = b.client(f"shared-probe-{tag}")
    b.connect(probe)
    b.subscribe(probe, [(f"after/{tag}", 1)])
    probe.publish(f"after/{tag}", "alive", qos=1)
    wait_for("a message after the shared session ended", lambda: len(probe.received) > 0)
    print("ok: the broker kept serving after a shared subscription's last member left unacked")


def check_connection_limit(b, args):
    """At its connection limit the broker answers CONNACK 3 / 0x88 (server
    unavailable) rather than closing the socket. --limit: how many fit."""
    tag = uuid.uuid4().hex[:6]
    for i in range(args.limit):
        b.connect(b.client(f"fits-{tag}-{i}"))
    # Twice with the same client id: a client retrying must get the same
    # answer, and the refused attempt must leave nothing behind.
    for attempt in ("", " again"):
        refused = b.client(f"one-too-many-{tag}")
        got = b.connect(refused, expect=None)
        # paho's network thread would retry on its own: stop it, so the
        # attempts are exactly these two.
        refused.loop_stop()
        # paho 2 reports 3.1.1's 3 as 0x88, its MQTT 5 equivalent.
        if got != 0x88:
            raise Failed(f"connection {args.limit + 1}{attempt}: CONNACK {got:#x}, expected 0x88")
    print(f"ok: {args.limit} connected; the next got CONNACK server unavailable")


def check_session_bound(b, args):
    """Disconnected persistent sessions are kept up to a bound (--limit):
    past it the oldest goes (its client reconnects to a new session), the
    newest stay (session present)."""
    tag = uuid.uuid4().hex[:6]
    n = args.limit + 5
    for i in range(n):
        c = b.client(f"kept-{tag}-{i}", persistent=True)
        b.connect(c)
        c.disconnect()
        c.loop_stop()
    newest = b.client(f"kept-{tag}-{n - 2}", persistent=True)
    b.connect(newest)
    if not newest.connack[1]:
        raise Failed("a recent persistent session was not kept")
    oldest = b.client(f"kept-{tag}-0", persistent=True)
    b.connect(oldest)
    if oldest.connack[1]:
        raise Failed(f"{n} persistent sessions kept, more than the bound of {args.limit}")
    print(f"ok: of {n} disconnected persistent sessions the newest are kept and the oldest went")


def check_invented_ids(b, args):
    """Open mode: one press (JSON, QoS 1) from each of --limit terminal ids
    nobody registered, named --other-N; waits for every PUBACK."""
    c = b.client(f"inventor-{uuid.uuid4().hex[:6]}")
    b.connect(c)
    mids = []
    for i in range(args.limit):
        press = json.dumps({"seq": 1, "button": "unhappy"})
        info = c.publish(f"pressline/v1/term/{args.other}-{i}/press/json", press, qos=1)
        mids.append(info.mid)
        # Bounded in flight: paho's own queue stalls past 65,535 messages.
        if i % 500 == 499:
            wait_for("PUBACKs", lambda: all(m in c.pubacks for m in mids), timeout=60)
    wait_for("every PUBACK", lambda: all(m in c.pubacks for m in mids), timeout=60)
    print(f"ok: {args.limit} invented terminal ids pressed once each")


CHECKS = {
    "invented-ids": check_invented_ids,
    "session-bound": check_session_bound,
    "connection-limit": check_connection_limit,
    "filter-bound": check_filter_bound,
    "refusal-flood": check_refusal_flood,
    "shared-subscription-session": check_shared_subscription_session,
    "subscriptions": check_subscriptions,
    "forgeries": check_forgeries,
    "keepalive-zero": check_keepalive_zero,
    "dollar-topics": check_dollar_topics,
    "will-on-keepalive-expiry": check_will_on_keepalive_expiry,
    "session-takeover": check_session_takeover,
    "retained": check_retained,
    "persistent-session": check_persistent_session,
    "refusals": check_refusals,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", type=int, choices=(4, 5), required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--other")
    parser.add_argument("--other-password")
    parser.add_argument("--secret")
    parser.add_argument("--other-secret")
    parser.add_argument("--victim")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    broker = Broker(args.port, args.version)
    try:
        CHECKS[args.check](broker, args)
    except Failed as e:
        print(f"FAILED {args.check} (MQTT {'5' if args.version == 5 else '3.1.1'}): {e}")
        return 1
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
