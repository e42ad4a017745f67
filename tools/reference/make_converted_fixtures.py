#!/usr/bin/env python3
"""Converts a tiny HF model of every GGUF architecture archc accepts with llama.cpp's own
`convert_hf_to_gguf.py --outtype f32`, and commits the GGUF with HF's logits.

For each case below, a tiny HF checkpoint (one of the committed HF fixtures of
`make_fixtures.py`, or a tiny model built here with the same weight re-draw) is copied into a
temporary directory, given a minimal tokenizer, and converted by llama.cpp's converter. The
case directory `tests/data/gguf/converted/<case>/` then holds:

- `model.gguf`: the converter's output, unchanged;
- `tokens.json`, `logits.npy`, `decode_logits.npy`: the input tokens and HF's fp32 prefill
  and cached-decode logits (copied from the HF fixture, or computed by `make_fixtures.py`'s
  own code for the models built here);
- `meta.json`: where the HF model came from, what it exercises, the converter's version.

`tests/gguf_converted.rs` imports each file, binds it and checks its logits against HF's; it
also requires a case for every architecture in `SUPPORTED_ARCHITECTURES`.

Where the committed HF fixture of a family holds a configuration that llama.cpp's converter
(or its GGUF format) cannot express, the case is a new tiny model whose configuration it can:

- llama: the `llama` fixture uses llama3 RoPE scaling, which the converter writes as a
  `rope_freqs.weight` tensor of per-frequency divisors (no metadata key); archc's import sees
  tensor names only, so it refuses such files. The case is a Llama with linear RoPE scaling.
- qwen2: no HF fixture of the family exists; a Qwen2 with q/k/v biases is built.
- qwen3moe: both HF fixtures have dense layers among the sparse ones (`mlp_only_layers`,
  `decoder_sparse_step`), which llama.cpp's qwen3moe cannot express; every layer is sparse here.
- gemma3: llama.cpp hard-codes the query scale (1/sqrt(head size)), the local layers' RoPE
  base (10000) and which layers are global (every sixth); the fixture has
  `query_pre_attn_scalar` 24 != head_dim 16 and a global layer every second layer. The case
  keeps `query_pre_attn_scalar` = head_dim and six layers (hidden 32), the sixth global.
- deepseek2: the converter writes no `mscale` (only `mscale_all_dim`, as the YaRN log
  multiplier), so the `deepseek_v3_qlora` fixture's mscale 0.8 != mscale_all_dim 1.0 cannot be
  expressed, and llama.cpp's DeepSeek always rotates adjacent pairs, so the
  `deepseek_v3_noqlora` fixture's `rope_interleave: false` cannot either. The case has q
  compression, interleaved RoPE and YaRN with mscale = mscale_all_dim, and its config.json
  says `scoring_func: sigmoid` as the hub's DeepSeek-V3 config does (transformers 5 does not
  write it; without it the converter writes no gating function and llama.cpp uses softmax).
- gpt-oss: llama.cpp hard-codes the SwiGLU clamp at 7 (the converter writes no limit); the
  fixture lowers `swiglu_limit` to 1.5 so that the clamp fires. The case keeps 7.
- olmo3: written by the converter as architecture `olmo2` with a sliding window; no HF
  fixture of OLMo 3 exists, so one is built (window 8, the fourth layer full).

The lfm2 case converts the committed `lfm2` fixture unchanged: the converter writes the MLP
width HF derives (`lfm2.feed_forward_length` 80 from `intermediate_size` 90 with
`block_auto_adjust_ff_dim`; it rounds to `block_multiple_of` even when
`block_ffn_dim_multiplier` is null, where HF does not, but the fixture sets the multiplier),
`lfm2.attention.head_count_kv` as one entry per layer with 0 for the convolution layers, and the
final norm (`model.embedding_norm`) as `token_embd_norm.weight`, which llama.cpp applies after
the last layer.

The tokenizer: the converter needs one, and it is not what these files test. The temporary
copy gets a byte-free BPE `tokenizer.json` of exactly `vocab_size` tokens, single characters
and whatever special tokens the family's tokenizer class insists on (Gemma 3's converter trims
the embedding to the tokenizer's size). The converter refuses a
BPE tokenizer whose pre-tokenizer it does not know (it hashes the token ids of a probe text
and looks the hash up in a table that `convert_hf_to_gguf_update.py` generates from real
hub tokenizers); this script runs the converter in a Python process where an unknown hash
reads as llama.cpp's `gpt-2` pre-tokenizer, which is the one registration that table would
get. Where the `sentencepiece` package is absent, the converter's SentencePiece attempt
reports a missing `tokenizer.model` (true: the copy has none) instead of an import error.
Nothing else of the converter is touched: tensor names, layouts, permutations and every
metadata key are its own.

Usage:
    python tools/reference/make_converted_fixtures.py [CASE ...] [--llama-cpp DIR] [--list]

`--llama-cpp` is a llama.cpp source tree with `convert_hf_to_gguf.py`, `conversion/` and
`gguf-py/`; by default the one `bench/compare.sh` unpacks from the llama-cpp-python sdist
under `bench/.work/` (this script downloads that sdist with pip the same way if it is missing).
Needs requirements.txt. Deterministic: fixed seeds, fp32, one thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_ROOT = REPO_ROOT / "tests" / "data" / "gguf" / "converted"
FIXTURES = REPO_ROOT / "tests" / "data" / "fixtures"
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BENCH_WORK = REPO_ROOT / "bench" / ".work"
# A committed GGUF stays below this many bytes.
MAX_GGUF_BYTES = 800_000

# Runs convert_hf_to_gguf.py (argv[1] is the llama.cpp tree, the rest the converter's own
# arguments) with the two tokenizer accommodations the module docstring describes.
CONVERTER_BOOT = r"""
import runpy, sys
from pathlib import Path
tree = Path(sys.argv[1])
sys.argv = [str(tree / "convert_hf_to_gguf.py")] + sys.argv[2:]
sys.path.insert(0, str(tree / "gguf-py"))
sys.path.insert(0, str(tree))
from conversion import base
known_pre_tokenizer = base.TextModel.get_vocab_base_pre
def pre_tokenizer(self, tokenizer):
    try:
        return known_pre_tokenizer(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre_tokenizer
try:
    import sentencepiece  # noqa: F401
except ImportError:
    def no_sentencepiece_model(self):
        raise FileNotFoundError("no tokenizer.model")
    base.TextModel._create_vocab_sentencepiece = no_sentencepiece_model
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# ---------------------------------------------------------------------------------------
# Tiny models built here, as make_fixtures.py case functions: (config, class, what, 1+w norms).
# ---------------------------------------------------------------------------------------


def built_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=mf.VOCAB,
        hidden_size=mf.HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        tie_word_embeddings=False,
    )
    what = "GQA 4/2, SwiGLU, linear RoPE scaling x4 (rope.scaling.type/factor keys)"
    return cfg, transformers.LlamaForCausalLM, what, False


