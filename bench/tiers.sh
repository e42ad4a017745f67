#!/usr/bin/env bash
# The compile tiers at run time, side by side in one run on the same machine:
#  1. time to the first token with a cold kernel cache (`archc run --json`, a fresh
#     ARCHC_CACHE_DIR every run): --tier llvm (LLVM compiles everything first) against
#     --tier tiered (Cranelift code at once, LLVM code switched in between decode steps)
#     and --tier cranelift, the three alternating, ROUNDS rounds;
#  2. the speed of Cranelift code as a fraction of LLVM code's: `archc bench` prefill and
#     decode tokens per second with --backend cranelift and --backend llvm, alternating.
# A script for people, not part of CI. Models: the SmolLM2-135M GGUF of `archc run` (fetched
# on first use) for both; for the speeds also the random-weight Qwen3-0.6B directory that
# bench/compare.sh makes, where present (its tokenizer is not the model's, so `run` cannot
# use it).
#
#   bench/tiers.sh [--rounds N] [--threads N]        (ARCHC: a built archc binary)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=3
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "bench/tiers.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "${ARCHC:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -q)
    ARCHC="$ROOT/target/release/archc"
fi
SMOL="$("$ARCHC" run --fetch-only)"
BENCH_MODELS="$SMOL"
for m in qwen3-0.6b; do
    if [ -d "$ROOT/bench/.work/models/$m" ]; then BENCH_MODELS="$BENCH_MODELS $ROOT/bench/.work/models/$m"; fi
done
mkdir -p "$ROOT/bench/results"
RAW="$ROOT/bench/results/$(date -u +%Y-%m-%d-%H%M)-tiers.jsonl"
: > "$RAW"
PROMPT="Explain in two sentences what a compiler does."

median() { python3 -c 'import statistics,sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "| model | tier | first token s (median of $ROUNDS, cold cache) | / llvm | decode tok/s |"
echo "|---|---|---:|---:|---:|"
for model in $SMOL; do
    declare -A FIRST=() DECODE=()
    for round in $(seq 1 "$ROUNDS"); do
        for tier in llvm tiered cranelift; do
            cache="$(mktemp -d)"
            if ! line="$(ARCHC_CACHE_DIR="$cache" "$ARCHC" run "$model" --prompt "$PROMPT" --max-tokens 32 \
                --temperature 0 --json --tier "$tier" --threads "$THREADS" 2>"$cache.err")"; then
                echo "bench/tiers.sh: archc run --tier $tier failed:" >&2; cat "$cache.err" >&2; exit 1
            fi
            rm -rf "$cache" "$cache.err"
            echo "{\"model\": \"$(basename "$model")\", \"tier\": \"$tier\", \"round\": $round, \"run\": $line}" >> "$RAW"
            FIRST[$tier]="${FIRST[$tier]:-} $(field "$line" first_token_s)"
            DECODE[$tier]="${DECODE[$tier]:-} $(field "$line" decode_tok_s)"
        done
    done
    base="$(median ${FIRST[llvm]})"
    for tier in llvm tiered cranelift; do
        f="$(median ${FIRST[$tier]})"
        echo "| $(basename "$model") | $tier | $f | $(python3 -c "print('%.2f' % ($f / $base))") | $(median ${DECODE[$tier]}) |"
    done
    unset FIRST DECODE
done

echo
echo "| model | Cranelift/LLVM prefill 32 | Cranelift/LLVM decode 8 | LLVM prefill, decode tok/s |"
echo "|---|---:|---:|---:|"
for model in $BENCH_MODELS; do
    P=(); D=(); LP=(); LD=()
    for round in $(seq 1 "$ROUNDS"); do
        for backend in llvm cranelift; do
            if ! line="$("$ARCHC" bench "$model" --backend "$backend" --prompt-len 32 --gen 8 --repeat 1 \
                --threads "$THREADS" --json 2>/tmp/archc-tiers-bench.err)"; then
                echo "bench/tiers.sh: archc bench --backend $backend failed:" >&2
                cat /tmp/archc-tiers-bench.err >&2; exit 1
            fi
            echo "{\"model\": \"$(basename "$model")\", \"backend\": \"$backend\", \"round\": $round, \"bench\": $line}" >> "$RAW"
            p="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prefill_tok_s"])' "$line")"
            d="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["decode_tok_s"])' "$line")"
            if [ "$backend" = llvm ]; then LP+=("$p"); LD+=("$d"); else P+=("$p"); D+=("$d"); fi
        done
    done
    lp="$(median "${LP[@]}")"; ld="$(median "${LD[@]}")"
    echo "| $(basename "$model") | $(python3 -c "print('%.3f' % ($(median "${P[@]}") / $lp))") | $(python3 -c "print('%.3f' % ($(median "${D[@]}") / $ld))") | $lp, $ld |"
done
echo
echo "raw: ${RAW#"$ROOT"/}; $THREADS threads; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
