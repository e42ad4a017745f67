#!/usr/bin/env python3
"""Time PyTorch eager (bf16) on an HF model directory the way `archc bench` times archc.

A prefill of --prompt-len random token ids from an empty cache (logits of the last token
only, as archc bench and llama-bench compute them: `logits_to_keep=1`), then --gen single-token decode steps from an empty cache through HF's
own KV cache; --repeat times each after a warm-up, on torch.set_num_threads(--threads).
Prints one JSON object: prefill_tok_s, decode_tok_s (medians), the per-repetition seconds and
the peak resident memory.

Usage: torch_bench.py MODEL_DIR [--prompt-len 512] [--gen 128] [--threads 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import transformers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    model.eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, vocab, (1, args.prompt_len), generator=gen)
    steps = torch.randint(0, vocab, (args.gen,), generator=gen)

    def prefill(ids: torch.Tensor) -> None:
        model(input_ids=ids, use_cache=True, logits_to_keep=1)

    def decode(n: int) -> None:
        cache = transformers.DynamicCache(config=model.config)
        for i in range(n):
            out = model(input_ids=steps[i].view(1, 1), past_key_values=cache, use_cache=True)
            cache = out.past_key_values

    prefill_s, decode_s = [], []
    with torch.inference_mode():
        prefill(prompt[:, :8])
        decode(4)
        for _ in range(args.repeat):
            t = time.perf_counter()
            prefill(prompt)
            prefill_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            decode(args.gen)
            decode_s.append(time.perf_counter() - t)

    print(
        json.dumps(
            {
                "engine": "pytorch",
                "torch": torch.__version__,
                "threads": args.threads,
                "prompt_len": args.prompt_len,
                "gen": args.gen,
                "prefill_tok_s": args.prompt_len / statistics.median(prefill_s),
                "decode_tok_s": args.gen / statistics.median(decode_s),
                "prefill_s": prefill_s,
                "decode_s": decode_s,
                # ru_maxrss is in KiB on Linux.
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
