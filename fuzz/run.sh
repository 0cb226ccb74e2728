#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each, starting from the checked-in seeds.
# Exits non-zero when any target finds an input that crashes it (a panic, a failed
# invariant, a timeout or running out of memory), and prints that input's path.
#
#   fuzz/run.sh [SECONDS]
#
# cargo-fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one accept the
# flags it passes. The build goes to fuzz/target, apart from the main workspace's.
set -euo pipefail

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: fuzz/run.sh [SECONDS]" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The crates forbid unsafe code, so what the fuzzer hunts is panics: AddressSanitizer would
# slow every run down for bugs in dependencies only. Overflow checks and debug assertions
# stay on (cargo-fuzz's default).
build_flags=(--sanitizer none)
# Per input: a hang longer than this, or more memory than this, is a finding too.
libfuzzer_flags=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

# One build of every target up front, so that each run below starts at once.
cargo fuzz build "${build_flags[@]}"

mapfile -t targets < <(cargo fuzz list)
failed=()
started=$SECONDS
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    artifacts="artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=("-dict=dicts/$target.dict")
    fi
    log="$artifacts/run.log"
    target_started=$SECONDS
    # The first corpus folder receives new inputs; the seeds stay as checked in.
    if cargo fuzz run "${build_flags[@]}" "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" \
        "${libfuzzer_flags[@]}" "${dict[@]}" >"$log" 2>&1; then
        runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
        echo "fuzz: $target: no crash in $((SECONDS - target_started)) s (${runs:-?} inputs)"
    else
        echo "fuzz: $target: FAILED (the whole log: $fuzz_dir/$log)"
        # The panic with the top of its backtrace, or libFuzzer's word for a hang, an
        # out-of-memory or a crash by signal.
        grep -m1 -A16 'panicked at' "$log" || true
        grep -E -m2 'ERROR: libFuzzer|SUMMARY: libFuzzer' "$log" || true
        crashing="$(grep -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //' || true)"
        if [ -n "$crashing" ]; then
            echo "fuzz: $target: crashing input: $crashing"
            echo "fuzz: reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $target $crashing)"
        fi
        failed+=("$target")
    fi
done

echo "fuzz: ${#targets[@]} targets, $((SECONDS - started)) s of fuzzing"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes found in: ${failed[*]}" >&2
    exit 1
fi
