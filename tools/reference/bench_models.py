#!/usr/bin/env python3
"""Create the benchmark models of bench/compare.sh: real shapes, random weights, bf16.

Each model is the published architecture (the config under tests/data/configs/<name>/) with
weights drawn from a normal distribution (std 0.02, norms at 1), saved with
`save_pretrained` in bf16 together with a small byte-level BPE tokenizer, so that archc,
PyTorch and llama.cpp's converter all accept the directory. The weights are random: the
models are for timing only, their text is noise.

Usage:
    python tools/reference/bench_models.py --out DIR               # every model
    python tools/reference/bench_models.py --out DIR qwen3-0.6b    # some models
    python tools/reference/bench_models.py --list

The output is deterministic for a given torch/transformers/tokenizers version (fixed seed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "tests" / "data" / "configs"
MODELS = ["qwen3-0.6b", "llama-3.2-1b", "lfm2-1.2b"]
SEED = 1234
STD = 0.02

# Text the tokenizer learns its merges from. Its content does not matter for timing; a few
# hundred merges make it a real BPE vocabulary that every consumer can load.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A compiler turns a description of a transformer into kernels for the machine.",
    "Prefill reads the prompt at once; decode produces one token after another.",
    "Memory bandwidth bounds decoding, arithmetic throughput bounds prefill.",
    "def main():\n    print('hello, world')\n",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \"",
]


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on CORPUS. Its ids stay far below the model's
    vocabulary; the rows above them are never produced by it (llama.cpp's converter pads the
    gap with unused tokens), which is all a timing benchmark of random token ids needs."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 8, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.eos_token = "<|endoftext|>"
    return fast


def make(name: str, out: Path) -> None:
    config_path = CONFIGS / name / "config.json"
    raw = json.loads(config_path.read_text())
    config = transformers.AutoConfig.for_model(**raw)
    config.dtype = "bfloat16"
    torch.manual_seed(SEED)
    with torch.no_grad():
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                # Norm weights at 1 keep activations at a sane scale through the depth.
                p.fill_(1.0)
            else:
                p.normal_(0.0, STD)
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer().save_pretrained(dest)
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in dest.glob("*.safetensors"))
    print(f"{name}: {params / 1e6:.1f} M parameters, {size / 2**20:.0f} MiB of safetensors -> {dest}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="models to create (default: all)")
    ap.add_argument("--out", type=Path, help="directory that receives one folder per model")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(MODELS))
        return 0
    if args.out is None:
        ap.error("--out is required")
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {MODELS}")
    for name in args.names or MODELS:
        make(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
