"""Writes the GGUF fixtures under tests/data/gguf/ with the `gguf` Python package.

- types/<TYPE>.gguf + <TYPE>.npy: one tensor `t` of shape [2, 512] (GGUF ne [512, 2]) per
  tensor type, its blocks random bytes (scale fields random finite f16s, subnormals and
  negative values included), and the f32 values `gguf.quants.dequantize` gives for it.
- metadata/all_types.gguf: every metadata value type, arrays, nested arrays, a 64-byte
  `general.alignment` and three small tensors at known offsets.
- tiny_llama/{f32,f16,q8_0}.gguf: a tiny random Llama (HF LlamaForCausalLM) converted the way
  llama.cpp's converter does it (tensor names, q/k rows permuted for its RoPE, 1-D tensors
  kept f32), plus tokens.json and HF's logits for each: `logits_f32.npy` from the model
  itself, `logits_f16.npy` / `logits_q8_0.npy` from the same HF model with its 2-D weights
  replaced by their f16-rounded / Q8_0-dequantised values.
- tiny_quant/{q4_0,q4_1,q5_0,q5_1,iq4_nl,q4_k,q5_k,q6_k}.gguf: tiny Llamas whose 2-D
  weights are random blocks of one type (scale fields set so weights have a std near
  1/sqrt(width), 1-D tensors f32), for the quantised kernels against the interpreter on
  the dequantised weights; no HF reference. 32-element types: hidden 32, untied head;
  256-element types: hidden 256, one layer, head tied to the embedding.
  tiny_quant/mixed_k.gguf: the same 256-hidden Llama with Q2_K, Q3_K and IQ4_XS weights
  mixed, per projection as MIXED_K says.
- tiny_deepseek_split/f32.gguf: a tiny random DeepSeek-V3 (HF DeepseekV3ForCausalLM: MLA with
  q compression, interleaved RoPE, one dense layer then a group-limited sigmoid MoE layer)
  written as current llama.cpp conversions write it: `kv_b_proj` split per head into
  `attn_k_b` (transposed) and `attn_v_b`, the *_mla head sizes, experts stacked; plus
  tokens.json and HF's logits (`logits.npy`).
- smollm2_meta.gguf (only with --smollm2 PATH): the metadata of the SmolLM2-135M-Instruct
  GGUF with its tokenizer arrays cut to 16 entries, and no tensors.

Usage: python tools/reference/make_gguf_fixtures.py [--only NAME ...] [--smollm2 PATH/TO/SmolLM2.gguf]
Deterministic: fixed seeds, fp32, one thread.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter, GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = Path(__file__).resolve().parents[2] / "tests" / "data" / "gguf"

# Byte offsets of the f16 scale fields inside one block, per type.
SCALE_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
    T.MXFP4: [],  # an E8M0 exponent byte: every value finite
}
BLOCK = {T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22), T.Q5_1: (32, 24),
         T.Q8_0: (32, 34), T.Q2_K: (256, 84), T.Q3_K: (256, 110), T.Q4_K: (256, 144),
         T.Q5_K: (256, 176), T.Q6_K: (256, 210), T.IQ4_NL: (32, 18), T.IQ4_XS: (256, 136),
         T.MXFP4: (32, 17)}


def finite_f16_bits(rng, n):
    """Random f16 bit patterns that are finite (exponent field not all ones)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exp = (bits >> 10) & 0x1F
    return np.where(exp == 0x1F, bits & ~np.uint16(0x4000), bits).astype(np.uint16)


