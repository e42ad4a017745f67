#!/usr/bin/env python3
"""Generate the committed HF-transformers parity fixtures under tests/data/fixtures/.

Each case is a tiny random model built with Hugging Face's own classes from a hand-written
config. Every weight is re-drawn at a scale where each term of the forward pass matters
(see `redraw`), the model is saved with `save_pretrained` (config.json + model.safetensors),
and the script records the input tokens, HF's fp32 prefill logits, HF's token-by-token
decode logits (with HF's own KV cache) and a meta.json describing the case.

Usage:
    python tools/reference/make_fixtures.py            # regenerate every case
    python tools/reference/make_fixtures.py gpt2 llama # regenerate only the named cases
    python tools/reference/make_fixtures.py --list     # print the case names

The output is deterministic for a given torch/transformers version (fixed seeds, CPU, fp32,
eager attention).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_ROOT = REPO_ROOT / "tests" / "data" / "fixtures"

# The fixed input is longer than every sliding window (8), attention chunk (8) and
# original RoPE context (16) used below, so windowed, chunked and scaled paths all matter.
SEQ_LEN = 32
# Shared tiny dimensions; a case overrides them where its family needs something else.
VOCAB = 128
HIDDEN = 64
# Target standard deviation of the logits; the output head (or the final norm, for
# tied embeddings) is rescaled to reach it so that no fixture is degenerate.
TARGET_LOGIT_STD = 1.0
# A case directory must stay well below this many bytes.
MAX_CASE_BYTES = 1_000_000


# ---------------------------------------------------------------------------------------
# Case configurations: one function per family. Each returns (config, model class,
# description of what the case exercises, whether norms apply `1 + w`).
# ---------------------------------------------------------------------------------------


def case_gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    )
    what = (
        "learned absolute positions, pre-LayerNorm with biases, fused c_attn (Conv1D, [in, out] "
        "layout), gelu_new MLP with biases, tied embeddings"
    )
    return cfg, transformers.GPT2LMHeadModel, what, False


def case_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=False,
    )
    what = (
        "GQA (4 q heads, 2 kv heads), SwiGLU, RMSNorm, llama3 RoPE scaling with "
        "original_max_position_embeddings=16 so low, mid (smoothed) and high frequency bands all occur"
    )
    return cfg, transformers.LlamaForCausalLM, what, False


def case_mistral():
    cfg = transformers.MistralConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        sliding_window=8,
        tie_word_embeddings=False,
    )
    what = "GQA, SwiGLU, sliding window 8 on every layer (sequence is 32 tokens)"
    return cfg, transformers.MistralForCausalLM, what, False


def case_mixtral():
    cfg = transformers.MixtralConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    what = "sparse MoE on every layer: softmax router, top-2 of 4 experts, renormalised top-k weights"
    return cfg, transformers.MixtralForCausalLM, what, False


def case_qwen3():
    cfg = transformers.Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
    )
    what = (
        "per-head RMS q_norm/k_norm before RoPE, head_dim 32 != hidden/heads (16), so "
        "heads*head_dim (128) != hidden (64)"
    )
    return cfg, transformers.Qwen3ForCausalLM, what, False


def _qwen3_moe(norm_topk_prob, num_layers, decoder_sparse_step, mlp_only_layers):
    return transformers.Qwen3MoeConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=80,
        moe_intermediate_size=16,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=norm_topk_prob,
        decoder_sparse_step=decoder_sparse_step,
        mlp_only_layers=mlp_only_layers,
        tie_word_embeddings=False,
    )


def case_qwen3_moe_norm():
    cfg = _qwen3_moe(True, num_layers=3, decoder_sparse_step=1, mlp_only_layers=[0])
    what = (
        "qwen3 attention + softmax top-2 of 8 experts with norm_topk_prob=true; "
        "mlp_only_layers=[0] makes layer 0 dense, layers 1-2 sparse"
    )
    return cfg, transformers.Qwen3MoeForCausalLM, what, False


def case_qwen3_moe_nonorm():
    cfg = _qwen3_moe(False, num_layers=4, decoder_sparse_step=2, mlp_only_layers=[])
    what = (
        "softmax top-2 of 8 experts with norm_topk_prob=false (raw softmax weights); "
        "decoder_sparse_step=2 makes layers 0,2 dense and layers 1,3 sparse"
    )
    return cfg, transformers.Qwen3MoeForCausalLM, what, False


def case_gemma3_text():
    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        query_pre_attn_scalar=24,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
        # Gemma3Attention never passes attn_logit_softcapping to the attention function, so
        # HF ignores it; it stays null here so that config.json does not promise a softcap.
        attn_logit_softcapping=None,
        final_logit_softcapping=3.0,
        tie_word_embeddings=True,
    )
    what = (
        "sandwich RMSNorms with (1 + w), per-head q/k norms, embeddings scaled by sqrt(hidden), "
        "gelu_pytorch_tanh GeGLU, local (window 8, theta 1e4) and global (theta 1e6, linear x8) "
        "layers, query_pre_attn_scalar 24 != head_dim 16, final logit softcap 3, tied embeddings "
        "(no attention softcap: the HF Gemma3 class ignores attn_logit_softcapping)"
    )
    return cfg, transformers.Gemma3ForCausalLM, what, True


def case_olmo2():
    cfg = transformers.Olmo2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    what = (
        "norm after the mixer and after the MLP (post-norm inside the residual branch, no pre-norm), "
        "q_norm/k_norm over the whole q/k projection (heads*head_dim), GQA"
    )
    return cfg, transformers.Olmo2ForCausalLM, what, False


def case_smollm3():
    cfg = transformers.SmolLM3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0},
        no_rope_layers=[1, 1, 0, 1],
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    )
    what = "llama-style GQA with a NoPE layer (no_rope_layers=[1,1,0,1]: layer 2 has no RoPE), tied embeddings"
    return cfg, transformers.SmolLM3ForCausalLM, what, False


def _deepseek_v3(q_lora_rank, rope_interleave, rope_parameters):
    return transformers.DeepseekV3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=8,
        routed_scaling_factor=2.5,
        kv_lora_rank=32,
        q_lora_rank=q_lora_rank,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        # 64 = yarn factor 4 x original 16, so HF's yarn consistency check is satisfied.
        max_position_embeddings=64,
        rope_parameters=rope_parameters,
        rope_interleave=rope_interleave,
        tie_word_embeddings=False,
    )


def case_deepseek_v3_qlora():
    cfg = _deepseek_v3(
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
            "mscale_all_dim": 1.0,
        },
    )
    what = (
        "MLA with q_lora_rank 24 (q_a -> q_a_norm -> q_b), kv_lora_rank 32, nope 16 + rope 8, v 16; "
        "rope_interleave=true; yarn x4 over original 16 with mscale 0.8 != mscale_all_dim 1.0 "
        "(cos/sin factor and softmax-scale factor both differ from 1); sigmoid routing with "
        "correction bias, 8 experts in 4 groups, topk_group 2, top-2, routed_scaling_factor 2.5, "
        "1 shared expert; first_k_dense_replace=1 (layer 0 dense)"
    )
    return cfg, transformers.DeepseekV3ForCausalLM, what, False


def case_deepseek_v3_noqlora():
    cfg = _deepseek_v3(
        q_lora_rank=None,
        rope_interleave=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    what = (
        "MLA without q compression (q_lora_rank null: a single q_proj), kv_lora_rank 32, "
        "rope_interleave=false, plain RoPE; same group-limited sigmoid MoE as deepseek_v3_qlora"
    )
    return cfg, transformers.DeepseekV3ForCausalLM, what, False


def case_gpt_oss():
    cfg = transformers.GptOssConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        # 2 * 24 != hidden, so the [E, H, 2I] expert layout cannot be mistaken for [E, 2I, H].
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=128,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 8.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 16,
        },
        swiglu_limit=1.5,
        tie_word_embeddings=False,
    )
    what = (
        "attention sinks, q/k/v/o biases, alternating sliding (window 8) / full layers, yarn RoPE x8, "
        "router with bias (top-2 of 4 logits, softmax over the chosen two), experts with biases "
        "and the clamped SwiGLU (swiglu_limit lowered to 1.5 so the clamp fires, alpha 1.702, (up + 1) * glu)"
    )
    return cfg, transformers.GptOssForCausalLM, what, False


def case_glm4_moe():
    cfg = transformers.Glm4MoeConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5},
        attention_bias=True,
        use_qk_norm=True,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        routed_scaling_factor=1.5,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )
    what = (
        "partial rotary 0.5 (first half of each head rotated, half-split layout), q/k/v biases "
        "(no o bias), per-head q/k RMSNorm, sigmoid routing with correction bias, 8 experts in "
        "2 groups with topk_group 1, top-2, routed_scaling_factor 1.5, 1 shared expert, "
        "first_k_dense_replace=1"
    )
    return cfg, transformers.Glm4MoeForCausalLM, what, False


def case_minimax_m2():
    cfg = transformers.MiniMaxM2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 0.5},
        num_local_experts=8,
        num_experts_per_tok=2,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    what = (
        "q/k RMSNorm over the whole projection (heads*head_dim), partial rotary 0.5, sigmoid "
        "routing with score-correction bias for selection, top-2 of 8, renormalised weights"
    )
    return cfg, transformers.MiniMaxM2ForCausalLM, what, False


def case_llama4():
    cfg = transformers.Llama4TextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=24,
        intermediate_size_mlp=80,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        num_local_experts=4,
        num_experts_per_tok=1,
        interleave_moe_layer_step=2,
        use_qk_norm=True,
        no_rope_layers=[1, 1, 1, 0],
        attention_chunk_size=8,
        attn_temperature_tuning=True,
        floor_scale=4,
        attn_scale=0.1,
        tie_word_embeddings=False,
    )
    what = (
        "chunked attention (chunk 8) on RoPE layers 0-2, global NoPE layer 3 with attention "
        "temperature tuning (floor_scale 4, attn_scale 0.1), L2 q/k norm on RoPE layers only, "
        "interleaved RoPE pairs (complex multiply), MoE on layers 1 and 3 (interleave step 2): "
        "top-1 of 4 experts with sigmoid gate applied to the expert input, plus a shared expert; "
        "dense MLP (intermediate_size_mlp 80) on layers 0 and 2"
    )
    return cfg, transformers.Llama4ForCausalLM, what, False


def case_qwen3_next():
    cfg = transformers.Qwen3NextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        linear_conv_kernel_dim=4,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=12,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=24,
        decoder_sparse_step=2,
        mlp_only_layers=[],
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )
    what = (
        "hybrid Gated DeltaNet / gated softmax attention: layers 0, 1, 3 linear attention (2 key "
        "heads serving 4 value heads, key dim 16 != value dim 12, short conv 4, decay gate, L2 "
        "q/k norm, gated RMSNorm with plain weight), layer 2 full attention with sigmoid output "
        "gate, per-head (1 + w) q/k norms and RoPE on half of each head; MoE on layers 1 and 3 "
        "(top-2 of 4 plus a sigmoid-gated shared expert), dense MLP on layers 0 and 2"
    )
    return cfg, transformers.Qwen3NextForCausalLM, what, True


def case_kimi_linear():
    cfg = transformers.KimiLinearConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        n_shared_experts=1,
        routed_scaling_factor=2.446,
        num_local_experts=4,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        max_position_embeddings=128,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
        linear_num_heads=4,
        linear_head_dim=12,
        linear_conv_kernel_dim=4,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    what = (
        "hybrid Kimi Delta Attention / NoPE MLA: layers 0, 1, 3 KDA (4 heads of 12, separate q/k/v "
        "short convs of 4, per-channel decay from the low-rank forget gate f_a/f_b with A_log per "
        "head and dt_bias per channel, L2 q/k norm, sigmoid-gated RMSNorm from g_a/g_b), layer 2 "
        "MLA without RoPE (no query LoRA); dense MLP on layer 0, then sigmoid-scored top-2 of 4 "
        "experts with correction bias, renormalised and scaled by 2.446, plus a shared expert"
    )
    return cfg, transformers.KimiLinearForCausalLM, what, False


def case_lfm2():
    cfg = transformers.Lfm2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        # The MLP width is derived: int(2 * 90 / 3) = 60, int(1.25 * 60) = 75, rounded up to a
        # multiple of 16: 80. Neither 90 (the raw value), 64 (without the multiplier) nor 75
        # (without the rounding) fits the saved tensors.
        intermediate_size=90,
        block_auto_adjust_ff_dim=True,
        block_ffn_dim_multiplier=1.25,
        block_multiple_of=16,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        layer_types=["conv", "conv", "full_attention", "conv", "full_attention"],
        conv_L_cache=3,
        conv_bias=False,
        tie_word_embeddings=True,
    )
    what = (
        "hybrid gated short convolution / GQA attention: layers 0, 1, 3 are LIV convolutions "
        "(in_proj to B, C, x; B * x through a causal depthwise conv of 3 taps; times C; out_proj), "
        "layers 2 and 4 GQA 4/2 with per-head q/k RMSNorm before RoPE (theta 1e6); pre-norms "
        "operator_norm and ffn_norm, SwiGLU w1/w3/w2 of width 80 derived from intermediate_size "
        "90 by block_auto_adjust_ff_dim (2/3, x1.25, rounded up to a multiple of 16), final "
        "embedding_norm, tied embeddings"
    )
    return cfg, transformers.Lfm2ForCausalLM, what, False


CASES = {
    "gpt2": case_gpt2,
    "llama": case_llama,
    "mistral": case_mistral,
    "mixtral": case_mixtral,
    "qwen3": case_qwen3,
    "qwen3_moe_norm": case_qwen3_moe_norm,
    "qwen3_moe_nonorm": case_qwen3_moe_nonorm,
    "gemma3_text": case_gemma3_text,
    "olmo2": case_olmo2,
    "smollm3": case_smollm3,
    "deepseek_v3_qlora": case_deepseek_v3_qlora,
    "deepseek_v3_noqlora": case_deepseek_v3_noqlora,
    "gpt_oss": case_gpt_oss,
    "glm4_moe": case_glm4_moe,
    "minimax_m2": case_minimax_m2,
    "llama4": case_llama4,
    "qwen3_next": case_qwen3_next,
    "kimi_linear": case_kimi_linear,
    "lfm2": case_lfm2,
}


# ---------------------------------------------------------------------------------------
# Ablations: each distinctive feature of a case is switched off one at a time (a config
# override, or a weight edit named with a leading "weights:"), the same weights are
# reloaded, and the maximum logit change is recorded. A feature whose ablation barely
# moves the logits would not be tested by the fixture, so the script fails on it.
# ---------------------------------------------------------------------------------------

MIN_ABLATION_EFFECT = 1e-2


def _identity_conv(model: nn.Module) -> None:
    """Turn every short causal convolution into the identity (only the current token's tap)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv1d):
                m.weight.zero_()
                m.weight[..., -1] = 1.0


def _lfm2_swap_in_proj_chunks(a: int, b: int):
    """Swap two of the three row blocks (B, C, x) of every LFM2 `conv.in_proj`."""

    def change(model: nn.Module) -> None:
        with torch.no_grad():
            for m in model.modules():
                if type(m).__name__ == "Lfm2ShortConv":
                    w = m.in_proj.weight
                    h = w.shape[0] // 3
                    rows_a = w[a * h : (a + 1) * h].clone()
                    w[a * h : (a + 1) * h] = w[b * h : (b + 1) * h]
                    w[b * h : (b + 1) * h] = rows_a

    return change


def _lfm2_no_qk_norm(model: nn.Module) -> None:
    """Drop LFM2's per-head q/k RMSNorm (the modules become the identity)."""
    for m in model.modules():
        if type(m).__name__ == "Lfm2Attention":
            m.q_layernorm = nn.Identity()
            m.k_layernorm = nn.Identity()


_DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 10000.0}

