#!/usr/bin/env bash
# Cold compile time of every example, the LLVM tier against the Cranelift tier, side by side
# in one run: `archc bench MODEL --compile-only` compiles both programs' kernels (prefill and
# decode, as generation builds them) from scratch with each tier, alternating which goes
# first, ROUNDS times. Prints a Markdown table of the medians and the ratio, and keeps the
# raw JSON lines under bench/results/. A script for people, not part of CI.
#
#   bench/compile.sh [--rounds N] [--examples "a b"]     (ARCHC: a built archc binary)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=3
EXAMPLES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --examples) EXAMPLES="$2"; shift 2 ;;
        *) echo "bench/compile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "${ARCHC:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -q)
    ARCHC="$ROOT/target/release/archc"
fi
if [ -z "$EXAMPLES" ]; then
    EXAMPLES="$(cd "$ROOT/examples" && ls ./*.arch | sed 's|^\./||; s|\.arch$||' | tr '\n' ' ')"
fi
mkdir -p "$ROOT/bench/results"
RAW="$ROOT/bench/results/$(date -u +%Y-%m-%d-%H%M)-compile.jsonl"
: > "$RAW"
echo "| model | kernels | LLVM s | Cranelift s | Cranelift/LLVM |"
echo "|---|---:|---:|---:|---:|"
for m in $EXAMPLES; do
    if line="$("$ARCHC" bench "$ROOT/examples/$m.arch" --compile-only --repeat "$ROUNDS" --json 2>/tmp/archc-compile-err)"; then
        echo "$line" >> "$RAW"
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %s | %d | %.3f | %.3f | %.3f |" % (r["model"], r["kernels"], r["llvm_median_s"], r["cranelift_median_s"], r["cranelift_over_llvm"]))' "$line"
    else
        echo "| $m | — | — | — | no kernels: $(head -c 120 /tmp/archc-compile-err | tr '\n|' '  ') |"
    fi
done
echo
echo "raw: ${RAW#"$ROOT"/}; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