def type_fixtures():
    out = ROOT / "types"
    out.mkdir(parents=True, exist_ok=True)
    rows, cols = 2, 512
    for t in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K,
              T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS, T.MXFP4]:
        # One seed per type, so adding a type leaves the other types' files as they were.
        rng = np.random.default_rng(1000 + int(t))
        if t == T.F32:
            raw = rng.normal(size=rows * cols).astype(np.float32).view(np.uint8)
        elif t == T.F16:
            raw = finite_f16_bits(rng, rows * cols).view(np.uint8)
        elif t == T.BF16:
            bits = rng.integers(0, 1 << 16, size=rows * cols, dtype=np.uint32).astype(np.uint16)
            exp = (bits >> 7) & 0xFF
            bits = np.where(exp == 0xFF, bits & ~np.uint16(0x4000), bits).astype(np.uint16)
            raw = bits.view(np.uint8)
        else:
            blen, bbytes = BLOCK[t]
            n_blocks = rows * cols // blen
            blocks = rng.integers(0, 256, size=(n_blocks, bbytes), dtype=np.uint16).astype(np.uint8)
            for at in SCALE_FIELDS[t]:
                blocks[:, at:at + 2] = finite_f16_bits(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
            raw = blocks.reshape(-1)
        raw = np.ascontiguousarray(raw.reshape(rows, -1))
        expected = dequantize(raw, t).astype(np.float32).reshape(rows, cols)
        w = GGUFWriter(str(out / f"{t.name}.gguf"), "test")
        w.add_tensor("t", raw, raw_dtype=t)
        write(w)
        np.save(out / f"{t.name}.npy", expected)


def write(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def metadata_fixture():
    out = ROOT / "metadata"
    out.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(out / "all_types.gguf"), "test")
    w.add_custom_alignment(64)
    w.add_key_value("t.u8", 200, V.UINT8)
    w.add_key_value("t.i8", -100, V.INT8)
    w.add_key_value("t.u16", 60000, V.UINT16)
    w.add_key_value("t.i16", -30000, V.INT16)
    w.add_key_value("t.u32", 4_000_000_000, V.UINT32)
    w.add_key_value("t.i32", -2_000_000_000, V.INT32)
    w.add_key_value("t.u64", 18_000_000_000_000_000_000, V.UINT64)
    w.add_key_value("t.i64", -9_000_000_000_000_000_000, V.INT64)
    w.add_key_value("t.f32", 0.1, V.FLOAT32)
    w.add_key_value("t.f64", 0.1, V.FLOAT64)
    w.add_key_value("t.bool_true", True, V.BOOL)
    w.add_key_value("t.bool_false", False, V.BOOL)
    w.add_key_value("t.string", "héllo, GGUF", V.STRING)
    w.add_key_value("t.empty_string", "", V.STRING)
    w.add_key_value("t.array_u32", [1, 2, 3], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("t.array_f64", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.array_string", ["a", "bc", ""], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("t.array_long", list(range(12)), V.ARRAY, sub_type=V.INT16)
    w.add_key_value("t.nested", [[1, 2], [3], ["x", "y"]], V.ARRAY, sub_type=V.ARRAY)
    w.add_key_value("t.nested_deep", [[[True], [False, True]]], V.ARRAY, sub_type=V.ARRAY)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", np.arange(6, dtype=np.float32).reshape(2, 3) / 8)
    w.add_tensor("c", np.array([1.5, -2.0, 0.25, 65504.0, -0.0], dtype=np.float16))
    write(w)


# --- tiny Llama ------------------------------------------------------------------------

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
TOKENS = [1, 7, 33, 2, 60, 14, 14, 9, 41, 0, 5, 63, 22, 8, 30, 17]

LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{i}.{LAYER_NAMES[module]}.{suffix}"


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter permutation: each head's two halves become interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    torch.set_num_threads(1)
    cfg = LlamaConfig(**TINY, attn_implementation="eager")
    model = LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
        # Logits of std about 1, so that every term shows.
        x = model(torch.tensor([TOKENS])).logits
        model.lm_head.weight.mul_(1.0 / x.std())
    out = ROOT / "tiny_llama"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text(json.dumps(TOKENS) + "\n")
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    def logits_with(weights: dict) -> np.ndarray:
        m = LlamaForCausalLM(cfg).eval()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        with torch.no_grad():
            return m(torch.tensor([TOKENS])).logits[0].numpy().astype(np.float32)

    h = TINY["num_attention_heads"]
    kv = TINY["num_key_value_heads"]
    for kind, ftype in [("f32", 0), ("f16", 1), ("q8_0", 7)]:
        w = GGUFWriter(str(out / f"{kind}.gguf"), "llama")
        w.add_name("tiny-llama")
        w.add_uint32("llama.vocab_size", TINY["vocab_size"])
        w.add_uint32("llama.context_length", TINY["max_position_embeddings"])
        w.add_uint32("llama.embedding_length", TINY["hidden_size"])
        w.add_uint32("llama.block_count", TINY["num_hidden_layers"])
        w.add_uint32("llama.feed_forward_length", TINY["intermediate_size"])
        w.add_uint32("llama.attention.head_count", h)
        w.add_uint32("llama.attention.head_count_kv", kv)
        w.add_float32("llama.rope.freq_base", TINY["rope_theta"])
        w.add_float32("llama.attention.layer_norm_rms_epsilon", TINY["rms_norm_eps"])
        w.add_uint32("llama.rope.dimension_count", TINY["hidden_size"] // h)
        w.add_uint32("general.file_type", ftype)
        seen = {}
        for hf, v in state.items():
            stored = v
            if hf.endswith("q_proj.weight"):
                stored = permute(v, h)
            elif hf.endswith("k_proj.weight"):
                stored = permute(v, kv)
            stored = np.ascontiguousarray(stored)
            if kind == "f32" or v.ndim == 1:
                w.add_tensor(gguf_name(hf), stored)
                seen[hf] = v
            elif kind == "f16":
                w.add_tensor(gguf_name(hf), stored.astype(np.float16))
                seen[hf] = v.astype(np.float16).astype(np.float32)
            else:
                q = quantize(stored, T.Q8_0)
                w.add_tensor(gguf_name(hf), q, raw_dtype=T.Q8_0)
                # The HF model gets the dequantised values, in HF's (unpermuted) row order.
                seen[hf] = quantize_roundtrip(v, T.Q8_0)
        write(w)
        np.save(out / f"logits_{kind}.npy", logits_with(seen))
        print(kind, "logits std", float(np.load(out / f"logits_{kind}.npy").std()))


def quantize_roundtrip(v: np.ndarray, t) -> np.ndarray:
    # Rows are quantised independently, so permuting rows commutes with quantisation.
    return dequantize(quantize(np.ascontiguousarray(v), t), t).astype(np.float32).reshape(v.shape)


# --- tiny quantised Llamas ---------------------------------------------------------------

# Per type: the f16 scale fields (byte offset, value, or a function of the block's other
# bytes) that give weights of std about 1/sqrt(width) for random quants.
QUANT_SCALES = {
    T.Q4_0: lambda width: {0: 0.22 / width ** 0.5},
    T.Q4_1: lambda width: {0: 0.22 / width ** 0.5, 2: -7.5 * 0.22 / width ** 0.5},
    T.Q4_K: lambda width: {0: 0.007 / width ** 0.5, 2: 0.052 / width ** 0.5},
    T.Q5_K: lambda width: {0: 0.0035 / width ** 0.5, 2: 0.054 / width ** 0.5},
    T.Q6_K: lambda width: {208: 0.00085 / width ** 0.5},
    T.Q5_0: lambda width: {0: 0.108 / width ** 0.5},
    T.Q5_1: lambda width: {0: 0.108 / width ** 0.5, 2: -15.5 * 0.108 / width ** 0.5},
    T.IQ4_NL: lambda width: {0: 0.0148 / width ** 0.5},
    T.Q2_K: lambda width: {80: 0.072 / width ** 0.5, 82: 0.108 / width ** 0.5},
    T.Q3_K: lambda width: {108: 0.023 / width ** 0.5},
    T.IQ4_XS: lambda width: {0: 0.00081 / width ** 0.5},
}

# The super-block types without a single-type model of their own share one Llama, each
# projection in one of them (as Q3_K_M / IQ4_XS files mix types): the fused q/k/v and
# gate/up kernels then decode parts of different types. The embedding (and tied head) is
# the first type.
MIXED_K = {"token_embd": T.Q3_K, "attn_q": T.Q2_K, "attn_k": T.Q3_K, "attn_v": T.IQ4_XS,
           "attn_output": T.IQ4_XS, "ffn_gate": T.Q2_K, "ffn_up": T.IQ4_XS,
           "ffn_down": T.Q3_K}


def random_blocks(rng, t, rows: int, width: int) -> np.ndarray:
    blen, bbytes = BLOCK[t]
    n = rows * width // blen
    blocks = rng.integers(0, 256, size=(n, bbytes), dtype=np.uint16).astype(np.uint8)
    for at, value in QUANT_SCALES[t](width).items():
        # Scales vary by up to a factor of two between blocks.
        v = (value * rng.uniform(0.75, 1.5, size=n)).astype(np.float16)
        blocks[:, at:at + 2] = v.view(np.uint8).reshape(n, 2)
    return np.ascontiguousarray(blocks.reshape(rows, -1))


def tiny_quant():
    out = ROOT / "tiny_quant"
    out.mkdir(parents=True, exist_ok=True)
    small_types = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.IQ4_NL)
    for t in [T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1, T.IQ4_NL, "mixed_k"]:
        small = t in small_types
        vocab, hidden, inter, layers = (64, 32, 64, 2) if small else (32, 256, 256, 1)
        heads, kv = (4, 2) if small else (4, 1)
        hd = hidden // heads
        name = t if t == "mixed_k" else t.name.lower()
        # One seed per model (the mixed one after every type id), so adding a model leaves
        # the others' files as they were.
        rng = np.random.default_rng(2000 + (64 if t == "mixed_k" else int(t)))
        type_of = (lambda n: MIXED_K[n]) if t == "mixed_k" else (lambda n, t=t: t)
        w = GGUFWriter(str(out / f"{name}.gguf"), "llama")
        w.add_name(f"tiny-{name}")
        w.add_uint32("llama.vocab_size", vocab)
        w.add_uint32("llama.context_length", 64)
        w.add_uint32("llama.embedding_length", hidden)
        w.add_uint32("llama.block_count", layers)
        w.add_uint32("llama.feed_forward_length", inter)
        w.add_uint32("llama.attention.head_count", heads)
        w.add_uint32("llama.attention.head_count_kv", kv)
        w.add_float32("llama.rope.freq_base", 10000.0)
        w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        w.add_uint32("llama.rope.dimension_count", hd)

        def norm(name):
            w.add_tensor(name, (0.8 + 0.4 * rng.random(hidden)).astype(np.float32))

        def mat(name, rows, width):
            ty = type_of(name.split(".")[-2])
            w.add_tensor(name, random_blocks(rng, ty, rows, width), raw_dtype=ty)

        mat("token_embd.weight", vocab, hidden)
        for i in range(layers):
            norm(f"blk.{i}.attn_norm.weight")
            mat(f"blk.{i}.attn_q.weight", heads * hd, hidden)
            mat(f"blk.{i}.attn_k.weight", kv * hd, hidden)
            mat(f"blk.{i}.attn_v.weight", kv * hd, hidden)
            mat(f"blk.{i}.attn_output.weight", hidden, heads * hd)
            norm(f"blk.{i}.ffn_norm.weight")
            mat(f"blk.{i}.ffn_gate.weight", inter, hidden)
            mat(f"blk.{i}.ffn_up.weight", inter, hidden)
            mat(f"blk.{i}.ffn_down.weight", hidden, inter)
        norm("output_norm.weight")
        if small:
            mat("output.weight", vocab, hidden)
        write(w)


DEEPSEEK = dict(vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=16,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24,
                kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2,
                n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                first_k_dense_replace=1, max_position_embeddings=64, rope_theta=10000.0,
                rope_interleave=True, rms_norm_eps=1e-6, tie_word_embeddings=False)

DEEPSEEK_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_a_proj": "attn_q_a", "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b", "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp", "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp", "mlp.shared_experts.down_proj": "ffn_down_shexp",
}


def tiny_deepseek_split():
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(11)
    torch.set_num_threads(1)
    c = DEEPSEEK
    cfg = DeepseekV3Config(**c, attn_implementation="eager")
    model = DeepseekV3ForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "e_score_correction_bias" in name:
                continue
            if p.dim() == 1:
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
        for layer in model.model.layers[c["first_k_dense_replace"]:]:
            b = layer.mlp.gate.e_score_correction_bias
            b.copy_(torch.randn(b.shape, generator=gen) * 0.5)
        x = model(torch.tensor([TOKENS])).logits
        model.lm_head.weight.mul_(1.0 / x.std())
        logits = model(torch.tensor([TOKENS])).logits[0].numpy().astype(np.float32)
    out = ROOT / "tiny_deepseek_split"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text(json.dumps(TOKENS) + "\n")
    np.save(out / "logits.npy", logits)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    h, nope, v, rope = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"], c["qk_rope_head_dim"]
    w = GGUFWriter(str(out / "f32.gguf"), "deepseek2")
    w.add_name("tiny-deepseek-split")
    a = "deepseek2"
    for key, value in [("vocab_size", c["vocab_size"]), ("context_length", c["max_position_embeddings"]),
                       ("embedding_length", c["hidden_size"]), ("block_count", c["num_hidden_layers"]),
                       ("feed_forward_length", c["intermediate_size"]),
                       ("attention.head_count", h), ("attention.head_count_kv", 1),
                       ("attention.key_length", c["kv_lora_rank"] + rope),
                       ("attention.value_length", c["kv_lora_rank"]),
                       ("attention.key_length_mla", nope + rope), ("attention.value_length_mla", v),
                       ("attention.q_lora_rank", c["q_lora_rank"]),
                       ("attention.kv_lora_rank", c["kv_lora_rank"]),
                       ("rope.dimension_count", rope),
                       ("leading_dense_block_count", c["first_k_dense_replace"]),
                       ("expert_count", c["n_routed_experts"]), ("expert_used_count", c["num_experts_per_tok"]),
                       ("expert_shared_count", c["n_shared_experts"]),
                       ("expert_feed_forward_length", c["moe_intermediate_size"]),
                       ("expert_gating_func", 2), ("expert_group_count", c["n_group"]),
                       ("expert_group_used_count", c["topk_group"]), ("general.file_type", 0)]:
        w.add_uint32(key if key.startswith("general.") else f"{a}.{key}", value)
    w.add_float32(f"{a}.rope.freq_base", c["rope_theta"])
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", c["rms_norm_eps"])
    w.add_float32(f"{a}.expert_weights_scale", c["routed_scaling_factor"])
    w.add_bool(f"{a}.expert_weights_norm", c["norm_topk_prob"])
    for hf, t in state.items():
        if hf == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", t)
            continue
        if hf == "model.norm.weight":
            w.add_tensor("output_norm.weight", t)
            continue
        if hf == "lm_head.weight":
            w.add_tensor("output.weight", t)
            continue
        _, _, i, rest = hf.split(".", 3)
        module, suffix = rest.rsplit(".", 1)
        if module == "self_attn.kv_b_proj":
            # As llama.cpp's converter does: per head, the key rows transposed, the value rows.
            kv_b = t.reshape(h, nope + v, t.shape[-1])
            k_b = np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))
            v_b = np.ascontiguousarray(kv_b[:, nope:, :])
            w.add_tensor(f"blk.{i}.attn_k_b.weight", k_b)
            w.add_tensor(f"blk.{i}.attn_v_b.weight", v_b)
        elif suffix == "e_score_correction_bias":
            w.add_tensor(f"blk.{i}.exp_probs_b.bias", t)
        elif rest == "mlp.experts.gate_up_proj":
            # [experts, 2 * ff, hidden]: the gate rows, then the up rows (HF chunks it so).
            ff = t.shape[1] // 2
            w.add_tensor(f"blk.{i}.ffn_gate_exps.weight", np.ascontiguousarray(t[:, :ff, :]))
            w.add_tensor(f"blk.{i}.ffn_up_exps.weight", np.ascontiguousarray(t[:, ff:, :]))
        elif rest == "mlp.experts.down_proj":
            w.add_tensor(f"blk.{i}.ffn_down_exps.weight", np.ascontiguousarray(t))
        else:
            w.add_tensor(f"blk.{i}.{DEEPSEEK_NAMES[module]}.{suffix}", np.ascontiguousarray(t))
    write(w)
    print("deepseek split logits std", float(logits.std()))


def smollm2_meta(path: Path):
    r = GGUFReader(str(path))
    w = GGUFWriter(str(ROOT / "smollm2_meta.gguf"), "llama")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        main = field.types[0]
        value = field.contents()
        if main == V.ARRAY:
            value = value[:16]
            w.add_key_value(key, value, V.ARRAY, sub_type=field.types[-1])
        else:
            w.add_key_value(key, value, main)
    write(w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf to extract metadata from")
    ap.add_argument("--only", nargs="*", help="write only these fixtures (types, metadata, "
                    "tiny_llama, tiny_quant, tiny_deepseek_split)")
    args = ap.parse_args()
    for name, make in [("types", type_fixtures), ("metadata", metadata_fixture),
                       ("tiny_llama", tiny_llama), ("tiny_quant", tiny_quant),
                       ("tiny_deepseek_split", tiny_deepseek_split)]:
        if not args.only or name in args.only:
            make()
    if args.smollm2:
        smollm2_meta(args.smollm2)


if __name__ == "__main__":
    main()