def built_qwen2():
    cfg = transformers.Qwen2Config(
        vocab_size=mf.VOCAB,
        hidden_size=mf.HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    what = "q/k/v biases (no o bias), GQA 4/2, SwiGLU"
    return cfg, transformers.Qwen2ForCausalLM, what, False


def built_qwen3moe():
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=mf.VOCAB,
        hidden_size=mf.HIDDEN,
        intermediate_size=96,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    what = "every layer sparse: top-2 of 8, norm_topk_prob true, per-head q/k norms"
    return cfg, transformers.Qwen3MoeForCausalLM, what, False


def built_gemma3():
    # Hidden 32 (heads * head_dim = 64) keeps six layers of f32 small.
    cfg = transformers.Gemma3TextConfig(
        vocab_size=mf.VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
        },
        final_logit_softcapping=3.0,
        attn_logit_softcapping=None,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    what = (
        "sandwich norms with 1 + w, q/k norms, embeddings times sqrt(hidden), GeGLU, five local "
        "layers (window 8, theta 1e4) then a global one (theta 1e6, linear x8), softcap 3, tied"
    )
    return cfg, transformers.Gemma3ForCausalLM, what, True


def built_deepseek2():
    cfg = mf._deepseek_v3(
        q_lora_rank=24,
        rope_interleave=True,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 16,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 0.8,
            "mscale_all_dim": 0.8,
        },
    )
    # Real DeepSeek-V3 configs carry it, transformers 5 drops it; without it the converter
    # writes no expert_gating_func, and llama.cpp then scores experts with a softmax.
    cfg.scoring_func = "sigmoid"
    what = (
        "MLA with q_lora_rank 24, kv_lora_rank 32, nope 16 + rope 8, v 16, interleaved RoPE, "
        "yarn x4 over original 16 with mscale = mscale_all_dim = 0.8; sigmoid routing with "
        "correction bias, 8 experts in 4 groups, topk_group 2, top-2, routed scale 2.5, shared expert"
    )
    return cfg, transformers.DeepseekV3ForCausalLM, what, False


