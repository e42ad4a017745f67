"""Record HF transformers' parameter counts for every real-model config fixture.

For each `tests/data/configs/<name>/config.json` this builds the model on the meta device
(no memory, no weights), counts its parameters (tied tensors once) and the parameters a
token activates, and writes `hf_counts.json` beside the config. The Rust test suite
compares archc's own counts against these numbers, so transformers is the oracle.

Active parameters are measured from the modules, not from formulas:
    active = total - (experts - top_k) * (parameters of one routed expert) * (MoE layers)
where one routed expert's parameters are read off the stacked expert tensors (or the
first expert of a module list), biases included.

Usage (from the repository root, after `pip install -r tools/reference/requirements.txt`):
    python tools/reference/hf_counts.py [NAME ...]
"""

import json
import pathlib
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "data" / "configs"

# Checkpoints whose `model_type` names a remote-code class that transformers implements
# under another name; the architecture is identical.
MODEL_TYPE_ALIASES = {"kimi_k2": "deepseek_v3"}

# Keys that do not describe the architecture and would make transformers try to set up
# quantized layers.
DROP_KEYS = ("quantization_config", "auto_map")


def text_config(raw: dict) -> dict:
    """The language-model part of a config (multimodal configs nest it in `text_config`)."""
    if "text_config" in raw:
        return dict(raw["text_config"])
    return dict(raw)


def build_config(raw: dict):
    cfg = text_config(raw)
    for key in DROP_KEYS:
        cfg.pop(key, None)
    model_type = cfg.pop("model_type")
    model_type = MODEL_TYPE_ALIASES.get(model_type, model_type)
    # A multimodal text_config may omit the top-level tie flag it inherits.
    if "text_config" in raw and "tie_word_embeddings" in raw and "tie_word_embeddings" not in cfg:
        cfg["tie_word_embeddings"] = raw["tie_word_embeddings"]
    return AutoConfig.for_model(model_type, **cfg)


def build_model(config):
    model_type = config.model_type
    with torch.device("meta"):
        if model_type == "gemma3_text":
            return transformers.Gemma3ForCausalLM(config)
        if model_type == "llama4_text":
            return transformers.Llama4ForCausalLM(config)
        return AutoModelForCausalLM.from_config(config)


def top_k(config) -> int:
    for key in ("num_experts_per_tok", "experts_per_token", "moe_topk"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise SystemExit(f"{config.model_type}: no top-k key found")


def routed_experts(model):
    """Yield (name, module) for every routed-experts container (not shared experts)."""
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last == "experts":
            yield name, module


def one_expert_params(name: str, module) -> tuple[int, int]:
    """(number of experts, parameters of one expert) of an experts container."""
    if isinstance(module, torch.nn.ModuleList):
        sizes = {sum(p.numel() for p in expert.parameters()) for expert in module}
        if len(sizes) != 1:
            raise SystemExit(f"{name}: experts of different sizes {sizes}")
        return len(module), sizes.pop()
    params = list(module.parameters(recurse=True))
    counts = {p.shape[0] for p in params}
    if len(counts) != 1:
        raise SystemExit(f"{name}: stacked expert tensors disagree on the expert count {counts}")
    experts = counts.pop()
    total = sum(p.numel() for p in params)
    if total % experts:
        raise SystemExit(f"{name}: {total} parameters do not split into {experts} experts")
    return experts, total // experts


def count(path: pathlib.Path) -> dict:
    raw = json.loads(path.read_text())
    config = build_config(raw)
    model = build_model(config)
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    moe_layers = 0
    for name, module in routed_experts(model):
        experts, per_expert = one_expert_params(name, module)
        inactive += (experts - top_k(config)) * per_expert
        moe_layers += 1
    buffers = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_buffers()})
    return {
        "params_total": total,
        "params_active": total - inactive,
        "transformers": transformers.__version__,
    }, moe_layers, buffers


def main() -> None:
    names = sys.argv[1:] or sorted(p.name for p in CONFIGS.iterdir() if (p / "config.json").exists())
    for name in names:
        counts, moe_layers, buffers = count(CONFIGS / name / "config.json")
        (CONFIGS / name / "hf_counts.json").write_text(json.dumps(counts, indent=2) + "\n")
        print(
            f"{name:28} total {counts['params_total']:>17,} active {counts['params_active']:>17,}"
            f" moe_layers {moe_layers:3} buffers {buffers}"
        )


if __name__ == "__main__":
    main()
