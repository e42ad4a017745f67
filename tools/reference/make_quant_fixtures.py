#!/usr/bin/env python3
"""Generate HF fixtures stored in the official quantised shipping formats.

Three tiny checkpoints under tests/data/quantized/<case>/, each in the format its family ships in:

- deepseek_v3_fp8: DeepSeek-V3's block FP8. Every linear weight inside the decoder layers is
  `float8_e4m3fn` with a sibling `<module>.weight_scale_inv` of shape
  [ceil(out/128), ceil(in/128)] (float32); the router, correction bias, norms, embeddings and
  head are not quantised (bfloat16; the correction bias float32).
- qwen3_fp8: the same format as Qwen's *-FP8 releases write it: `weight_scale_inv` in bfloat16
  and `modules_to_not_convert: ["lm_head"]`.
- gpt_oss_mxfp4: gpt-oss's MXFP4 experts (`mlp.experts.{gate_up,down}_proj_{blocks,scales}`,
  uint8), everything else bfloat16.

A fourth case, gpt_oss_mxfp4_gguf, converts a gpt-oss MXFP4 checkpoint (its own variant with
`swiglu_limit` 7, the clamp llama.cpp hard-codes) with llama.cpp's `convert_hf_to_gguf.py` the
way make_converted_fixtures.py does, into tests/data/gguf/converted/gpt_oss_mxfp4/, where the
expert tensors keep ggml type MXFP4.

The models are built and re-drawn as in make_fixtures.py (same weight-scale rule, seeds from the
case name, 32 tokens), with one addition: each quantisation block of a quantised weight is
multiplied by its own gain, log-uniform in [1/2, 2], so that block scales differ markedly and a
scale applied to the wrong block moves the logits. The reference is HF in fp32 on the weights the
checkpoint holds: FP8 weights dequantised as q * scale_inv (per 128x128 block, the last block
along an axis clipped to the tensor), MXFP4 weights as e2m1 * 2^(scale - 127), bfloat16 tensors
upcast exactly. HF's own loaders are checked against that reference: its MXFP4 loader agrees bit
for bit, its CPU FP8 loader cuts partial edge blocks wrongly, which the script reproduces and
records; see `hf_loader_check` in each meta.json and tools/reference/README.md.

Usage:
    python tools/reference/make_quant_fixtures.py                  # every case
    python tools/reference/make_quant_fixtures.py qwen3_fp8        # some cases
    python tools/reference/make_quant_fixtures.py --list           # case names
    python tools/reference/make_quant_fixtures.py --llama-cpp DIR  # llama.cpp tree for the GGUF case

Deterministic: fixed seeds, CPU, fp32 reference, eager attention, one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_converted_fixtures as mcf  # noqa: E402
import make_fixtures as mf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_ROOT = REPO_ROOT / "tests" / "data" / "quantized"
GGUF_ROOT = REPO_ROOT / "tests" / "data" / "gguf" / "converted"

FP8_BLOCK = 128
FP8_MAX = 448.0  # largest finite float8_e4m3fn
# The e2m1 value of each 4-bit code (sign in bit 3): HF's FP4_VALUES; ggml's kvalues_mxfp4 are twice these.
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
MXFP4_BLOCK = 32
E8M0_BIAS = 127
# The per-block gain of a quantised weight: log-uniform in [1/GAIN, GAIN].
BLOCK_GAIN = 2.0

# llama.cpp's SwiGLU clamp is fixed at 7; the GGUF case draws its experts' gate_up_proj this much
# larger than the weight-scale rule so that the clamp fires there too.
GGUF_GATE_UP_GAIN = 6.0

GPT_OSS_NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]


# ---------------------------------------------------------------------------------------
# Block FP8 (DeepSeek-V3 / Qwen3-FP8).
# ---------------------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _per_block(s: torch.Tensor, n: int, k: int, block: tuple[int, int]) -> torch.Tensor:
    """Expand a [grid_n, grid_k] per-block tensor over an [n, k] weight (last blocks clipped)."""
    return s.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)[:n, :k]


def fp8_quantise(w: torch.Tensor, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Block FP8 of a 2-D [out, in] weight: (q float8_e4m3fn [out, in], scale_inv [ceil(out/128), ceil(in/128)]).

    scale = amax(|block|) / 448, rounded to `scale_dtype` first (bfloat16 for Qwen), and
    q = w / scale rounded to nearest e4m3fn; the checkpoint's `weight_scale_inv` is that scale
    (dequantisation multiplies by it).
    """
    n, k = w.shape
    gn, gk = _cdiv(n, FP8_BLOCK), _cdiv(k, FP8_BLOCK)
    padded = torch.zeros(gn * FP8_BLOCK, gk * FP8_BLOCK, dtype=torch.float32)
    padded[:n, :k] = w
    amax = padded.reshape(gn, FP8_BLOCK, gk, FP8_BLOCK).abs().amax(dim=(1, 3))
    if not bool((amax > 0).all()):
        raise ValueError("fp8_quantise: an all-zero block")
    scale = (amax / FP8_MAX).to(scale_dtype)
    q = (w / _per_block(scale.float(), n, k, (FP8_BLOCK, FP8_BLOCK))).clamp(-FP8_MAX, FP8_MAX)
    return q.to(torch.float8_e4m3fn), scale


