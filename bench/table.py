#!/usr/bin/env python3
"""Summarise the raw results of bench/compare.sh as a Markdown table.

Reads RAW_DIR/{archc,base,llama,torch}.<model>.<round>.json and prints, per model, the
median over rounds of each engine's prefill and decode tokens per second with the ratios
archc/llama.cpp and archc/PyTorch, the same for each engine's best round, then archc's own
numbers: compile times, peak memory and the roofline fractions (see `archc bench --help`
for their definitions). Where a baseline archc (`base`, see ARCHC_BASE in compare.sh) ran,
a table of archc against it: both medians, their ratio, and the median and range of the
per-round ratios (each round runs the two back to back, so a round's ratio sees one load).

Usage: table.py RAW_DIR --models "a b" [--threads N --prompt-len N --gen N]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(path: Path):
    try:
        text = path.read_text().strip()
        return json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None


def llama_rates(doc, prompt: int, gen: int) -> tuple[float | None, float | None]:
    """(prefill, decode) tokens per second from llama-bench's JSON (one object per test)."""
    pp = tg = None
    for test in doc or []:
        if test.get("n_prompt") == prompt and test.get("n_gen") == 0:
            pp = test.get("avg_ts")
        if test.get("n_gen") == gen and test.get("n_prompt") == 0:
            tg = test.get("avg_ts")
    return pp, tg


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def best(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    args = ap.parse_args()
    p, g = args.prompt_len, args.gen

    header = [
        "| model | test | archc | llama.cpp | PyTorch | archc/llama.cpp | archc/PyTorch | rounds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    speed = list(header)
    fastest = list(header)
    own = [
        "| model | decode roofline | prefill roofline | compile cold | compile cached | peak RSS / (weights + KV) | bandwidth | FMA peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    against_base = [
        "| model | test | archc | base | archc/base (medians) | per-round archc/base: median (min–max) | rounds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in args.models.split():
        archc = [d for d in (load(f) for f in sorted(args.raw.glob(f"archc.{m}.*.json"))) if d]
        by_round = lambda engine: {
            f.name.split(".")[-2]: load(f) for f in sorted(args.raw.glob(f"{engine}.{m}.*.json"))
        }
        base_rounds, archc_rounds = by_round("base"), by_round("archc")
        for test, key, n in (("prefill", "prefill_tok_s", p), ("decode", "decode_tok_s", g)):
            if not base_rounds:
                break
            paired = [
                archc_rounds[r][key] / base_rounds[r][key]
                for r in sorted(base_rounds)
                if archc_rounds.get(r) and base_rounds[r]
                and archc_rounds[r].get(key) and base_rounds[r].get(key)
            ]
            a = med(d.get(key) for d in archc_rounds.values() if d)
            b = med(d.get(key) for d in base_rounds.values() if d)
            spread = (
                f"{med(paired):.3f}x ({min(paired):.3f}–{max(paired):.3f})" if paired else "n/a"
            )
            against_base.append(
                f"| {m} | {test} {n} tok/s | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {spread} | {len(paired)} |"
            )
        torch = [d for d in (load(f) for f in sorted(args.raw.glob(f"torch.{m}.*.json"))) if d]
        llama = [llama_rates(load(f), p, g) for f in sorted(args.raw.glob(f"llama.{m}.*.json"))]
        rounds = max(len(archc), len(torch), len(llama))
        for test, key, idx, n in (("prefill", "prefill_tok_s", 0, p), ("decode", "decode_tok_s", 1, g)):
            label = f"{test} {n} tok/s"
            for table, pick in ((speed, med), (fastest, best)):
                a = pick(d.get(key) for d in archc)
                t = pick(d.get(key) for d in torch)
                l = pick(r[idx] for r in llama)
                table.append(
                    f"| {m} | {label} | {fmt(a)} | {fmt(l)} | {fmt(t)} | {ratio(a, l)} | {ratio(a, t)} | {rounds} |"
                )
        if archc:
            pct = lambda k: fmt(None if med(d.get(k) for d in archc) is None else 100 * med(d.get(k) for d in archc)) + "%"
            own.append(
                f"| {m} | {pct('decode_roofline_fraction')} | {pct('prefill_roofline_fraction')} "
                f"| {fmt(med(d.get('compile_cold_s') for d in archc), 2)} s "
                f"| {fmt(med(d.get('compile_cached_s') for d in archc), 3)} s "
                f"| {fmt(med(d.get('peak_rss_ratio') for d in archc), 2)}x "
                f"| {fmt(med(d.get('bandwidth_gbs') for d in archc))} GB/s "
                f"| {fmt(med(d.get('fma_gflops') for d in archc))} GFLOP/s |"
            )
    print(f"threads {args.threads}, prompt {p} tokens, {g} generated\n")
    print("Median over rounds:\n")
    print("\n".join(speed))
    print("\nBest round of each engine (the least disturbed one on a shared machine):\n")
    print("\n".join(fastest))
    print("\narchc's own measurements, median over rounds:\n")
    print("\n".join(own))
    if len(against_base) > 2:
        print("\narchc against the baseline build (base), median over rounds:\n")
        print("\n".join(against_base))


if __name__ == "__main__":
    main()
