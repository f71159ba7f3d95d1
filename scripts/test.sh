#!/usr/bin/env bash
# The test command for Keel: ./scripts/test.sh [extra pytest args...]
#
# Installs what the tests need (kcat and chromium from apt, a Python venv in .venv), builds the
# broker in release mode, runs the Rust tests and then the Python client tests
# against target/release/keel. Idempotent; safe to re-run. Fails fast.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
START=$(date +%s)

stage() { printf '\n==== %s (at %s) ====\n' "$*" "$(elapsed)"; }
elapsed() { local s=$(( $(date +%s) - START )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "\n==== FAILED (exit %d) after %s ====\n" "$rc" "$(elapsed)"; fi' EXIT

# Installs a Debian package with apt-get (as root, or with passwordless sudo).
apt_install() {
    local package="$1" sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "error: $package is not installed and this user cannot install it (not root, no passwordless sudo)." >&2
            echo "       install it with: apt-get install -y $package" >&2
            exit 1
        fi
    fi
    echo "installing $package with apt-get"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$package"
}

# ---------------------------------------------------------------- kcat
stage "kcat"
if command -v kcat >/dev/null 2>&1; then
    echo "kcat present: $(command -v kcat)"
else
    apt_install kcat
fi
kcat -V | grep -i '^Version'

# ---------------------------------------------------------------- chromium
# The web console's browser test drives Debian's Chromium headless (Playwright never downloads one).
stage "chromium"
if [ -x /usr/bin/chromium ]; then
    echo "chromium present: /usr/bin/chromium"
else
    apt_install chromium
fi
/usr/bin/chromium --version

# ---------------------------------------------------------------- python venv
stage "python venv (.venv)"
REQ="tests/python/requirements.txt"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $(command -v python3) ($(python3 --version))"
    python3 -m venv .venv
fi
REQ_HASH="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat .venv/.requirements.sha256 2>/dev/null || true)" = "$REQ_HASH" ]; then
    echo "requirements unchanged; skipping pip install"
else
    echo "pip install -r $REQ"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install -r "$REQ"
    echo "$REQ_HASH" > .venv/.requirements.sha256
fi
.venv/bin/python -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.__version__, "librdkafka", confluent_kafka.libversion()[0], "| kafka-python", kafka.__version__)'

# ---------------------------------------------------------------- build
stage "cargo build --release -p keel"
cargo build --release -p keel
export KEEL_BIN="$ROOT/target/release/keel"
ls -l "$KEEL_BIN"

# ---------------------------------------------------------------- rust tests
stage "cargo test --workspace --release"
cargo test --workspace --release

# ---------------------------------------------------------------- tiny segments
# The client tests that read, recover, retain or compact across segments run a second time with
# every broker rolling its segments at KEEL_TEST_SEGMENT_BYTES (the tests' own segment settings
# win), so that segment boundaries are crossed everywhere rather than almost nowhere.
TINY_SEGMENT_BYTES=16384
stage "cargo test: client tests with ${TINY_SEGMENT_BYTES}-byte segments"
KEEL_TEST_SEGMENT_BYTES="$TINY_SEGMENT_BYTES" cargo test --release -p keel \
    --test transactions_wire --test idempotence_wire --test groups_wire \
    --test rdkafka_roundtrip --test rdkafka_idempotence --test console

# ---------------------------------------------------------------- fuzz
# The decoders get a short fuzzing run every time (30 s each). cargo-fuzz runs on the stable
# toolchain with RUSTC_BOOTSTRAP and no sanitizer; libFuzzer still stops on a panic, a crash,
# or an allocation over its RSS limit.
stage "cargo fuzz (30 s per target)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
for target in decode_request validate_batches batch_records; do
    log="fuzz/$target.log"
    if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
            -max_total_time="${KEEL_FUZZ_SECONDS:-30}" -rss_limit_mb=2048) >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
done

# ---------------------------------------------------------------- python tests
stage "pytest tests/python"
.venv/bin/python -m pytest tests/python -v --timeout=600 "$@"

stage "pytest: client tests with ${TINY_SEGMENT_BYTES}-byte segments"
# (Plain round trips and consumer groups cross segments in the Rust pass above: rdkafka_roundtrip,
# groups_wire; they are left out here to keep the suite under 30 minutes.)
TINY_SEGMENT_TESTS=(
    test_transactions.py test_kafka_python_transactions.py test_long_poll.py test_list_offsets.py
    test_retention.py test_compaction.py test_crash_recovery.py test_bit_flip.py test_idempotence.py
)
rc=0
KEEL_TEST_SEGMENT_BYTES="$TINY_SEGMENT_BYTES" .venv/bin/python -m pytest \
    "${TINY_SEGMENT_TESTS[@]/#/tests/python/}" -v --timeout=600 "$@" || rc=$?
# 5: the extra arguments (e.g. -k) selected none of these tests.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    exit "$rc"
fi

stage "ALL PASSED in $(elapsed)"