ABLATIONS = {
    "llama": {"llama3 rope scaling": {"rope_parameters": _DEFAULT_ROPE}},
    "mistral": {"sliding window": {"sliding_window": None}},
    "mixtral": {"top-2 routing": {"num_experts_per_tok": 1}},
    "qwen3_moe_norm": {
        "norm_topk_prob": {"norm_topk_prob": False},
    },
    "qwen3_moe_nonorm": {"norm_topk_prob=false": {"norm_topk_prob": True}},
    "gemma3_text": {
        "sliding window": {"sliding_window": 4 * SEQ_LEN},
        "final softcap": {"final_logit_softcapping": None},
        "query_pre_attn_scalar": {"query_pre_attn_scalar": 16},
        "global linear rope scaling": {
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            }
        },
    },
    "smollm3": {"NoPE layer": {"no_rope_layers": [1, 1, 1, 1]}},
    "deepseek_v3_qlora": {
        "rope_interleave": {"rope_interleave": False},
        "yarn mscale != mscale_all_dim": {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            }
        },
        "group-limited routing": {"topk_group": 4},
        "routed_scaling_factor": {"routed_scaling_factor": 1.0},
        "weights: correction bias": "e_score_correction_bias",
    },
    "deepseek_v3_noqlora": {
        "group-limited routing": {"topk_group": 4},
        "routed_scaling_factor": {"routed_scaling_factor": 1.0},
        "weights: correction bias": "e_score_correction_bias",
    },
    "gpt_oss": {
        "sliding window": {"sliding_window": 4 * SEQ_LEN},
        "swiglu clamp": {"swiglu_limit": 1e6},
        "weights: sinks": "sinks",
        "weights: expert biases": "proj_bias",
    },
    "glm4_moe": {
        "partial rotary": {
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 1.0}
        },
        "group-limited routing": {"topk_group": 2},
        "weights: correction bias": "e_score_correction_bias",
    },
    "minimax_m2": {
        "partial rotary": {
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 1.0}
        },
        "weights: correction bias": "e_score_correction_bias",
    },
    "llama4": {
        "chunked attention": {"attention_chunk_size": 4 * SEQ_LEN},
        "temperature tuning": {"attn_temperature_tuning": False},
        "L2 qk norm": {"use_qk_norm": False},
    },
    "qwen3_next": {
        "weights: delta-rule decay (A_log)": "A_log",
        "weights: dt_bias": "dt_bias",
        "short convolution (identity kernel)": _identity_conv,
    },
    "kimi_linear": {
        "weights: delta-rule decay (A_log)": "A_log",
        "weights: per-channel decay (f_b)": "f_b_proj.weight",
        "short convolution (identity kernel)": _identity_conv,
        "weights: correction bias": "e_score_correction_bias",
    },
    "lfm2": {
        "short convolution (identity kernel)": _identity_conv,
        # B * x is symmetric, so which chunk gates after the conv (C, the middle one) is what
        # an implementation can get wrong; each swap puts another chunk there.
        "in_proj B/C swapped (B gates after the conv)": _lfm2_swap_in_proj_chunks(0, 1),
        "in_proj C/x swapped (x gates after the conv)": _lfm2_swap_in_proj_chunks(1, 2),
        "q/k layernorm removed": _lfm2_no_qk_norm,
    },
}

