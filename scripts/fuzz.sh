#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) on stable Rust, then
# minimizes each kept corpus (fuzz/corpus/<target>/). See docs/testing.md.
#
#   bash scripts/fuzz.sh                     # every target, 60 s each
#   SECONDS_PER_TARGET=600 bash scripts/fuzz.sh json_strict proxy_target
#
# Needs `cargo install cargo-fuzz --locked`. A crash stops the run; its input is in
# fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds=${SECONDS_PER_TARGET:-60}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo fuzz run "$target" --sanitizer none -- -max_total_time="$seconds" -max_len=4096
    cargo fuzz cmin "$target" --sanitizer none
done
