#!/usr/bin/env bash
# Fuzzes every target for a bounded time and fails if any finds a crash:
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# CI uses the default of 20 seconds per target; by hand, give it longer (600, 3600, ...) or name
# one target. Needs a nightly toolchain (libFuzzer's instrumentation flags are nightly-only) and
# installs cargo-fuzz if it is missing. Without nightly it says so and replays the checked-in seed
# corpus on stable instead (`cargo test --manifest-path fuzz/Cargo.toml`).
#
# New inputs the fuzzer finds go to fuzz/target/corpus/<target>/, not to the checked-in seeds in
# fuzz/corpus/<target>/ (libFuzzer writes to its first corpus directory only). A crash, panic or
# timeout is saved under fuzz/artifacts/<target>/; replay it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`. Each run's full log is in
# fuzz/target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz="$PWD/fuzz"

seconds="${1:-20}"
shift || true
if [[ ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh [seconds-per-target] [target...]" >&2
  exit 2
fi
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=()
  for f in "$fuzz"/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly), so no fuzzing;" \
    "replaying the seed corpus on stable instead" >&2
  exec cargo test --manifest-path "$fuzz/Cargo.toml"
fi
# The version this was written against; a newer one is fine if it is already installed.
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# One build for every target, so the runs below measure fuzzing, not compiling. The workspace's
# release profile has thin LTO for the services; instrumented fuzz binaries do not need it, and
# linking six of them with it takes longer than fuzzing them.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
cargo +nightly fuzz build

# A single input taking over 10 s is a hang worth reporting (a hostile body or export must not
# stall a service or the auditor), and it keeps one slow input from outliving the time budget.
per_input_timeout_s=10
mkdir -p "$fuzz/target/logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "$fuzz/target/corpus/$target"
  log="$fuzz/target/logs/$target.log"
  echo "== $target: ${seconds}s"
  if cargo +nightly fuzz run "$target" "$fuzz/target/corpus/$target" "$fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout="$per_input_timeout_s" -print_final_stats=1 \
    >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$target")
    tail -n 40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  summary+=("$(printf '%-16s %-7s %10s runs %8s exec/s  cov %s' \
    "$target" "$result" "${runs:-?}" "${rate:-?}" "${cov:-?}")")
done

echo
echo "fuzz/run.sh: ${seconds}s per target"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz/run.sh: crashes in ${failed[*]}; inputs are in fuzz/artifacts/" >&2
  exit 1
fi
