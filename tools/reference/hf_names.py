"""Write tests/data/hf_names/<case>/{config.json,hf_tensors.json}: for every checkpoint
family, a tiny HF config covering each of its layer variants, and the names and shapes
of the tensors transformers' `save_pretrained` writes for it (what the hub format holds).

The Rust test tests/tensors.rs imports each config.json, lists the canonical tensors
and checks that their HF bindings use every stored tensor exactly once with consistent
shapes.

Usage (from the repository root, with `pip install -r tools/reference/requirements.txt`):
    python tools/reference/hf_names.py

The models are tiny (hidden 16, a few layers), so they are built on the CPU and really
saved; a meta-device model cannot be saved, and the saved names (not the in-memory
ones, which fuse MoE experts) are the point.
"""

import json
import pathlib
import tempfile

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "hf_names"

# Sizes shared by every case; small, but with distinct numbers so a swapped axis shows.
BASE = dict(
    vocab_size=96,
    hidden_size=16,
    intermediate_size=40,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

CASES = {
    "gpt2": ("gpt2", dict(vocab_size=96, n_embd=16, n_layer=2, n_head=4, n_positions=64,
                          bos_token_id=1, eos_token_id=2)),
    "llama": ("llama", dict(BASE, num_hidden_layers=2)),
    "mistral": ("mistral", dict(BASE, num_hidden_layers=2, sliding_window=32)),
    "mixtral": ("mixtral", dict(BASE, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("qwen2", dict(BASE, num_hidden_layers=2, tie_word_embeddings=True)),
    "qwen3": ("qwen3", dict(BASE, num_hidden_layers=2, tie_word_embeddings=True)),
    # Layer 0 dense, layer 1 MoE.
    "qwen3_moe": ("qwen3_moe", dict(BASE, num_hidden_layers=2, num_experts=4, num_experts_per_tok=2,
                                    moe_intermediate_size=12, mlp_only_layers=[0])),
    # One local (sliding) and one global layer.
    "gemma3_text": ("gemma3_text", dict(BASE, num_hidden_layers=2, sliding_window=32,
                                        layer_types=["sliding_attention", "full_attention"])),
    "olmo2": ("olmo2", dict(BASE, num_hidden_layers=2)),
    "olmo3": ("olmo3", dict(BASE, num_hidden_layers=2, sliding_window=32,
                            layer_types=["sliding_attention", "full_attention"])),
    # Layer 1 is NoPE.
    "smollm3": ("smollm3", dict(BASE, num_hidden_layers=2, no_rope_layers=[1, 0])),
    # MLA with a query rank; layer 0 dense, layers 1-2 MoE with a shared expert.
    "deepseek_v3": ("deepseek_v3", dict(BASE, num_hidden_layers=3, num_key_value_heads=4,
                                        n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
                                        moe_intermediate_size=12, n_shared_experts=1, first_k_dense_replace=1,
                                        q_lora_rank=12, kv_lora_rank=10, qk_nope_head_dim=6,
                                        qk_rope_head_dim=4, v_head_dim=6)),
    # MLA without a query rank.
    "deepseek_v3_no_q_rank": ("deepseek_v3", dict(BASE, num_hidden_layers=2, num_key_value_heads=4,
                                                  n_routed_experts=4, num_experts_per_tok=2, n_group=2,
                                                  topk_group=1, moe_intermediate_size=12, n_shared_experts=1,
                                                  first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=10,
                                                  qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=6)),
    "gpt_oss": ("gpt_oss", dict(BASE, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                                intermediate_size=12, sliding_window=32,
                                layer_types=["sliding_attention", "full_attention"])),
    "glm4_moe": ("glm4_moe", dict(BASE, num_hidden_layers=2, n_routed_experts=4, num_experts_per_tok=2,
                                  n_group=1, topk_group=1, moe_intermediate_size=12, n_shared_experts=1,
                                  first_k_dense_replace=1, use_qk_norm=True, attention_bias=True,
                                  partial_rotary_factor=0.5)),
    "minimax_m2": ("minimax_m2", dict(BASE, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                                      intermediate_size=12, rotary_dim=4)),
    # Dense and MoE layers alternate; every 4th layer is NoPE.
    "llama4_text": ("llama4_text", dict(BASE, num_hidden_layers=4, intermediate_size=12,
                                        intermediate_size_mlp=40, num_local_experts=4, num_experts_per_tok=1,
                                        interleave_moe_layer_step=2, no_rope_layers=[1, 1, 1, 0],
                                        attention_chunk_size=32)),
    # Three Gated DeltaNet layers and one gated full-attention layer; layer 0 dense.
    "qwen3_next": ("qwen3_next", dict(BASE, num_hidden_layers=4, num_experts=4, num_experts_per_tok=2,
                                      moe_intermediate_size=12, shared_expert_intermediate_size=12,
                                      mlp_only_layers=[0], linear_num_key_heads=2, linear_num_value_heads=4,
                                      linear_key_head_dim=6, linear_value_head_dim=5, linear_conv_kernel_dim=3,
                                      layer_types=["linear_attention", "linear_attention",
                                                   "linear_attention", "full_attention"])),
    # Kimi Delta layers 1-2, an MLA layer (no query rank) 3; layer 0 dense.
    "kimi_linear": ("kimi_linear", dict(BASE, num_hidden_layers=3, num_key_value_heads=4, num_experts=4,
                                        num_local_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
                                        moe_intermediate_size=12, n_shared_experts=1, first_k_dense_replace=1,
                                        q_lora_rank=None, kv_lora_rank=10, qk_nope_head_dim=6,
                                        qk_rope_head_dim=4, v_head_dim=6,
                                        linear_attn_config={"kda_layers": [1, 2], "full_attn_layers": [3],
                                                            "num_heads": 2, "head_dim": 6,
                                                            "short_conv_kernel_size": 3})),
}


def hub_name(model_type, name):
    """Undo save_pretrained artifacts so names are what hub checkpoints hold.

    Kimi Linear: transformers renames `block_sparse_moe.` to `mlp.` on load, and reverses
    that on save for every `mlp.`, including dense layers, which the hub keeps as `mlp.`.
    """
    if model_type == "kimi_linear":
        for proj in ("gate_proj", "up_proj", "down_proj"):
            name = name.replace(f".block_sparse_moe.{proj}.", f".mlp.{proj}.")
    return name


def hub_config(model_type, config):
    """Write config keys as hub checkpoints spell them.

    Qwen3 MoE: transformers 5.23 saves the expert count as `num_local_experts` (its
    attribute map's target); hub configs say `num_experts`.
    """
    if model_type == "qwen3_moe" and "num_local_experts" in config:
        config["num_experts"] = config.pop("num_local_experts")
    return config


def main():
    torch.manual_seed(0)
    for case, (model_type, kwargs) in CASES.items():
        config = AutoConfig.for_model(model_type, **kwargs)
        model = AutoModelForCausalLM.from_config(config)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            tensors = {}
            for path in sorted(pathlib.Path(tmp).glob("*.safetensors")):
                with safe_open(str(path), "pt") as f:
                    for key in f.keys():
                        tensors[hub_name(model_type, key)] = list(f.get_slice(key).get_shape())
            saved_config = hub_config(model_type, json.loads((pathlib.Path(tmp) / "config.json").read_text()))
        out = OUT / case
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(saved_config, indent=2, sort_keys=True) + "\n")
        (out / "hf_tensors.json").write_text(json.dumps(dict(sorted(tensors.items())), indent=1) + "\n")
        print(f"{case}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
