"""Logits of SmolLM2-135M-Instruct Q4_1 (GGUF) from HF transformers, for archc's tests.

transformers loads a GGUF by dequantising every tensor, here to float32, so its logits
are the exact model that archc's interpreter runs (dequantised weights, f32 arithmetic).
The script feeds prompt 0's token ids from `tests/data/llamacpp/smollm2_greedy.json`
(the ids llama.cpp used) in one forward pass and writes the last position's logits:

    tests/data/llamacpp/smollm2_prompt0_hf_logits.npy   float32, shape (vocab,)
    tests/data/llamacpp/smollm2_prompt0_hf_meta.json    versions, sha256 of GGUF and npy

Usage (pip install -r tools/reference/requirements.txt accelerate; transformers needs
accelerate to load a GGUF):

    python tools/reference/hf_gguf_logits.py path/to/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import argparse
import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "llamacpp"
EXPECTED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="the SmolLM2-135M-Instruct Q4_1 GGUF file")
    ap.add_argument("--out", type=Path, default=DATA, help="output directory")
    args = ap.parse_args()

    digest = sha256(args.gguf)
    if digest != EXPECTED_SHA256:
        raise SystemExit(f"{args.gguf}: sha256 {digest}, expected {EXPECTED_SHA256}")
    greedy = json.loads((DATA / "smollm2_greedy.json").read_text())
    ids = greedy["runs"][0]["prompt_ids"]

    model = AutoModelForCausalLM.from_pretrained(
        str(args.gguf.parent), gguf_file=args.gguf.name, dtype=torch.float32
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    last = out.logits[0, -1].to(torch.float32).numpy().astype(np.float32)

    args.out.mkdir(parents=True, exist_ok=True)
    npy = args.out / "smollm2_prompt0_hf_logits.npy"
    np.save(npy, last)
    meta = {
        "gguf_file": args.gguf.name,
        "gguf_sha256": digest,
        "prompt": greedy["runs"][0]["name"],
        "prompt_tokens": len(ids),
        "position": "last",
        "dtype": "float32",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "accelerate": importlib.metadata.version("accelerate"),
        "npy_sha256": sha256(npy),
        "argmax": int(last.argmax()),
    }
    meta_path = args.out / "smollm2_prompt0_hf_meta.json"
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {npy} (argmax {meta['argmax']}, max {last.max():.4f}) and {meta_path}")


if __name__ == "__main__":
    main()