# The value a "weights:" ablation writes; zero unless listed. Sinks of -1e4 drop out of the
# softmax; an A_log of -30 makes exp(A_log) vanish, so the delta rule stops decaying.
_ABLATION_FILL = {"sinks": -1e4, "A_log": -30.0}


def ablation_effects(name: str, model: nn.Module, cls, tokens: torch.Tensor, logits: torch.Tensor) -> dict:
    """Max |logit change| when each listed feature of the case is switched off."""
    effects = {}
    state = {k: v for k, v in model.state_dict().items() if "rotary_emb" not in k}
    for label, change in ABLATIONS.get(name, {}).items():
        if isinstance(change, dict):
            cfg = type(model.config).from_dict({**model.config.to_dict(), **change})
        else:
            cfg = model.config
        cfg._attn_implementation = "eager"
        variant = cls(cfg).float().eval()
        variant.load_state_dict(state, strict=False)
        if callable(change):
            change(variant)
        elif isinstance(change, str):
            with torch.no_grad():
                for pname, t in list(variant.named_parameters()) + list(variant.named_buffers()):
                    if pname.endswith(change):
                        t.fill_(_ABLATION_FILL.get(change, 0.0))
        effects[label] = float(f"{(prefill_logits(variant, tokens) - logits).abs().max().item():.4g}")
        if effects[label] < MIN_ABLATION_EFFECT:
            raise RuntimeError(f"{name}: switching off '{label}' changes logits by only {effects[label]}")
    return effects