def fp8_dequantise(q: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    """q * scale_inv per 128 x 128 block, the last block along each axis clipped, in fp32."""
    n, k = q.shape
    return q.float() * _per_block(scale_inv.float(), n, k, (FP8_BLOCK, FP8_BLOCK))


def fp8_dequantise_hf_grid_rule(q: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    """What transformers 5.23's CPU loader computes (`Fp8Dequantize._dequantize_one`): it derives
    the block from the scale grid (out / grid_out, in / grid_in) instead of 128, which is right
    only where each axis is a multiple of 128 or a single block."""
    n, k = q.shape
    gn, gk = scale_inv.shape
    if n % gn or k % gk:
        raise ValueError(f"HF's loader refuses {tuple(q.shape)} with a {gn}x{gk} scale grid")
    return q.float() * _per_block(scale_inv.float(), n, k, (n // gn, k // gk))


def _fp8_quantised(name: str, t: torch.Tensor) -> bool:
    """Every 2-D linear weight inside the decoder layers except the MoE router."""
    return name.startswith("model.layers.") and name.endswith(".weight") and t.dim() == 2 and not name.endswith(
        ".mlp.gate.weight"
    )


def _log_uniform_gains(shape, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
    return torch.exp(u * math.log(BLOCK_GAIN))


def fp8_store(master: dict, gen: torch.Generator, scale_dtype: torch.dtype) -> dict:
    """The checkpoint's tensors from the fp32 master weights (hub names)."""
    stored = {}
    for name in sorted(master):
        t = master[name]
        if _fp8_quantised(name, t):
            n, k = t.shape
            gains = _log_uniform_gains((_cdiv(n, FP8_BLOCK), _cdiv(k, FP8_BLOCK)), gen)
            q, s = fp8_quantise(t * _per_block(gains, n, k, (FP8_BLOCK, FP8_BLOCK)), scale_dtype)
            stored[name] = q
            stored[name + "_scale_inv"] = s
        elif name.endswith("e_score_correction_bias"):
            stored[name] = t.clone()
        else:
            stored[name] = t.to(torch.bfloat16)
    return stored


def fp8_reference(stored: dict, dequantise=fp8_dequantise) -> dict:
    out = {}
    for name, t in stored.items():
        if name.endswith("_scale_inv"):
            continue
        out[name] = dequantise(t, stored[name + "_scale_inv"]) if t.dtype == torch.float8_e4m3fn else t.float()
    return out


def _fp8_edges(stored: dict) -> dict:
    """Per quantised tensor: its shape, the scale grid, and the size of a partial last block per axis."""
    info = {}
    for name in sorted(stored):
        t = stored[name]
        if t.dtype != torch.float8_e4m3fn:
            continue
        n, k = t.shape
        info[name] = {
            "shape": [n, k],
            "scale_inv_shape": list(stored[name + "_scale_inv"].shape),
            "partial_rows_in_last_block": n % FP8_BLOCK or None,
            "partial_cols_in_last_block": k % FP8_BLOCK or None,
        }
    return info


def _edge_summary(edges: dict) -> dict:
    """Which tensors have a partial last block on which axis (n = out rows, k = in columns)."""

    def axis(d: int, partial) -> str:
        if partial is None:
            return "full"
        return "single partial block" if d < FP8_BLOCK else "partial last block after full ones"

    groups: dict[str, list[str]] = {}
    for name, e in edges.items():
        n = axis(e["shape"][0], e["partial_rows_in_last_block"])
        k = axis(e["shape"][1], e["partial_cols_in_last_block"])
        key = f"n: {n}; k: {k}"
        groups.setdefault(key, []).append(name)
    return dict(sorted(groups.items()))


def _fp8_map_scales(stored: dict, fn) -> dict:
    """A copy of `stored` with fn(name, q, scale_inv) -> scale_inv applied to every scale."""
    out = dict(stored)
    for name, t in stored.items():
        if t.dtype == torch.float8_e4m3fn:
            s = stored[name + "_scale_inv"]
            out[name + "_scale_inv"] = fn(name, t, s.float().clone()).to(s.dtype)
    return out


def _ablate_one_scale_per_tensor(stored: dict) -> dict:
    return _fp8_map_scales(stored, lambda _n, _q, s: torch.full_like(s, s.mean().item()))


def _ablate_edge_rows(stored: dict) -> dict:
    def fn(_n, q, s):
        if q.shape[0] > FP8_BLOCK and q.shape[0] % FP8_BLOCK:
            s[-1, :] *= 2
        return s

    return _fp8_map_scales(stored, fn)


def _ablate_edge_cols(stored: dict) -> dict:
    def fn(_n, q, s):
        if q.shape[1] > FP8_BLOCK and q.shape[1] % FP8_BLOCK:
            s[:, -1] *= 2
        return s

    return _fp8_map_scales(stored, fn)


FP8_ABLATIONS = {
    "one scale per tensor (the mean of its block scales)": _ablate_one_scale_per_tensor,
    "scale x2 on the partial last row block (n) of every tensor with full blocks before it": _ablate_edge_rows,
    "scale x2 on the partial last column block (k) of every tensor with full blocks before it": _ablate_edge_cols,
}


# ---------------------------------------------------------------------------------------
# MXFP4 (gpt-oss).
# ---------------------------------------------------------------------------------------

# Midpoints between consecutive e2m1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.
_E2M1_MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def mxfp4_quantise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP4 of [E, out, in] weights in gpt-oss's layout: blocks uint8 [E, out, in/32, 16] and
    scales uint8 [E, out, in/32].

    Each run of 32 consecutive input elements shares an E8M0 scale 2^(byte - 127), the
    smallest power of two with amax / scale <= 6; each element is the nearest e2m1 value of
    w / scale (ties to the even code). Byte j of a block holds element 2j in its low nibble and
    element 2j + 1 in its high nibble.
    """
    e, r, c = w.shape
    x = w.reshape(e, r, c // MXFP4_BLOCK, MXFP4_BLOCK)
    amax = x.abs().amax(dim=-1)
    if not bool((amax > 0).all()):
        raise ValueError("mxfp4_quantise: an all-zero block")
    mant, exp = torch.frexp(amax / 6.0)
    exp = torch.where(mant == 0.5, exp - 1, exp)  # ceil(log2(amax / 6))
    scaled = x / torch.ldexp(torch.ones_like(amax), exp)[..., None]
    mag = scaled.abs()
    code = torch.searchsorted(_E2M1_MIDPOINTS, mag.contiguous(), right=False)
    tie = (code < 7) & (mag == _E2M1_MIDPOINTS[code.clamp(max=6)]) & (code % 2 == 1)
    code = code + tie.long()
    code = code | ((scaled < 0) | ((scaled == 0) & torch.signbit(scaled))).long() << 3
    code = code.to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    scales = (exp + E8M0_BIAS).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def mxfp4_dequantise(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[E, out, in/32, 16] blocks and [E, out, in/32] scales -> [E, out, in] fp32."""
    lut = torch.tensor(E2M1, dtype=torch.float32)
    low, high = lut[(blocks & 0x0F).long()], lut[(blocks >> 4).long()]
    vals = torch.stack([low, high], dim=-1).flatten(-2)  # element 2j = low, 2j + 1 = high
    vals = torch.ldexp(vals, (scales.to(torch.int32) - E8M0_BIAS)[..., None])
    return vals.flatten(-2)


_MXFP4_PROJS = ("gate_up_proj", "down_proj")


def _mxfp4_quantised(name: str) -> bool:
    return name.endswith(tuple(f".mlp.experts.{p}" for p in _MXFP4_PROJS))


def mxfp4_store(master: dict, gen: torch.Generator) -> dict:
    """gpt-oss's checkpoint tensors. In HF the experts are `x @ W` ([E, in, out]); on disk the
    MXFP4 blocks run along the input of each output row, so the weight is transposed first."""
    stored = {}
    for name in sorted(master):
        t = master[name]
        if _mxfp4_quantised(name):
            w = t.transpose(1, 2).contiguous()  # [E, out, in]
            e, r, c = w.shape
            gains = _log_uniform_gains((e, r, c // MXFP4_BLOCK), gen)
            blocks, scales = mxfp4_quantise(w * gains.repeat_interleave(MXFP4_BLOCK, dim=-1))
            stored[name + "_blocks"] = blocks
            stored[name + "_scales"] = scales
        else:
            stored[name] = t.to(torch.bfloat16)
    return stored


def mxfp4_reference(stored: dict) -> dict:
    out = {}
    for name, t in stored.items():
        if name.endswith("_scales"):
            continue
        if name.endswith("_blocks"):
            base = name.removesuffix("_blocks")
            out[base] = mxfp4_dequantise(t, stored[base + "_scales"]).transpose(1, 2).contiguous()
        else:
            out[name] = t.float()
    return out


def _ablate_mxfp4_one_scale(stored: dict) -> dict:
    out = dict(stored)
    for name, t in stored.items():
        if name.endswith("_scales"):
            out[name] = torch.full_like(t, int(t.flatten().median().item()))
    return out


def _ablate_mxfp4_nibble_order(stored: dict) -> dict:
    out = dict(stored)
    for name, t in stored.items():
        if name.endswith("_blocks"):
            out[name] = (t << 4) | (t >> 4)
    return out


MXFP4_ABLATIONS = {
    "one E8M0 scale per tensor (the median exponent) instead of one per 32-block": _ablate_mxfp4_one_scale,
    "nibbles swapped (element 2j read from the high nibble)": _ablate_mxfp4_nibble_order,
    "swiglu clamp": {"swiglu_limit": 1e6},
    "weights: sinks": ("sinks", -1e4),
}


# ---------------------------------------------------------------------------------------
# Cases.
# ---------------------------------------------------------------------------------------


def case_deepseek_v3_fp8():
    cfg = transformers.DeepseekV3Config(
        vocab_size=mf.VOCAB,
        hidden_size=160,
        intermediate_size=224,
        moe_intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=8,
        routed_scaling_factor=2.5,
        kv_lora_rank=64,
        q_lora_rank=96,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rope_interleave=True,
        tie_word_embeddings=False,
    )
    what = (
        "DeepSeek-V3 block FP8 (float8_e4m3fn weights, float32 weight_scale_inv per 128x128 block) on "
        "every decoder linear: MLA q_a/q_b/kv_a_proj_with_mqa/kv_b/o, the dense MLP of layer 0, the "
        "shared expert and each of 8 routed experts of layer 1; hidden 160 and intermediate 224 give "
        "partial last blocks after a full one on both axes, q_lora 96, kv_lora 64, moe_intermediate 96 "
        "single partial blocks; router, correction bias, norms, embeddings and head unquantised (bf16, "
        "correction bias f32). MLA nope 16 + rope 8, v 16, interleaved RoPE, sigmoid routing with "
        "correction bias, 8 experts in 4 groups, topk_group 2, top-2, routed scale 2.5"
    )
    qcfg = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    return cfg, transformers.DeepseekV3ForCausalLM, what, {"kind": "fp8", "scale_dtype": torch.float32, "config": qcfg}


def case_qwen3_fp8():
    cfg = transformers.Qwen3Config(
        vocab_size=mf.VOCAB,
        hidden_size=160,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
    )
    what = (
        "Qwen3-FP8 block FP8: float8_e4m3fn q/k/v/o and gate/up/down with bfloat16 weight_scale_inv per "
        "128x128 block (the scale rounded to bf16 before quantising), modules_to_not_convert [lm_head], "
        "untied; hidden 160 and intermediate 224 give partial last blocks after a full one on both axes; "
        "per-head q/k norms, GQA 4/2, head_dim 32"
    )
    qcfg = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
        "modules_to_not_convert": ["lm_head"],
    }
    return cfg, transformers.Qwen3ForCausalLM, what, {"kind": "fp8", "scale_dtype": torch.bfloat16, "config": qcfg}


def _gpt_oss_mxfp4(swiglu_limit: float):
    cfg, cls, _, _ = mf.case_gpt_oss()
    # Expert input dims (hidden 64, intermediate 96) are multiples of the 32-element MXFP4 block.
    cfg.intermediate_size = 96
    cfg.swiglu_limit = swiglu_limit
    qcfg = {"quant_method": "mxfp4", "modules_to_not_convert": GPT_OSS_NOT_CONVERTED}
    return cfg, cls, qcfg


def case_gpt_oss_mxfp4():
    cfg, cls, qcfg = _gpt_oss_mxfp4(1.5)
    what = (
        "gpt-oss MXFP4 experts: gate_up_proj_blocks [E, 2I, H/32, 16] and down_proj_blocks [E, H, I/32, 16] "
        "(uint8, two e2m1 values per byte, element 2j in the low nibble), *_scales [E, out, in/32] (uint8 "
        "E8M0, 2^(s - 127)), gate and up interleaved along 2I; everything else bf16. Sinks, q/k/v/o "
        "biases, sliding (8) / full layers, yarn x8, router bias, expert biases, SwiGLU clamp at 1.5 "
        "(fires); hidden 64, intermediate 96, top-2 of 4"
    )
    return cfg, cls, what, {"kind": "mxfp4", "config": qcfg}


def case_gpt_oss_mxfp4_gguf():
    cfg, cls, qcfg = _gpt_oss_mxfp4(7.0)
    what = (
        "gpt-oss with MXFP4 experts kept as ggml MXFP4 by llama.cpp's converter (ffn_{gate,up,down}_exps), "
        "other tensors f32; sinks, biases, sliding (8) / full layers, yarn x8, SwiGLU clamp at "
        f"llama.cpp's fixed 7 (gate_up_proj drawn x{GGUF_GATE_UP_GAIN:g} so that it fires); hidden 64, "
        "intermediate 96, top-2 of 4"
    )
    return cfg, cls, what, {"kind": "mxfp4", "config": qcfg, "gate_up_gain": GGUF_GATE_UP_GAIN}


CASES = {
    "deepseek_v3_fp8": case_deepseek_v3_fp8,
    "qwen3_fp8": case_qwen3_fp8,
    "gpt_oss_mxfp4": case_gpt_oss_mxfp4,
    "gpt_oss_mxfp4_gguf": case_gpt_oss_mxfp4_gguf,
}
GGUF_CASES = {"gpt_oss_mxfp4_gguf": "gpt_oss_mxfp4"}  # case -> directory under tests/data/gguf/converted


# ---------------------------------------------------------------------------------------
# Building a case.
# ---------------------------------------------------------------------------------------


def _load(model_dir: Path, **kwargs) -> torch.nn.Module:
    """HF's model of `model_dir` in fp32. With a quantizer, transformers 5.23 leaves the checkpoint's
    bf16 tensors in bf16 despite dtype=float32 (the dequantised weights do come out in fp32), so the
    model is upcast, which is exact."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32, **kwargs
    ).float().eval()


def _reference_model(work: Path, config: dict, tensors: dict) -> torch.nn.Module:
    """HF in fp32 loading the given (dequantised) tensors under `config` (no quantization_config)."""
    # A fresh directory per model: HF may keep the loaded file memory-mapped.
    ref = work / f"reference{len(list(work.glob('reference*')))}"
    ref.mkdir(parents=True)
    (ref / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    safetensors.torch.save_file(tensors, ref / "model.safetensors", metadata={"format": "pt"})
    return _load(ref)


def _max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, list[str]]:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if set(pa) != set(pb):
        raise RuntimeError(f"parameter names differ: {sorted(set(pa) ^ set(pb))}")
    worst, differ = 0.0, []
    for n in sorted(pa):
        d = (pa[n].detach().float() - pb[n].detach().float()).abs().max().item()
        worst = max(worst, d)
        if d > 0:
            differ.append(n)
    return worst, differ


def _fmt(x: float) -> float:
    return float(f"{x:.3e}")


def _hf_fp8_check(name: str, work: Path, out_dir: Path, config: dict, stored: dict, tokens, logits, ref_model) -> dict:
    """Loads the shipped directory with transformers' own FP8 path (CPU: dequantize=True) and
    accounts for every difference from the reference."""
    from transformers.integrations.finegrained_fp8 import _dequantize_fp8_weight

    hf_model = _load(out_dir, quantization_config=transformers.FineGrainedFP8Config(dequantize=True))
    hf_logits = mf.prefill_logits(hf_model, tokens)
    grid_rule = _reference_model(work, config, fp8_reference(stored, fp8_dequantise_hf_grid_rule))
    grid_param_diff, grid_differ = _max_param_diff(hf_model, grid_rule)
    # transformers' other FP8 dequantisation, the one FP8Linear's backward uses, takes the block size.
    helper = 0.0
    for key, q in stored.items():
        if q.dtype == torch.float8_e4m3fn:
            s = stored[key + "_scale_inv"]
            hf_w = _dequantize_fp8_weight(q, s, [FP8_BLOCK, FP8_BLOCK], torch.float32)
            helper = max(helper, (hf_w - fp8_dequantise(q, s)).abs().max().item())
    if grid_differ or helper != 0.0:
        raise RuntimeError(f"{name}: HF's FP8 loader differs from its grid rule in {grid_differ}, helper by {helper}")
    return {
        "ran": True,
        "how": "AutoModelForCausalLM.from_pretrained(dir, quantization_config=FineGrainedFP8Config(dequantize=True), "
        "dtype=float32) on CPU; HF's FP8 matmuls need CUDA and the hub's finegrained-fp8 or DeepGEMM kernels",
        "max_abs_logit_diff_vs_reference": _fmt((hf_logits - logits).abs().max().item()),
        "why_it_differs": (
            "transformers 5.23's Fp8Dequantize._dequantize_one (integrations/finegrained_fp8.py) takes the block "
            "size from the scale grid (out / grid_out, in / grid_in), not weight_block_size, so an axis of 160 with "
            "a grid of 2 is cut 80 + 80 instead of 128 + 32; it is right only where each axis is a multiple of 128 "
            "or a single block"
        ),
        "parameters_hf_dequantises_differently": _max_param_diff(hf_model, ref_model)[1],
        "max_abs_param_diff_vs_own_dequantisation_with_hf_grid_rule": _fmt(grid_param_diff),
        "max_abs_logit_diff_vs_own_dequantisation_with_hf_grid_rule": _fmt(
            (hf_logits - mf.prefill_logits(grid_rule, tokens)).abs().max().item()
        ),
        "max_abs_weight_diff_vs_hf_dequantize_fp8_weight_block_128": _fmt(helper),
    }


def _hf_mxfp4_model(name: str, out_dir: Path, tokens, ref_model) -> tuple[torch.nn.Module, dict]:
    """transformers' own MXFP4 loader (CPU: dequantize=True), which must agree exactly with ours."""
    hf_model = _load(out_dir, quantization_config=transformers.Mxfp4Config(dequantize=True))
    param_diff, differ = _max_param_diff(hf_model, ref_model)
    if param_diff != 0.0:
        raise RuntimeError(f"{name}: HF's MXFP4 dequantisation differs from ours in {differ}")
    logit_diff = (mf.prefill_logits(hf_model, tokens) - mf.prefill_logits(ref_model, tokens)).abs().max().item()
    return hf_model, {
        "ran": True,
        "how": "AutoModelForCausalLM.from_pretrained(dir, quantization_config=Mxfp4Config(dequantize=True), "
        "dtype=float32) on CPU; the fixture's logits are this model's",
        "max_abs_param_diff_vs_own_dequantisation": _fmt(param_diff),
        "max_abs_logit_diff_vs_own_dequantisation": _fmt(logit_diff),
    }


def _ablation_effects(name: str, work: Path, config: dict, stored: dict, ablations: dict, reference, tokens, logits):
    """Max |logit change| when each listed feature is switched off: a function of the stored tensors,
    a config override, or (suffix, value) filling the tensors whose names end with suffix."""
    effects = {}
    for label, change in ablations.items():
        cfg_over, tensors = config, stored
        if isinstance(change, dict):
            cfg_over = {**config, **change}
        elif isinstance(change, tuple):
            suffix, value = change
            tensors = {k: (torch.full_like(v, value) if k.endswith(suffix) else v) for k, v in stored.items()}
        else:
            tensors = change(stored)
        variant = _reference_model(work, cfg_over, reference(tensors))
        effects[label] = float(f"{(mf.prefill_logits(variant, tokens) - logits).abs().max().item():.4g}")
        if effects[label] < mf.MIN_ABLATION_EFFECT:
            raise RuntimeError(f"{name}: ablating '{label}' changes logits by only {effects[label]}")
    return effects


def _format_meta(quant: dict, stored: dict) -> tuple[str, dict]:
    if quant["kind"] == "fp8":
        scale_dtype = quant["scale_dtype"]
        edges = _fp8_edges(stored)
        return "fp8", {
            "weight": "`<module>.weight` float8_e4m3fn [out, in] (safetensors F8_E4M3)",
            "scale": f"`<module>.weight_scale_inv` {_ST_DTYPE[scale_dtype]} [ceil(out/128), ceil(in/128)]; "
            "block (i, j) covers rows 128i..min(128i+128, out) and columns 128j..min(128j+128, in); w = q * scale_inv",
            "quantiser": "scale = amax(|block|) / 448"
            + (", rounded to bf16" if scale_dtype == torch.bfloat16 else "")
            + "; q = e4m3fn(clamp(w / scale, -448, 448)), round to nearest even",
            "partial_edge_blocks": _edge_summary(edges),
            "quantised_tensors": edges,
        }
    scales = torch.cat([t.flatten() for k, t in sorted(stored.items()) if k.endswith("_scales")])
    return "mxfp4", {
        "blocks": "`mlp.experts.{gate_up,down}_proj_blocks` uint8 [E, out, in/32, 16]: 32 e2m1 codes per block, "
        "byte j = element 2j (low nibble) | element 2j+1 (high nibble) << 4",
        "scales": "`mlp.experts.{gate_up,down}_proj_scales` uint8 [E, out, in/32]: E8M0, scale = 2^(byte - 127)",
        "scale_bytes_min_max": [int(scales.min()), int(scales.max())],
        "e2m1_codes": " ".join(f"{v:g}" for v in E2M1),
        "dequantised": "W[e, o, 32g + i] = e2m1[code] * 2^(scales[e, o, g] - 127); HF's gate_up_proj [E, H, 2I] and "
        "down_proj [E, I, H] are the transposes (x @ W); gate_up's out rows interleave gate (even) and up (odd)",
        "quantiser": "scale exponent ceil(log2(amax / 6)); code = nearest e2m1, ties to the even code, sign bit "
        "set for every negative value (so -0, code 8, occurs)",
    }


_ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16"}


def build(name: str, work: Path, out_dir: Path) -> dict:
    """Builds case `name` into `out_dir` (config.json, model.safetensors, tokens, logits, meta)."""
    cfg, cls, what, quant = CASES[name]()
    cfg._attn_implementation = "eager"
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)
    model = cls(cfg).float().eval()
    mf.redraw(model, cfg.hidden_size, False, seed)
    tokens = torch.randint(0, cfg.vocab_size, (mf.SEQ_LEN,), generator=torch.Generator().manual_seed(seed + 1))

    # The fp32 master weights under their hub names, then the checkpoint's tensors.
    model.save_pretrained(work / "master", safe_serialization=True)
    master = safetensors.torch.load_file(work / "master" / "model.safetensors")
    config = json.loads((work / "master" / "config.json").read_text())
    for k in master:
        if k.endswith(".mlp.experts.gate_up_proj"):
            master[k] *= quant.get("gate_up_gain", 1.0)
    gen = torch.Generator().manual_seed(seed + 2)
    if quant["kind"] == "fp8":
        stored, reference, ablations = fp8_store(master, gen, quant["scale_dtype"]), fp8_reference, FP8_ABLATIONS
    else:
        stored, reference, ablations = mxfp4_store(master, gen), mxfp4_reference, MXFP4_ABLATIONS

    # Scale the (bf16, unquantised) head so that the logits' std is 1, then round it to bf16.
    ref_model = _reference_model(work, config, reference(stored))
    factors = mf.calibrate_logit_scale(ref_model, tokens, False)
    stored["lm_head.weight"] = ref_model.lm_head.weight.detach().to(torch.bfloat16)
    ref_model = _reference_model(work, config, reference(stored))
    logits = mf.prefill_logits(ref_model, tokens)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    shipped = {**config, "dtype": "bfloat16", "quantization_config": quant["config"]}
    (out_dir / "config.json").write_text(json.dumps(shipped, indent=2, sort_keys=True) + "\n")
    safetensors.torch.save_file(stored, out_dir / "model.safetensors", metadata={"format": "pt"})

    if quant["kind"] == "fp8":
        check = _hf_fp8_check(name, work, out_dir, config, stored, tokens, logits, ref_model)
    else:
        ref_model, check = _hf_mxfp4_model(name, out_dir, tokens, ref_model)
        logits = mf.prefill_logits(ref_model, tokens)
    decode = mf.decode_logits(ref_model, tokens)
    decode_diff = (decode - logits).abs().max().item()
    effects = _ablation_effects(name, work, config, stored, ablations, reference, tokens, logits)

    np.save(out_dir / "logits.npy", logits.numpy().astype("<f4"))
    np.save(out_dir / "decode_logits.npy", decode.numpy().astype("<f4"))
    (out_dir / "tokens.json").write_text(json.dumps(tokens.tolist()) + "\n")
    with safetensors.safe_open(out_dir / "model.safetensors", framework="np") as f:
        saved = {}
        for k in sorted(f.keys()):
            saved[k] = {"dtype": f.get_slice(k).get_dtype(), "shape": f.get_slice(k).get_shape()}

    std = logits.std().item()
    format_key, format_meta = _format_meta(quant, stored)
    meta = {
        "case": name,
        "family": cfg.model_type,
        "hf_class": cls.__name__,
        "exercises": what,
        "seq_len": mf.SEQ_LEN,
        "dims": _dims(shipped),
        "logits_std": round(std, 6),
        "logit_scale_factors": [round(c, 6) for c in factors],
        "output_scaled": "lm_head, then rounded to bf16",
        "decode_vs_prefill_max_abs_diff": _fmt(decode_diff),
        "ablation_max_abs_logit_change": effects,
        "quantization_config": quant["config"],
        "reference": (
            "HF's fp32 forward on the checkpoint's values: FP8 weights q.float() * weight_scale_inv (an fp32 multiply) "
            "per 128x128 block, the last block of an axis clipped; MXFP4 e2m1 * 2^(scale - 127); bf16 and f32 "
            "tensors upcast exactly"
        ),
        "hf_loader_check": check,
        format_key: format_meta,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "weight_rule": (
            "make_fixtures.py's redraw (projections N(0,1/fan_in), embeddings N(0,1), norm weights U(0.8,1.2), "
            "biases and correction biases N(0,0.1), sinks N(0,1)); then each quantisation block of a quantised "
            f"weight times a gain exp(U(-ln {BLOCK_GAIN:g}, ln {BLOCK_GAIN:g}))"
            + (f"; expert gate_up_proj times {quant['gate_up_gain']:g}" if "gate_up_gain" in quant else "")
            + "; then lm_head scaled so that the logits' std is ~1"
        ),
        "tensors": saved,
    }
    (out_dir / "meta.json").write_text(mf._compact_json(meta))

    size = sum(p.stat().st_size for p in out_dir.iterdir())
    if size >= mf.MAX_CASE_BYTES:
        raise RuntimeError(f"{name}: case directory is {size} bytes, limit {mf.MAX_CASE_BYTES}")
    if not 0.5 <= std <= 3.0:
        raise RuntimeError(f"{name}: logits std {std:.3f} is outside [0.5, 3]")
    return {"case": name, "bytes": size, "std": std, "decode_diff": decode_diff, "effects": effects, "check": check}


def _dims(config: dict) -> dict:
    """The model dimensions from config.json (aliases such as DeepSeek's head_dim = rope dim left out)."""
    keys = [
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "q_lora_rank", "kv_lora_rank",
        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts",
        "num_local_experts", "num_experts_per_tok", "first_k_dense_replace", "swiglu_limit",
    ]
    if "qk_rope_head_dim" in config:
        keys.remove("head_dim")
    return {k: config[k] for k in keys if config.get(k) is not None}


# ---------------------------------------------------------------------------------------
# The GGUF case.
# ---------------------------------------------------------------------------------------


def build_gguf(name: str, work: Path, tree: Path) -> dict:
    hf_dir = work / "hf"
    r = build(name, work, hf_dir)
    model_dir = work / "model"
    model_dir.mkdir()
    for f in ["config.json", "model.safetensors"]:
        shutil.copy(hf_dir / f, model_dir / f)
    mcf.write_tokenizer(model_dir, json.loads((hf_dir / "config.json").read_text())["vocab_size"])
    out = GGUF_ROOT / GGUF_CASES[name]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gguf_path = out / "model.gguf"
    run = subprocess.run(
        [sys.executable, "-c", mcf.CONVERTER_BOOT, str(tree), str(model_dir), "--outtype", "f32",
         "--outfile", str(gguf_path), "--model-name", f"tiny-{GGUF_CASES[name]}"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{name}: convert_hf_to_gguf.py failed:\n{run.stdout}\n{run.stderr}")
    for f in ["tokens.json", "logits.npy", "decode_logits.npy"]:
        shutil.copy(hf_dir / f, out / f)
    arch = mcf.read_architecture(tree, gguf_path)
    types = gguf_tensor_types(tree, gguf_path)
    mxfp4 = sorted(n for n, (t, _) in types.items() if t == "MXFP4")
    experts = sorted(n for n in types if "_exps.weight" in n)
    if arch != "gpt-oss" or not experts or mxfp4 != experts:
        raise RuntimeError(f"{name}: architecture {arch!r}, MXFP4 tensors {mxfp4}, expert tensors {experts}")
    repack_diff = gguf_mxfp4_vs_hf(gguf_path, hf_dir)
    if repack_diff != 0.0:
        raise RuntimeError(f"{name}: the GGUF's MXFP4 experts dequantise {repack_diff} away from HF's")
    size = gguf_path.stat().st_size
    if size > mcf.MAX_GGUF_BYTES:
        raise RuntimeError(f"{name}: {size} bytes of GGUF, limit {mcf.MAX_GGUF_BYTES}")
    hf_meta = json.loads((hf_dir / "meta.json").read_text())
    meta = {
        "case": GGUF_CASES[name],
        "architecture": arch,
        "hf_model": "built by make_quant_fixtures.py (case gpt_oss_mxfp4_gguf): make_fixtures.py's re-draw, "
        "MXFP4 experts in gpt-oss's shipping layout; not committed",
        "exercises": hf_meta["exercises"],
        "converter": f"convert_hf_to_gguf.py --outtype f32 of llama-cpp-python {mcf.LLAMA_CPP_PYTHON_VERSION} "
        "(vendor/llama.cpp); the MXFP4 experts are repacked, not requantised",
        "logits_from": "HF's MXFP4 loader (Mxfp4Config(dequantize=True), fp32) on the same weights",
        "hf_loader_check": hf_meta["hf_loader_check"],
        "logits_std": hf_meta["logits_std"],
        "decode_vs_prefill_max_abs_diff": hf_meta["decode_vs_prefill_max_abs_diff"],
        "ablation_max_abs_logit_change": hf_meta["ablation_max_abs_logit_change"],
        "dims": hf_meta["dims"],
        "mxfp4_tensors_ggml_type": "MXFP4 (ggml type 39): " + ", ".join(mxfp4),
        "mxfp4_gguf_vs_hf_max_abs_weight_diff": repack_diff,
        "mxfp4_gguf_vs_hf_check": (
            "each ffn_{gate,up,down}_exps dequantised by the gguf package (gguf.quants.dequantize) against HF's "
            "dequantised gate_up_proj (gate = even, up = odd output rows) and down_proj, transposed to [E, out, in]"
        ),
        "tensor_types": {n: f"{t} ({v})" for n, (t, v) in sorted(types.items())},
        "transformers_version": transformers.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {**r, "bytes": size, "gguf_types": {t for t, _ in types.values()}, "repack_diff": repack_diff}


def gguf_mxfp4_vs_hf(gguf_path: Path, hf_dir: Path) -> float:
    """Largest difference between the GGUF's expert weights, dequantised by the gguf package, and
    the dequantised HF experts they came from."""
    import gguf

    hf = mxfp4_reference(safetensors.torch.load_file(hf_dir / "model.safetensors"))
    worst = 0.0
    for t in gguf.GGUFReader(gguf_path).tensors:
        if not t.name.endswith("_exps.weight"):
            continue
        got = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        layer, kind = t.name.split(".")[1], t.name.split(".")[2]
        prefix = f"model.layers.{layer}.mlp.experts."
        if kind == "ffn_down_exps":
            want = hf[prefix + "down_proj"].transpose(1, 2)
        else:
            rows = 0 if kind == "ffn_gate_exps" else 1
            want = hf[prefix + "gate_up_proj"].transpose(1, 2)[:, rows::2]
        if tuple(got.shape) != tuple(want.shape):
            raise RuntimeError(f"{t.name}: GGUF shape {tuple(got.shape)}, HF {tuple(want.shape)}")
        worst = max(worst, (got - want).abs().max().item())
    return worst


def gguf_tensor_types(tree: Path, path: Path) -> dict:
    """Tensor name -> (ggml type name, ggml type id), read with the tree's own gguf-py."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); from gguf import GGUFReader; "
        "print(json.dumps({t.name: [t.tensor_type.name, int(t.tensor_type)] for t in GGUFReader(sys.argv[2]).tensors}))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tree / "gguf-py"), str(path)],
                         capture_output=True, text=True, check=True)
    return {k: tuple(v) for k, v in json.loads(run.stdout).items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--llama-cpp", type=Path, help="llama.cpp tree for the GGUF case (default: bench/.work's)")
    args = parser.parse_args(argv)
    if args.list:
        for c in CASES:
            where = f"tests/data/gguf/converted/{GGUF_CASES[c]}" if c in GGUF_CASES else f"tests/data/quantized/{c}"
            print(f"{c:<22}{where}")
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    names = args.cases or list(CASES)
    tree = mcf.find_llama_cpp(args.llama_cpp) if any(c in GGUF_CASES for c in names) else None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"{'case':<22}{'bytes':>9}{'logits std':>12}{'decode diff':>13}")
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"archc-quant-{name}-") as tmp:
            if name in GGUF_CASES:
                r = build_gguf(name, Path(tmp), tree)
            else:
                r = build(name, Path(tmp), FIXTURE_ROOT / name)
        print(f"{r['case']:<22}{r['bytes']:>9}{r['std']:>12.4f}{r['decode_diff']:>13.2e}")
        for label, effect in r["effects"].items():
            print(f"    ablate {label}: max |d logit| = {effect}")
        for k, v in r["check"].items():
            if k.startswith("max_abs"):
                print(f"    HF loader {k}: {v}")
        if "gguf_types" in r:
            print(f"    GGUF tensor types: {sorted(r['gguf_types'])}; MXFP4 experts vs HF: {r['repack_diff']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
