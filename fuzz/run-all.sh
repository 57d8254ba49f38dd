#!/usr/bin/env bash
# Run every fuzz target for SECONDS seconds each (default 20).
# Exits non-zero if any target found a crash; its reproducer is left in
# fuzz/artifacts/<target>/. Needs a nightly toolchain (FUZZ_TOOLCHAIN,
# default "nightly") and cargo-fuzz, which is installed if missing.
set -euo pipefail

seconds="${1:-20}"
case "$seconds" in
    '' | *[!0-9]*)
        echo "usage: $0 [SECONDS]" >&2
        exit 2
        ;;
esac
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

cd "$(dirname "$0")/.."

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "run-all.sh: the $toolchain toolchain is not installed (cargo-fuzz needs nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=(superblock checkpoint_header region_header log_block records ringfs_wire daemon_requests text_configs)
failed=()
cargo "+$toolchain" fuzz build
for t in "${targets[@]}"; do
    echo "=== $t: ${seconds}s"
    # 8192 bytes: room for a whole superblock or log block plus the 9-byte
    # input prefix (see fuzz/src/lib.rs).
    if ! cargo "+$toolchain" fuzz run "$t" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "run-all.sh: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "run-all.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