def built_gpt_oss():
    cfg, cls, _, one_plus_norm = mf.case_gpt_oss()
    cfg.swiglu_limit = 7.0
    what = (
        "attention sinks, q/k/v/o biases, alternating sliding (8) / full layers, yarn x8, router "
        "bias, expert biases, SwiGLU clamped at llama.cpp's fixed limit 7"
    )
    return cfg, cls, what, one_plus_norm


def built_olmo3():
    cfg = transformers.Olmo3Config(
        vocab_size=mf.VOCAB,
        hidden_size=mf.HIDDEN,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        sliding_window=8,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    what = "OLMo 2's post-norms and whole-projection q/k norms, sliding window 8 on layers 0-2, layer 3 full"
    return cfg, transformers.Olmo3ForCausalLM, what, False


# Case name -> (GGUF architecture, HF fixture name or a builder).
CASES = {
    "llama": ("llama", built_llama),
    "qwen2": ("qwen2", built_qwen2),
    "qwen3": ("qwen3", "qwen3"),
    "qwen3moe": ("qwen3moe", built_qwen3moe),
    "gemma3": ("gemma3", built_gemma3),
    "deepseek2": ("deepseek2", built_deepseek2),
    "gpt-oss": ("gpt-oss", built_gpt_oss),
    "olmo2": ("olmo2", "olmo2"),
    "olmo3": ("olmo2", built_olmo3),
    "lfm2": ("lfm2", "lfm2"),
}


def tokenizer_files(vocab_size: int, specials: list[str]) -> dict[str, str]:
    """A BPE tokenizer of `vocab_size` tokens and no merges: single printable characters,
    then `specials` as special added tokens with the last ids."""
    chars = [chr(c) for c in range(33, 0x3000) if chr(c).isprintable() and not chr(c).isspace()]
    plain = vocab_size - len(specials)
    vocab = {ch: i for i, ch in enumerate(chars[:plain])}
    added = []
    for i, tok in enumerate(specials):
        vocab[tok] = plain + i
        added.append({"id": plain + i, "content": tok, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    return {
        "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}),
    }


def write_tokenizer(model_dir: Path, vocab_size: int) -> None:
    """Writes the tokenizer. transformers picks the tokenizer class from config.json's
    model_type, and some classes add their own special tokens (Qwen2's `<|endoftext|>`); those
    are then given ids inside the vocabulary, since the converter refuses ids beyond it."""
    specials: list[str] = []
    for _ in range(2):
        for f, text in tokenizer_files(vocab_size, specials).items():
            (model_dir / f).write_text(text, encoding="utf-8")
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        extra = sorted(t for t, i in tok.get_added_vocab().items() if i >= vocab_size)
        if not extra:
            return
        specials = sorted(set(specials) | set(extra))
    raise RuntimeError(f"{model_dir}: the tokenizer keeps adding tokens beyond the vocabulary")


def find_llama_cpp(given: Path | None) -> Path:
    """The llama.cpp source tree: `given`, or the sdist bench/compare.sh unpacks (fetched if absent)."""
    if given is not None:
        tree = given
    else:
        tree = BENCH_WORK / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
        if not (tree / "convert_hf_to_gguf.py").is_file():
            BENCH_WORK.mkdir(parents=True, exist_ok=True)
            print(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist into {BENCH_WORK}")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                 "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(BENCH_WORK)],
                check=True,
            )
            archive = BENCH_WORK / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
            shutil.unpack_archive(str(archive), str(BENCH_WORK))
    if not (tree / "convert_hf_to_gguf.py").is_file():
        raise SystemExit(f"{tree}: no convert_hf_to_gguf.py (expected a llama.cpp source tree)")
    return tree


def hf_source(name: str, source, tmp: Path) -> tuple[Path, str, str]:
    """The HF checkpoint directory of a case, a line saying where it comes from, and what it exercises."""
    if isinstance(source, str):
        fixture = FIXTURES / source
        meta = json.loads((fixture / "meta.json").read_text())
        return fixture, f"HF fixture tests/data/fixtures/{source} (make_fixtures.py)", meta["exercises"]
    case = f"converted_{name}"
    mf.CASES[case] = source
    built = tmp / "hf"
    mf.build_case(case, built)
    return built / case, "built by make_converted_fixtures.py with make_fixtures.py's weight re-draw", source()[2]


def convert(name: str, tree: Path) -> dict:
    arch, source = CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"archc-convert-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        hf_dir, origin, what = hf_source(name, source, tmp)
        model_dir = tmp / "model"
        model_dir.mkdir()
        for f in ["config.json", "model.safetensors"]:
            shutil.copy(hf_dir / f, model_dir / f)
        vocab = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
        write_tokenizer(model_dir, vocab)
        out = OUT_ROOT / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        gguf_path = out / "model.gguf"
        run = subprocess.run(
            [sys.executable, "-c", CONVERTER_BOOT, str(tree), str(model_dir), "--outtype", "f32",
             "--outfile", str(gguf_path), "--model-name", f"tiny-{name}"],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"{name}: convert_hf_to_gguf.py failed:\n{run.stdout}\n{run.stderr}")
        for f in ["tokens.json", "logits.npy", "decode_logits.npy"]:
            shutil.copy(hf_dir / f, out / f)
    written_arch = read_architecture(tree, gguf_path)
    if written_arch != arch:
        raise RuntimeError(f"{name}: the converter wrote architecture {written_arch!r}, expected {arch!r}")
    size = gguf_path.stat().st_size
    if size > MAX_GGUF_BYTES:
        raise RuntimeError(f"{name}: {size} bytes of GGUF, limit {MAX_GGUF_BYTES}")
    meta = {
        "case": name,
        "architecture": arch,
        "hf_model": origin,
        "exercises": what,
        "converter": f"convert_hf_to_gguf.py --outtype f32 of llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} (vendor/llama.cpp)",
        "logits_std": round(float(np.load(out / "logits.npy").std()), 6),
        "transformers_version": transformers.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {"case": name, "arch": arch, "bytes": size}


def read_architecture(tree: Path, path: Path) -> str:
    """`general.architecture` of a GGUF, read with the tree's own gguf-py."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from gguf import GGUFReader; "
        "print(GGUFReader(sys.argv[2]).fields['general.architecture'].contents())"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tree / "gguf-py"), str(path)],
                         capture_output=True, text=True, check=True)
    return run.stdout.strip()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--llama-cpp", type=Path, help="llama.cpp source tree (default: bench/.work's sdist)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{c}  ({a})" for c, (a, _) in CASES.items()))
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    tree = find_llama_cpp(args.llama_cpp)
    transformers.utils.logging.disable_progress_bar()
    mf.torch.use_deterministic_algorithms(True)
    mf.torch.set_num_threads(1)
    for name in args.cases or CASES:
        r = convert(name, tree)
        print(f"{r['case']:<12}{r['arch']:<12}{r['bytes']:>9} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
