#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time, starting from the
# inputs kept in tests/fuzz_regressions/<target>/. Exits non-zero if any target crashes, leaks,
# times out on an input, exceeds the memory limit or makes a single allocation above 256 MiB
# (every length the library allocates from must be bounded); the failing input is printed
# (base64) so it can be recovered from the CI log into tests/fuzz_regressions/<target>/.
#
# Targets: every `[[bin]]` of fuzz/Cargo.toml (record_decode, recovery_scan, superblock_decode,
# wire_decode, tls_handshake), as `cargo fuzz list` names them.
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   space-separated subset of targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this lets a stable toolchain
# accept them.
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "== cargo fuzz build ($(echo $targets | wc -w) targets)"
cargo fuzz build

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== fuzz $t for ${seconds}s"
    if cargo fuzz run "$t" "fuzz/corpus/$t" "tests/fuzz_regressions/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -timeout=30 \
        >"$logs/$t.log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$logs/$t.log" || tail -n 3 "$logs/$t.log"
    else
        failed+=("$t")
        echo "!! $t FAILED; last lines of its log:"
        tail -n 60 "$logs/$t.log"
        for f in $(grep -oE "Test unit written to [^ ]+" "$logs/$t.log" | awk '{print $5}'); do
            [ -f "$f" ] || continue
            echo "!! failing input $f ($(wc -c <"$f") bytes), base64:"
            base64 -w 0 "$f" | head -c 100000
            echo
        done
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing failed: ${failed[*]}"
    exit 1
fi
echo "fuzzing passed:" $targets
