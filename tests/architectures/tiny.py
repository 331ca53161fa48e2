"""Tiny random configs of real transformers architectures (2 layers, hidden 32, vocabulary 128), with
sliding windows shorter than the test sequences wherever an architecture has them."""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB, WINDOW = 128, 6
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)
ARCHITECTURES = {
    "llama": dict(),
    "qwen2": dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": dict(head_dim=8),
    "mistral": dict(sliding_window=WINDOW),
    "gemma2": dict(
        sliding_window=WINDOW,
        final_logit_softcapping=3.0,
        attn_logit_softcapping=5.0,
        head_dim=8,
        query_pre_attn_scalar=8,
    ),
    "gemma3_text": dict(
        sliding_window=WINDOW,
        final_logit_softcapping=3.0,
        head_dim=8,
        query_pre_attn_scalar=8,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "phi3": dict(sliding_window=WINDOW, pad_token_id=0),
    "gpt_neox": dict(rotary_pct=0.5, num_key_value_heads=None),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=256),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32, num_key_value_heads=None),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW),
    "qwen2_moe": dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
    ),
    "cohere": dict(logit_scale=0.5),
    "granite": dict(logits_scaling=4.0, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.25),
    "bloom": dict(n_layer=2, n_head=4, num_key_value_heads=None),
    "gpt_oss": dict(
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=WINDOW,
        head_dim=8,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "lfm2": dict(layer_types=["conv", "full_attention"], block_ff_dim=64, conv_L_cache=3, full_attn_idxs=[1]),
}


def tiny_config(model_type: str, attention: str = "sdpa"):
    kwargs = {**COMMON, **ARCHITECTURES[model_type]}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    config = AutoConfig.for_model(model_type, **kwargs)
    config._attn_implementation = attention
    return config


def tiny_model(model_type: str, attention: str = "sdpa", seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, attention), attn_implementation=attention)
    for p in model.parameters():  # random weights large enough that a wrong mask or transform shows
        p.data.normal_(0, 0.2 if p.dim() > 1 else 0.05)
    return model.to(dtype).eval()
