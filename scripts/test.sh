#!/usr/bin/env bash
# The Pressline test command: installs what the tests need when it is missing,
# builds everything, and runs every test (unit, property and end-to-end).
#
#   ./scripts/test.sh
#
# The unit and end-to-end tests include the firmware's own application code
# running as `terminal-host` on TAP devices against the real gateway, in a
# network namespace each test creates (needs root, as CI runs; skipped
# otherwise). Then the fault campaigns (gateway kill -9 cycles, upstream
# flapping, terminal power cuts, a full disk: the configured cap and a
# real filesystem filling up, a garbage flood; each prints a one-line
# verdict), bounded fuzzing of every decoder (cargo-fuzz, installed if
# missing), the firmware core on QEMU, and the Pico W bootloader and
# firmware images.
#
# Environment:
#   CARGO_TARGET_DIR  build cache (default: ~/.cache/pressline/target, outside
#                     the clone so repeated runs and fresh clones reuse it)
#   PRESSLINE_SOAK=1  the long fault campaigns (e.g. 100 gateway kills)
#   PRESSLINE_FUZZ_SECONDS  fuzzing time per decoder (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pressline/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

step() { printf '\n== %s\n' "$*"; }

step "prerequisites"
if ! command -v mosquitto >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
    echo "installing Mosquitto (the real upstream broker the end-to-end tests use)"
    apt_install mosquitto mosquitto-clients
    # The Debian package starts a system broker on port 1883; the tests run
    # their own on free ports and do not need it.
    as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# The central side's clustered broker: RabbitMQ with its MQTT plugin. The
# tests start their own three-node cluster (deploy/rabbitmq-cluster.sh).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "installing RabbitMQ (a real three-node cluster for the central-side tests)"
    apt_install rabbitmq-server
    as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
fi
# The central side's database: the tests run their own PostgreSQL servers
# (initdb in a temporary directory, a free loopback port).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "installing PostgreSQL (the central database for the central-side tests)"
    apt_install postgresql
    as_root systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
# Host terminals (the firmware's application on Linux) run on TAP devices in
# a network namespace each test creates: iproute2 and /dev/net/tun.
if ! command -v ip >/dev/null 2>&1; then
    echo "installing iproute2 (network namespaces and TAP devices for the host-terminal tests)"
    apt_install iproute2
