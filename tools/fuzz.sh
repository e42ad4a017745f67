#!/usr/bin/env bash
# Runs a time-boxed fuzzing campaign over every cargo-fuzz target in fuzz/, each from its
# committed corpus, and reports per target the executions run and any crash found.
#
# Usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET defaults to $FUZZ_SECONDS, else 60.
#   TARGETs default to every target `cargo fuzz list` names.
# Environment: FUZZ_TIMEOUT (seconds one input may run before it counts as a hang, 10),
#   FUZZ_RSS_MB (memory limit, 2048), FUZZ_SANITIZER (address; `none` builds faster).
#
# cargo-fuzz needs nightly flags (-Zsanitizer, sancov); RUSTC_BOOTSTRAP=1 lets a stable
# toolchain accept them. The network is used only by `cargo install cargo-fuzz` and by
# `cargo fetch` for the locked dependencies; the campaign itself runs offline.
# New inputs the fuzzer finds go to fuzz/target/campaign/<target>/, never into the
# committed corpus; crashing inputs go to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-60}}"
shift $(( $# > 0 ? 1 : 0 ))
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
SANITIZER="${FUZZ_SANITIZER:-address}"

case "$SECONDS_PER_TARGET" in
  ''|*[!0-9]*) echo "error: seconds per target must be a whole number, got '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1

echo "== dependencies (fuzz/Cargo.lock)"
cargo fetch --manifest-path fuzz/Cargo.toml --locked
export CARGO_NET_OFFLINE=true

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "== building ${targets[*]} (sanitizer: $SANITIZER)"
(cd fuzz && cargo fuzz build --sanitizer "$SANITIZER")

summary=()
failed=0
for target in "${targets[@]}"; do
  corpus="$PWD/fuzz/corpus/$target"
  work="$PWD/fuzz/target/campaign/$target"
  artifacts="$PWD/fuzz/artifacts/$target"
  if [ ! -d "$corpus" ]; then
    echo "error: no committed corpus $corpus for target $target" >&2
    exit 2
  fi
  mkdir -p "$work" "$artifacts"
  log="fuzz/target/campaign/$target.log"
  mkdir -p "$(dirname "$log")"
  before=$(find "$artifacts" -type f | sort)
  echo "== $target: ${SECONDS_PER_TARGET}s from $(find "$corpus" -type f | wc -l) corpus files (log: $log)"
  status=0
  # The scratch folder comes first: libFuzzer writes what it finds into the first folder.
  (cd fuzz && cargo fuzz run --sanitizer "$SANITIZER" "$target" \
      "$work" "$corpus" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
      -print_final_stats=1 -artifact_prefix="$artifacts/") >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  # A run that stops at the first crash prints no final stats; its last status line counts.
  if [ -z "$execs" ]; then
    execs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1)
  fi
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  found=$(comm -13 <(printf '%s\n' "$before") <(find "$artifacts" -type f | sort) \
    | sed "s|^$PWD/||" | tr '\n' ' ')
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    failed=1
    summary+=("$(printf '%-16s %10s execs  %5ss  cov %-6s CRASH (exit %s) %s' \
      "$target" "${execs:-?}" "$SECONDS_PER_TARGET" "${cov:-?}" "$status" "$found")")
    grep -m1 -A12 -E 'panicked|ERROR: (AddressSanitizer|libFuzzer)' "$log" || tail -20 "$log"
  else
    summary+=("$(printf '%-16s %10s execs  %5ss  cov %-6s no crash' \
      "$target" "${execs:-?}" "$SECONDS_PER_TARGET" "${cov:-?}")")
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "Reproduce a crash with: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/FILE)" >&2
fi
exit "$failed"
