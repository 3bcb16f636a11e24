#!/usr/bin/env bash
# Fuzzes every decoder that reads network or file input, and the
# terminal's OTA receiver (cargo-fuzz, libFuzzer), each for a bounded time. Corpora persist in
# ~/.cache/pressline/fuzz-corpus, so each run starts where the last ended.
#
#   ./scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 10; .ci/run uses 10)
#
# A crash stops the run with the failing input in fuzz/artifacts/TARGET/:
# reproduce with `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...`,
# fix, and add the input as a regression test next to the decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-10}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export CARGO_TARGET_DIR="$HOME/.cache/pressline/fuzz-target"
# cargo-fuzz passes unstable flags (coverage instrumentation) to the stable
# toolchain; no sanitizer runtime is needed with `-s none` (a panic is a crash).
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    corpus="$HOME/.cache/pressline/fuzz-corpus/$target"
    mkdir -p "$corpus"
    # Committed seeds (fuzz/seeds/TARGET) start the search at inputs that
    # reach deep states, e.g. a complete signed update for ota_receiver.
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    cargo fuzz run "$target" -s none "$corpus" "${seeds[@]}" -- -max_total_time="$SECONDS_PER_TARGET" 2>"$CARGO_TARGET_DIR/fuzz-$target.log" \
        || { tail -40 "$CARGO_TARGET_DIR/fuzz-$target.log"; echo "fuzz: $target crashed (input in fuzz/artifacts/$target/)"; exit 1; }
    runs=$(grep -Eo 'Done [0-9]+ runs' "$CARGO_TARGET_DIR/fuzz-$target.log" | grep -Eo '[0-9]+' || echo 0)
    echo "fuzz: $target: $runs inputs in ${SECONDS_PER_TARGET}s, no crash"
done