fi
if [ ! -c /dev/net/tun ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi
missing=()
for tool in /usr/bin/rustc:rustc-web /usr/bin/cargo:cargo-web /usr/lib/rustlib/src/rust/library:rust-web-src \
            /usr/bin/ld.lld-22:lld-22 /usr/bin/arm-none-eabi-size:binutils-arm-none-eabi \
            /usr/bin/qemu-system-arm:qemu-system-arm /usr/bin/chromium:chromium; do
    [ -e "${tool%%:*}" ] || missing+=("${tool##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing what the tests need (firmware toolchain, QEMU, headless Chromium): ${missing[*]}"
    apt_install "${missing[@]}"
fi
# Third-party MQTT clients for the conformance tests (tests/clients/): the
# paho-mqtt package from PyPI, in a virtual environment outside the clone.
export PRESSLINE_PYTHON="${PRESSLINE_PYTHON:-$HOME/.cache/pressline/venv/bin/python}"
if ! "$PRESSLINE_PYTHON" -c 'import paho.mqtt' >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_install python3 python3-venv
    echo "installing paho-mqtt (PyPI) in $(dirname "$(dirname "$PRESSLINE_PYTHON")")"
    python3 -m venv "$(dirname "$(dirname "$PRESSLINE_PYTHON")")"
    "$PRESSLINE_PYTHON" -m pip install --quiet 'paho-mqtt>=2,<3'
fi
"$PRESSLINE_PYTHON" -c 'import paho.mqtt; print("paho-mqtt", paho.mqtt.__version__)'
# An SMTP server no one here wrote, for the alert e-mail channel's tests.
if ! "$PRESSLINE_PYTHON" -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "installing aiosmtpd (PyPI)"
    "$PRESSLINE_PYTHON" -m pip install --quiet 'aiosmtpd>=1.4,<2'
fi
mosquitto -h 2>/dev/null | head -n 1 || true
cargo --version
/usr/bin/rustc --version

step "build (debug)"
cargo build --workspace --all-targets --locked

step "unit, property and end-to-end tests"
# The fault campaigns run next, on their own, so their verdicts are shown.
cargo test --workspace --locked -- --skip campaign --skip flooding 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"

step "fault campaigns (PRESSLINE_SOAK=1 for the long version)"
cargo test -p pressline-e2e --locked --test campaigns -- --nocapture 2>&1 | tee "$CARGO_TARGET_DIR/campaign-output.txt"
grep -E '^test result:' "$CARGO_TARGET_DIR/campaign-output.txt" >>"$CARGO_TARGET_DIR/test-output.txt"
grep -E 'campaign:|flood:' "$CARGO_TARGET_DIR/campaign-output.txt"

step "fuzzing every decoder (bounded)"
./scripts/fuzz.sh "${PRESSLINE_FUZZ_SECONDS:-10}"

step "terminal core on an emulated Cortex-M3 (QEMU)"
# Its own workspace and target directory: a different toolchain (Debian's
# rustc with build-std) must not invalidate the host build cache.
(cd firmware/qemu-tests && CARGO_TARGET_DIR="$HOME/.cache/pressline/firmware-target/qemu-tests" \
    /usr/bin/cargo run --release --locked) 2>&1 | tee "$CARGO_TARGET_DIR/qemu-output.txt"

step "Pico W bootloader and firmware images (thumbv6m-none-eabi)"
BOOT_TARGET="$HOME/.cache/pressline/firmware-target/bootloader"
(cd firmware/pico-w-bootloader && CARGO_TARGET_DIR="$BOOT_TARGET" /usr/bin/cargo build --release --locked)
BOOT_ELF="$BOOT_TARGET/thumbv6m-none-eabi/release/pressline-pico-w-bootloader"
arm-none-eabi-size "$BOOT_ELF"
# The bootloader must fit before the bootloader state partition (24 KiB - boot2).
arm-none-eabi-size "$BOOT_ELF" | awk 'NR == 2 {
    flash = $1 + $2
    printf "bootloader %.1f KiB of 23.75 KiB\n", flash / 1024
    if (flash > 24 * 1024 - 256) { print "bootloader over budget"; exit 1 }
}'
PICO_TARGET="$HOME/.cache/pressline/firmware-target/pico-w"
(cd firmware/pico-w && CARGO_TARGET_DIR="$PICO_TARGET" /usr/bin/cargo build --release --locked)
PICO_ELF="$PICO_TARGET/thumbv6m-none-eabi/release/pressline-pico-w"
arm-none-eabi-size "$PICO_ELF"
# Budget: the 448 KiB ACTIVE partition (text + data), 128 KiB static RAM.
arm-none-eabi-size "$PICO_ELF" | awk 'NR == 2 {
    flash = $1 + $2; ram = $2 + $3
    printf "flash %.1f KiB of 448 KiB, static RAM %.1f KiB of 128 KiB\n", flash / 1024, ram / 1024
    if (flash > 448 * 1024 || ram > 128 * 1024) { print "firmware over budget"; exit 1 }
}'
# The update image is the firmware without boot2 (the bootloader's image
# has it); it must start at the ACTIVE partition and pack into a release.
PICO_IMAGE="$PICO_TARGET/pressline-pico-w-ota.bin"
arm-none-eabi-objcopy -O binary --remove-section=.boot2 "$PICO_ELF" "$PICO_IMAGE"
arm-none-eabi-readelf -l "$PICO_ELF" | grep -q "0x10007000" || { echo "firmware is not linked at the ACTIVE partition (0x10007000)"; exit 1; }
RELEASE_KEYS="$(mktemp -d)"
"$CARGO_TARGET_DIR/debug/fleet" keys generate --out "$RELEASE_KEYS/keys" >/dev/null
"$CARGO_TARGET_DIR/debug/fleet" ota pack --version 0.1.0 --board pico-w --key "$RELEASE_KEYS/keys/signing.key" "$PICO_IMAGE" -o "$RELEASE_KEYS/pico-w-0.1.0.pota"
rm -rf "$RELEASE_KEYS"

step "summary"
{ grep -E '^test result:' "$CARGO_TARGET_DIR/test-output.txt"; grep -E '^[0-9]+ passed, [0-9]+ failed$' "$CARGO_TARGET_DIR/qemu-output.txt" | sed 's/^/test result: ok. /; s/ passed,/ passed;/; s/ failed$/ failed;/'; } | awk '
    { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
    END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }'