# ---------------------------------------------------------------------------------------
# The shared weight re-draw.
# ---------------------------------------------------------------------------------------


def _owner(model: nn.Module, name: str) -> nn.Module:
    """Return the module that owns the parameter or buffer called `name`."""
    prefix = name.rsplit(".", 1)[0] if "." in name else ""
    return model.get_submodule(prefix)


def _expert_fan_in(name: str, shape: torch.Size, hidden: int) -> int:
    """Fan-in of a stacked 3-D expert tensor [E, a, b], whatever layout the class uses.

    Gate/up projections read the hidden state; the down projection reads the expert's
    intermediate activation, which is the non-hidden dimension. Cases keep the expert
    intermediate size different from the hidden size so this is unambiguous.
    """
    dims = list(shape[1:])
    if hidden not in dims:
        raise ValueError(f"{name}: expert tensor {tuple(shape)} has no hidden ({hidden}) dimension")
    if "down" in name:
        others = [d for d in dims if d != hidden]
        if len(others) != 1:
            raise ValueError(f"{name}: cannot tell the intermediate dimension of {tuple(shape)}")
        return others[0]
    return hidden


def redraw(model: nn.Module, hidden: int, one_plus_norm: bool, seed: int) -> list[str]:
    """Re-draw every parameter (and the routing correction-bias buffers) in place.

    The rule: projections ~ N(0, 1/fan_in); embeddings ~ N(0, 1); norm weights uniform in
    1 +- 0.2 (0 +- 0.2 where the norm applies `1 + w`); every bias ~ N(0, 0.1^2);
    attention sinks ~ N(0, 1); router score-correction biases ~ N(0, 0.1^2). It returns
    one line per tensor describing the rule applied, and raises on any tensor it does
    not recognise so that nothing is silently left at HF's init.
    """
    gen = torch.Generator().manual_seed(seed)
    log = []

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std)

    def uniform(t: torch.Tensor, centre: float, half: float) -> None:
        t.copy_(centre + (torch.rand(t.shape, generator=gen, dtype=torch.float32) * 2 - 1) * half)

    tensors = list(model.named_parameters())
    tensors += [(n, b) for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
    with torch.no_grad():
        for name, t in tensors:
            owner = _owner(model, name)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "sinks":
                normal(t, 1.0)
                rule = "sinks N(0,1)"
            elif leaf == "e_score_correction_bias":
                normal(t, 0.1)
                rule = "correction bias N(0,0.1)"
            elif leaf == "A_log":
                # Decay rates exp(A_log) in [0.02, 2]: from long memory to a few tokens.
                t.copy_(torch.log(0.02 + torch.rand(t.shape, generator=gen, dtype=torch.float32) * 1.98))
                rule = "A_log log(U(0.02,2))"
            elif isinstance(owner, nn.Conv1d):
                fan_in = t.shape[-1] * t.shape[1]
                normal(t, 1.0 / math.sqrt(fan_in))
                rule = f"depthwise conv N(0,1/{fan_in})"
            elif type(owner).__name__.endswith("RMSNormGated"):
                # The gated norm applies its weight as is, even in a model whose norms use 1 + w.
                uniform(t, 1.0, 0.2)
                rule = "gated norm weight U(0.8,1.2)"
            elif isinstance(owner, nn.Embedding):
                normal(t, 1.0)
                rule = "embedding N(0,1)"
            elif "norm" in type(owner).__name__.lower() or "layernorm" in name or "ln_" in name:
                if leaf == "bias":
                    normal(t, 0.1)
                    rule = "norm bias N(0,0.1)"
                elif one_plus_norm:
                    uniform(t, 0.0, 0.2)
                    rule = "norm weight (1+w) U(-0.2,0.2)"
                else:
                    uniform(t, 1.0, 0.2)
                    rule = "norm weight U(0.8,1.2)"
            elif leaf == "bias" or leaf.endswith("_bias"):
                normal(t, 0.1)
                rule = "bias N(0,0.1)"
            elif t.dim() == 2:
                # torch Linear and router parameters are [out, in]; GPT-2's Conv1D is [in, out].
                fan_in = t.shape[0] if isinstance(owner, Conv1D) else t.shape[1]
                normal(t, 1.0 / math.sqrt(fan_in))
                rule = f"projection N(0,1/{fan_in})"
            elif t.dim() == 3:
                fan_in = _expert_fan_in(name, t.shape, hidden)
                normal(t, 1.0 / math.sqrt(fan_in))
                rule = f"expert projection N(0,1/{fan_in})"
            else:
                raise ValueError(f"redraw: no rule for {name} {tuple(t.shape)} in {type(owner).__name__}")
            log.append(f"{name} {tuple(t.shape)}: {rule}")
    return log


# ---------------------------------------------------------------------------------------
# Logit scale calibration, prefill and decode.
# ---------------------------------------------------------------------------------------


def prefill_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens[None, :], use_cache=False).logits[0].float()


