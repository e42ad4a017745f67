#!/usr/bin/env python3
"""Record llama.cpp's tokenization and greedy generation for a GGUF model as committed fixtures.

The Rust tests (tests/tokenize.rs and the generation parity tests) compare archc against these
files; they never run Python or llama.cpp.

Install (llama-cpp-python compiles llama.cpp from source; CPU only is enough):

    CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAMA_CURL=OFF" \\
        pip install -r tools/reference/requirements-llamacpp.txt

Run:

    python tools/reference/llamacpp_reference.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf

It writes, for the model (default name `smollm2`):

- tests/data/tokenize/<name>_tokenizer.json: the GGUF's `tokenizer.*` metadata only (tokens,
  token types, merges or scores, special ids, flags, chat template), keyed by the GGUF keys.
- tests/data/llamacpp/<name>_tokenize.json: for each text of TEXTS, llama.cpp's ids with and
  without BOS (`add_special`), with special tokens parsed and not, and `llama_detokenize` of the
  ids (with and without rendering special tokens) as bytes in hex; plus the special ids, the
  add-BOS flag and the end-of-generation id set.
- tests/data/llamacpp/<name>_greedy.json: PROMPTS (chat ones rendered with the GGUF's chat
  template by jinja2 the way HF renders templates) with their prompt ids and GREEDY_STEPS greedy
  ids (argmax of the logits, no stopping at end-of-generation tokens), and the top-2 ids and
  logits at every step.
- tests/data/llamacpp/<name>_prompt0_last_logits.npy: the full logits row at the last position
  of the first prompt, float32.
- tests/data/llamacpp/<name>_meta.json: the GGUF's SHA-256, llama-cpp-python's version, llama.cpp's
  system info, thread count and context size.

Runs are deterministic for a given llama.cpp build and thread count (fixed at 2 here).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import struct
from pathlib import Path

import jinja2
import jinja2.sandbox
import numpy as np

import llama_cpp

REPO_ROOT = Path(__file__).resolve().parents[2]
GREEDY_STEPS = 40
N_THREADS = 2
N_CTX = 1024

# Texts chosen to exercise the pre-tokenizer and special-token handling: ASCII, accented
# Latin, CJK, emoji (4-byte UTF-8, ZWJ sequences), whitespace runs, tabs and newlines,
# digits (split one by one for SmolLM2), code, contractions, and special-token text.
TEXTS = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's what we've done, isn't it? She'd've known.",
    "Café naïve façade résumé über Ærø",
    "日本語のテキストです。中文也可以。한국어 텍스트",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "multiple   spaces    here     and\ttabs\t\there",
    "line one\nline two\n\n\nline five\r\nwindows line\n",
    "   leading and trailing spaces   ",
    "\n\n\n",
    "\t\t  \n \t",
    "Numbers: 0 7 42 1234567 3.14159 -273.15 1e-9 1,000,000 ٣٤٥ ²³",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() { let x: Vec<u8> = vec![0xff; 16]; println!(\"{x:?}\"); }",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<|endoftext|> and <|im_start|> again",
    "almost special: <|im_start |> <im_start> <|im_end",
    "<|endoftext|><|endoftext|>",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@c.org",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
    "Mixed\u00a0no-break\u2003em-space\u200bzero-width",
    "ALL CAPS AND MiXeD cAsE WORDS",
    "'s 't 're 've 'm 'll 'd 'S 'RE",
    "$$$ ### @@@ !!! ??? ... --- ___ *** ((( )))",
    "a" * 60,
    "Ä ä Ö ö Ü ü ß ẞ ﬁ ﬂ",
]

SYSTEM = "You are a concise assistant."
PROMPTS = [
    {"name": "chat_capital", "chat": True,
     "messages": [{"role": "user", "content": "What is the capital of France? Describe its history in a paragraph."}]},
    {"name": "chat_system_story", "chat": True,
     "messages": [{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "Write a short story about a robot who learns to paint."}]},
    {"name": "chat_multiturn", "chat": True,
     "messages": [{"role": "user", "content": "Give me a word that rhymes with cat."},
                  {"role": "assistant", "content": "Hat."},
                  {"role": "user", "content": "Now explain how photosynthesis works."}]},
    {"name": "plain_story", "chat": False, "text": "Once upon a time, in a small village by the sea,"},
    {"name": "plain_code", "chat": False, "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
]


def read_gguf_metadata(path: Path) -> dict:
    """Parse the key/value header of a GGUF file (version 2 or 3)."""
    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with path.open("rb") as f:
        def rd(fmt):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))[0]

        def rstr():
            return f.read(rd("Q")).decode("utf-8")

        def rval(ty):
            if ty == 8:
                return rstr()
            if ty == 9:
                elem, n = rd("I"), rd("Q")
                return [rval(elem) for _ in range(n)]
            return rd(scalars[ty])

        if f.read(4) != b"GGUF":
            raise SystemExit(f"{path}: not a GGUF file")
        rd("I")  # version
        rd("Q")  # tensor count
        n_kv = rd("Q")
        meta = {}
        for _ in range(n_kv):
            key = rstr()
            meta[key] = rval(rd("I"))
        return meta


def render_chat(template: str, messages: list, bos: str, eos: str) -> str:
    """Render a chat template as HF transformers does (trim_blocks, lstrip_blocks)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)


