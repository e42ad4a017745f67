#!/usr/bin/env python3
"""Run llama.cpp's convert_hf_to_gguf.py on a bench model with a fixed pre-tokenizer name.

The converter identifies a BPE tokenizer by hashing how it splits a test string and refuses
tokenizers it has not seen. The bench models carry a small tokenizer of their own (their
weights are random and their text is noise), so this wrapper tells the converter which
pre-tokenizer to record instead of letting it guess, and that there is no SentencePiece
model to look for. Tokenization never takes part in the
timing: every benchmark feeds token ids.

Usage: convert_gguf.py LLAMA_CPP_DIR PRE_TOKENIZER [convert_hf_to_gguf.py arguments...]
"""

import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    llama_dir = Path(sys.argv[1])
    pre = sys.argv[2]
    sys.path.insert(0, str(llama_dir))
    sys.path.insert(1, str(llama_dir / "gguf-py"))
    from conversion import base

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre

    # The bench models have no SentencePiece model; say so the way the converter expects,
    # without importing sentencepiece first.
    def no_sentencepiece(self):
        raise FileNotFoundError("bench models carry a BPE tokenizer.json only")

    base.TextModel._set_vocab_sentencepiece = no_sentencepiece
    script = llama_dir / "convert_hf_to_gguf.py"
    sys.argv = [str(script), *sys.argv[3:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
