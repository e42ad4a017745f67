#!/usr/bin/env bash
# Native binaries against `archc run`, side by side in one run on the same machine:
#  1. the size of the executable `archc build` makes (weights not embedded) and of the C
#     library;
#  2. the time to the first token: the built executable against `archc run` with a warm
#     kernel cache (one unmeasured run warms it), alternating, ROUNDS rounds. Two
#     figures: `first_token_s` of the --json object (from the start of main to the first
#     sampled token), and the wall time of a whole process that generates one token
#     (loading the program and its shared libraries included);
#  3. peak RSS of those one-token processes (wait4's ru_maxrss).
# Model: the SmolLM2-135M-Instruct Q4_1 GGUF of `archc run` (fetched on first use).
# A script for people, not part of CI. Results go to bench/results/DATE-build.{jsonl,md}.
#
#   bench/build.sh [--rounds N] [--threads N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=5
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "bench/build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cd "$ROOT"
cargo build --release --locked -q
cargo rustc --release --locked -q -p archc-runtime --lib --crate-type staticlib \
    --no-default-features --features aot
ARCHC="$ROOT/target/release/archc"
SMOL="$("$ARCHC" run --fetch-only)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$ARCHC" build "$SMOL" -o "$WORK/smollm2" 2>/dev/null
"$ARCHC" build "$SMOL" --lib -o "$WORK/smollm2" 2>/dev/null
mkdir -p bench/results
STAMP="$(date -u +%Y-%m-%d-%H%M)"
RAW="bench/results/$STAMP-build.jsonl"
MD="bench/results/$STAMP-build.md"

python3 - "$ARCHC" "$SMOL" "$WORK" "$ROUNDS" "$THREADS" "$RAW" "$MD" <<'PY'
import json, os, statistics, subprocess, sys, time
archc, smol, work, rounds, threads, raw, md = sys.argv[1:]
rounds = int(rounds)
exe = os.path.join(work, "smollm2")
lib = os.path.join(work, "libsmollm2.so")
prompt = ["--prompt", "Explain in two sentences what a compiler does.", "--temperature", "0",
          "--threads", threads, "--json"]
cmds = {
    "built": [exe] + prompt,
    "archc run": [archc, "run", smol] + prompt,
}

def once(cmd, tokens):
    start = time.perf_counter()
    p = subprocess.Popen(cmd + ["--max-tokens", str(tokens)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"bench/build.sh: {cmd[0]} failed ({status})")
    obj = json.loads(out)
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, **obj}

once(cmds["archc run"], 1)  # warms the kernel cache
rows = {k: [] for k in cmds}
with open(raw, "w") as f:
    for r in range(rounds):
        for name, cmd in cmds.items():
            one = once(cmd, 1)
            gen = once(cmd, 32)
            rec = {"round": r, "what": name, "one_token": one, "gen32": gen}
            f.write(json.dumps(rec) + "\n")
            rows[name].append(rec)

def med(name, key, part="one_token"):
    return statistics.median(x[part][key] for x in rows[name])

size = os.path.getsize(exe) / 1e6
libsize = os.path.getsize(lib) / 1e6
archc_size = os.path.getsize(archc) / 1e6
lines = [
    f"Model: {os.path.basename(smol)}; {threads} threads; medians of {rounds} alternating rounds.",
    "",
    "| | built executable | archc run (warm cache) | built / archc |",
    "|---|---:|---:|---:|",
    f"| size (no weights), MB | {size:.1f} (library {libsize:.1f}) | {archc_size:.1f} (archc; needs libLLVM) | {size / archc_size:.2f} |",
]
for label, key, part in [
    ("first token, from main (s)", "first_token_s", "gen32"),
    ("whole process, 1 token (s)", "wall_s", "one_token"),
    ("peak RSS, 1 token (MB)", "rss_mb", "one_token"),
    ("decode tok/s (32 tokens)", "decode_tok_s", "gen32"),
]:
    a, b = med("built", key, part), med("archc run", key, part)
    lines.append(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
text = "\n".join(lines) + "\n"
open(md, "w").write(text)
print(text)
PY
echo "raw: $RAW"