def decode_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Feed the sequence one token at a time through HF's own KV cache and keep each step's logits."""
    rows = []
    past = None
    with torch.no_grad():
        for i in range(tokens.shape[0]):
            out = model(input_ids=tokens[None, i : i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


def _final_norm(model: nn.Module) -> nn.Module:
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    # LFM2 calls its final norm (after the last layer) `embedding_norm`.
    for attr in ("norm", "ln_f", "embedding_norm"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise ValueError(f"no final norm found on {type(base).__name__}")


def calibrate_logit_scale(model: nn.Module, tokens: torch.Tensor, one_plus_norm: bool) -> list[float]:
    """Rescale the output head (or, with tied embeddings, the final norm gain) so logits std ~ 1.

    Logits are linear in the head and in the final norm gain unless a final softcap is
    present, so a few fixed-point iterations settle even the softcapped case.
    """
    head = model.get_output_embeddings()
    tied = head.weight is model.get_input_embeddings().weight
    factors = []
    with torch.no_grad():
        for _ in range(4):
            std = prefill_logits(model, tokens).std().item()
            c = TARGET_LOGIT_STD / std
            if abs(c - 1.0) < 1e-3:
                break
            factors.append(c)
            if not tied:
                head.weight.mul_(c)
            else:
                norm = _final_norm(model)
                if one_plus_norm:
                    norm.weight.copy_((1.0 + norm.weight) * c - 1.0)
                else:
                    norm.weight.mul_(c)
                if getattr(norm, "bias", None) is not None:
                    norm.bias.mul_(c)
    return factors


# ---------------------------------------------------------------------------------------
# One case end to end.
# ---------------------------------------------------------------------------------------


def _one_line(match: re.Match) -> str:
    return "[" + ", ".join(x.strip() for x in match.group(1).split(",")) + "]"


def _compact_json(value) -> str:
    """Indented JSON with every list of integers (tensor shapes) kept on one line."""
    text = json.dumps(value, indent=2)
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", _one_line, text)
    return text + "\n"


def _expert_layout_note(names: list[str]) -> str:
    if any(".experts.0." in n for n in names):
        return "per-expert 2-D tensors (experts.{e}.<proj>.weight), as in the hub checkpoints"
    if any(".experts." in n for n in names):
        return "fused 3-D expert tensors (one tensor per projection with a leading expert dimension)"
    return "no experts"


def _kimi_hub_mlp_names(case_dir: Path, model: nn.Module) -> None:
    """Give Kimi Linear's dense MLP layers the hub checkpoints' names.

    transformers 5.23 loads `block_sparse_moe.` as `mlp.` and, saving, reverses that on every
    `mlp.`, so a dense layer's MLP lands under `block_sparse_moe.` too; the hub checkpoints
    (and HF's loader) name it `mlp.gate_proj` etc. The fixture keeps the hub's names.
    """
    import safetensors.torch

    path = case_dir / "model.safetensors"
    with safetensors.safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dense = re.compile(r"(model\.layers\.\d+)\.block_sparse_moe\.((?:gate|up|down)_proj\.weight)$")
    renamed = {dense.sub(r"\1.mlp.\2", k): v for k, v in tensors.items()}
    safetensors.torch.save_file(renamed, path, metadata=metadata)


# Fix-ups applied to a case's saved files before they are reloaded and checked.
POST_SAVE = {"kimi_linear": _kimi_hub_mlp_names}


def _lfm2_meta(model: nn.Module) -> dict:
    """The MLP width HF derives from `intermediate_size`, read off the built model, and its steps."""
    cfg = model.config
    widths = {layer.feed_forward.w1.out_features for layer in model.model.layers}
    if len(widths) != 1:
        raise RuntimeError(f"lfm2: MLP widths differ across layers: {sorted(widths)}")
    width = widths.pop()
    two_thirds = int(2 * cfg.intermediate_size / 3)
    scaled = int(cfg.block_ffn_dim_multiplier * two_thirds)
    rounded = cfg.block_multiple_of * ((scaled + cfg.block_multiple_of - 1) // cfg.block_multiple_of)
    if rounded != width:
        raise RuntimeError(f"lfm2: HF's MLP width {width} is not the documented rule's {rounded}")
    return {
        "mlp_width": width,
        "mlp_width_rule": (
            f"int(2 * intermediate_size {cfg.intermediate_size} / 3) = {two_thirds}; "
            f"int(block_ffn_dim_multiplier {cfg.block_ffn_dim_multiplier} * {two_thirds}) = {scaled}; "
            f"rounded up to a multiple of block_multiple_of {cfg.block_multiple_of}: {width}"
        ),
    }


# Case-specific entries added to meta.json.
EXTRA_META = {"lfm2": _lfm2_meta}


def build_case(name: str, out_root: Path, verbose: bool = False) -> dict:
    cfg, cls, what, one_plus_norm = CASES[name]()
    cfg._attn_implementation = "eager"
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)
    model = cls(cfg).float().eval()
    model.config._attn_implementation = "eager"

    hidden = cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd
    for line in redraw(model, hidden, one_plus_norm, seed):
        if verbose:
            print(f"  {line}")

    tok_gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, cfg.vocab_size, (SEQ_LEN,), generator=tok_gen)

    factors = calibrate_logit_scale(model, tokens, one_plus_norm)
    logits = prefill_logits(model, tokens)
    decode = decode_logits(model, tokens)
    decode_diff = (decode - logits).abs().max().item()
    effects = ablation_effects(name, model, cls, tokens, logits)

    case_dir = out_root / name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    model.save_pretrained(case_dir, safe_serialization=True)
    if name in POST_SAVE:
        POST_SAVE[name](case_dir, model)

    # Reload from disk through the Auto classes: the committed files alone must reproduce
    # the logits, which also checks HF's save-time weight renaming round-trips.
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        case_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()
    reload_diff = (prefill_logits(reloaded, tokens) - logits).abs().max().item()
    if reload_diff > 1e-5:
        raise RuntimeError(f"{name}: reloaded model differs from the in-memory one by {reload_diff}")

    with safetensors.safe_open(case_dir / "model.safetensors", framework="np") as f:
        saved = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}

    np.save(case_dir / "logits.npy", logits.numpy().astype("<f4"))
    np.save(case_dir / "decode_logits.npy", decode.numpy().astype("<f4"))
    (case_dir / "tokens.json").write_text(json.dumps(tokens.tolist()) + "\n")

    std = logits.std().item()
    meta = {
        "case": name,
        "family": cfg.model_type,
        "hf_class": cls.__name__,
        "exercises": what,
        "seq_len": SEQ_LEN,
        "logits_std": round(std, 6),
        "logit_scale_factors": [round(c, 6) for c in factors],
        "output_scaled": "final norm gain" if model.config.tie_word_embeddings else "lm_head",
        "decode_vs_prefill_max_abs_diff": float(f"{decode_diff:.3e}"),
        "ablation_max_abs_logit_change": effects,
        "expert_layout": _expert_layout_note(list(saved)),
        **(EXTRA_META[name](model) if name in EXTRA_META else {}),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "weight_rule": (
            "projections N(0,1/fan_in); embeddings N(0,1); norm weights U(1-0.2,1+0.2) "
            "(U(-0.2,0.2) for 1+w norms); biases, correction biases N(0,0.1); sinks N(0,1); "
            "then the output head (or final norm gain when tied) scaled so logits std ~ 1"
        ),
        "tensors": saved,
    }
    (case_dir / "meta.json").write_text(_compact_json(meta))

    size = sum(p.stat().st_size for p in case_dir.iterdir())
    if size >= MAX_CASE_BYTES:
        raise RuntimeError(f"{name}: case directory is {size} bytes, limit {MAX_CASE_BYTES}")
    if not 0.5 <= std <= 3.0:
        raise RuntimeError(f"{name}: logits std {std:.3f} is outside [0.5, 3]")
    return {"case": name, "bytes": size, "std": std, "decode_diff": decode_diff, "effects": effects}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--verbose", action="store_true", help="print the draw rule used for every tensor")
    parser.add_argument("--out", type=Path, default=FIXTURE_ROOT, help="output root (default: tests/data/fixtures)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"{'case':<22}{'bytes':>9}{'logits std':>12}{'decode diff':>13}")
    for name in args.cases or CASES:
        r = build_case(name, args.out, args.verbose)
        print(f"{r['case']:<22}{r['bytes']:>9}{r['std']:>12.4f}{r['decode_diff']:>13.2e}")
        for label, effect in r["effects"].items():
            print(f"    ablate {label}: max |d logit| = {effect}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