def detok(vocab, ids: list[int], remove_special: bool, unparse_special: bool) -> bytes:
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    cap = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
    if n < 0:
        raise RuntimeError(f"detokenize needs {-n} bytes")
    return buf.raw[:n]


def tok(vocab, text: str, add_special: bool, parse_special: bool) -> list[int]:
    data = text.encode("utf-8")
    cap = len(data) + 16
    arr = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), arr, cap, add_special, parse_special)
    if n < 0:
        raise RuntimeError(f"tokenize needs {-n} slots")
    return list(arr[:n])


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True, type=Path)
    ap.add_argument("--name", default="smollm2")
    args = ap.parse_args()

    gguf_bytes = args.gguf.read_bytes()
    sha256 = hashlib.sha256(gguf_bytes).hexdigest()
    del gguf_bytes
    meta = read_gguf_metadata(args.gguf)

    # (0) The tokenizer metadata extract, compact.
    extract = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
    extract_path = REPO_ROOT / "tests" / "data" / "tokenize" / f"{args.name}_tokenizer.json"
    extract_path.parent.mkdir(parents=True, exist_ok=True)
    extract_path.write_text(json.dumps(extract, ensure_ascii=False, separators=(",", ":")) + "\n",
                            encoding="utf-8")
    print(f"wrote {extract_path.relative_to(REPO_ROOT)} ({extract_path.stat().st_size} bytes)")

    llm = llama_cpp.Llama(model_path=str(args.gguf), n_ctx=N_CTX, n_batch=N_CTX, logits_all=True,
                          n_threads=N_THREADS, n_threads_batch=N_THREADS, seed=0, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def opt(x: int):
        return None if x < 0 else int(x)

    special = {
        "bos": opt(llama_cpp.llama_vocab_bos(vocab)),
        "eos": opt(llama_cpp.llama_vocab_eos(vocab)),
        "eot": opt(llama_cpp.llama_vocab_eot(vocab)),
        "pad": opt(llama_cpp.llama_vocab_pad(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "eog": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
    }

    # (a) Tokenization and detokenization.
    cases = []
    for text in TEXTS:
        case = {"text": text}
        for add_special in (False, True):
            for parse_special in (False, True):
                key = f"ids_add{int(add_special)}_parse{int(parse_special)}"
                case[key] = tok(vocab, text, add_special, parse_special)
        ids = case["ids_add1_parse1"]
        case["detok_remove1_render0_hex"] = detok(vocab, ids, True, False).hex()
        case["detok_remove0_render1_hex"] = detok(vocab, ids, False, True).hex()
        cases.append(case)
    dump(REPO_ROOT / "tests" / "data" / "llamacpp" / f"{args.name}_tokenize.json",
         {"special": special, "cases": cases})

    # (b) Greedy continuations, (c) the first prompt's last logits.
    template = meta.get("tokenizer.chat_template")
    tokens = meta["tokenizer.ggml.tokens"]
    bos_text = tokens[special["bos"]] if special["bos"] is not None else ""
    eos_text = tokens[special["eos"]] if special["eos"] is not None else ""
    runs = []
    for i, p in enumerate(PROMPTS):
        if p["chat"]:
            if template is None:
                raise SystemExit("the GGUF has no tokenizer.chat_template")
            text = render_chat(template, p["messages"], bos_text, eos_text)
            prompt_ids = tok(vocab, text, True, True)
        else:
            text = p["text"]
            prompt_ids = tok(vocab, text, True, False)
        llm.reset()
        llm.eval(prompt_ids)
        if i == 0:
            last = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            np.save(REPO_ROOT / "tests" / "data" / "llamacpp" / f"{args.name}_prompt0_last_logits.npy", last)
        generated, top2 = [], []
        for _ in range(GREEDY_STEPS):
            row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-row, kind="stable")[:2]
            nxt = int(order[0])
            top2.append([[int(j), float(row[j])] for j in order])
            generated.append(nxt)
            llm.eval([nxt])
        first_eog = next((k for k, t in enumerate(generated) if t in set(special["eog"])), None)
        runs.append({**p, "prompt_text": text, "prompt_ids": prompt_ids, "generated_ids": generated,
                     "first_eog_step": first_eog,
                     "generated_text": detok(vocab, generated, False, True).decode("utf-8", "replace"),
                     "top2": top2})
        print(f"{p['name']}: {len(prompt_ids)} prompt ids -> {generated[:8]}...")
    dump(REPO_ROOT / "tests" / "data" / "llamacpp" / f"{args.name}_greedy.json",
         {"steps": GREEDY_STEPS, "runs": runs})

    dump(REPO_ROOT / "tests" / "data" / "llamacpp" / f"{args.name}_meta.json", {
        "gguf_file": args.gguf.name,
        "gguf_sha256": sha256,
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_libs": sorted(p.name for p in (Path(llama_cpp.__file__).parent / "lib").glob("lib*.so.*.*.*")),
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "n_threads": N_THREADS,
        "n_ctx": N_CTX,
        "n_vocab": n_vocab,
        "greedy_steps": GREEDY_STEPS,
        "logits_file": f"{args.name}_prompt0_last_logits.npy",
    })


if __name__ == "__main__":
    main()
