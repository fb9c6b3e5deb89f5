"""An independent, unbatched, cache-free Llama forward pass used as the tests' reference.

Written from the architecture's equations, not from blocks.inference.model: RoPE rotates each
pair (i, i + half) of a head by angle position * theta^(-2i/head_dim); attention is a plain
causal softmax with key/value heads repeated for their query groups.
"""

from __future__ import annotations

import math

import torch

from blocks.inference.model import LlamaForCausalLM, ModelConfig


def reference_logits(model, token_ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    cfg = model.config
    p = {k: v.double() for k, v in model.state_dict().items()}
    if "lm_head.weight" not in p or cfg.tie_word_embeddings:
        p["lm_head.weight"] = p["model.embed_tokens.weight"]
    n = len(token_ids)
    x = p["model.embed_tokens.weight"][torch.tensor(token_ids)]

    def norm(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return h / torch.sqrt((h * h).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    half = cfg.head_dim // 2
    freqs = cfg.rope_theta ** (-torch.arange(half, dtype=torch.float64) * 2 / cfg.head_dim)
    if cfg.rope_freq_factors:
        freqs = freqs / torch.tensor(cfg.rope_freq_factors, dtype=torch.float64)
    freqs = freqs / cfg.rope_linear_factor
    angle = torch.arange(n, dtype=torch.float64)[:, None] * freqs[None, :]  # (n, half)
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]

    def rope(t: torch.Tensor) -> torch.Tensor:  # (n, heads, dim)
        a, b = t[..., :half], t[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    group = cfg.num_heads // cfg.num_kv_heads
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}."
        h = norm(x, p[pre + "input_layernorm.weight"])
        q = rope((h @ p[pre + "self_attn.q_proj.weight"].T).view(n, cfg.num_heads, cfg.head_dim))
        k = rope((h @ p[pre + "self_attn.k_proj.weight"].T).view(n, cfg.num_kv_heads, cfg.head_dim))
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(n, cfg.num_kv_heads, cfg.head_dim)
        heads = []
        for head in range(cfg.num_heads):
            kv = head // group
            scores = (q[:, head] @ k[:, kv].T) / cfg.head_dim**0.5
            scores = scores.masked_fill(~causal, float("-inf"))
            heads.append(torch.softmax(scores, dim=-1) @ v[:, kv])
        x = x + torch.cat(heads, dim=-1) @ p[pre + "self_attn.o_proj.weight"].T
        h = norm(x, p[pre + "post_attention_layernorm.weight"])
        gate = h @ p[pre + "mlp.gate_proj.weight"].T
        up = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ p[pre + "mlp.down_proj.weight"].T
    x = norm(x, p["model.norm.weight"])
    return x @ p["lm_head.weight"].T


def reference_greedy(model, prompt: list[int], max_tokens: int) -> tuple[list[int], float]:  # type: ignore[no-untyped-def]
    """Greedy tokens, and the smallest top-1/top-2 logit gap seen (to spot near-ties)."""
    tokens = list(prompt)
    out: list[int] = []
    min_gap = float("inf")
    for _ in range(max_tokens):
        logits = reference_logits(model, tokens)[-1]
        top = torch.topk(logits, 2).values
        min_gap = min(min_gap, float(top[0] - top[1]))
        token = int(logits.argmax())
        out.append(token)
        tokens.append(token)
    return out, min_gap


def make_tiny_model(
    seed: int = 0, dtype: torch.dtype = torch.float64, vocab: int = 64
) -> LlamaForCausalLM:
    """Random weights scaled so logits are spread out (near-ties are rare)."""
    torch.manual_seed(seed)
    config = ModelConfig.tiny(vocab_size=vocab)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.8, 1.2)
            else:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))
        model.model.embed_tokens.weight.mul_(4.0)
    return model.to(dtype).eval()
