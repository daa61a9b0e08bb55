"""The SmolLM3 architecture in plain PyTorch: a Llama-style dense decoder with grouped-query attention,
RoPE dropped every `nope_interval`-th layer (NoPE), tied embeddings and intra-document attention.

The model knows nothing about FSDP, tensor parallelism or compilation (parallel.py applies those from
outside). Module names follow transformers' SmolLM3 so export is a rename-free copy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 128256
    hidden_size: int = 2048
    n_layers: int = 36
    n_heads: int = 16
    n_kv_heads: int = 4
    intermediate_size: int = 11008
    rope_theta: float = 50000.0
    max_seq_len: int = 4096
    nope_interval: int = 4  # layer i has no RoPE when (i + 1) % nope_interval == 0; 0 disables NoPE
    norm_eps: float = 1e-6
    init_std: float = 0.02
    bos_token_id: int = 128000
    eos_token_id: int = 128001
    pad_token_id: int = 128004

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    def uses_rope(self, layer: int) -> bool:
        return self.nope_interval <= 0 or (layer + 1) % self.nope_interval != 0

    def validate(self) -> None:
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")

    def num_params(self) -> int:
        h, kv = self.hidden_size, self.n_kv_heads * self.head_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * self.intermediate_size + 2 * h
        return self.vocab_size * h + self.n_layers * per_layer + h

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6N for the matmuls (the tied head counts once
        more as the output projection) plus the attention scores, counted causal-halved as usual."""
        n = self.num_params() - self.hidden_size * (2 * self.n_layers + 1)  # norms do no matmuls
        return 6.0 * n + 6.0 * self.n_layers * self.hidden_size * seq_len

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # The exact SmolLM3-3B shape (HuggingFaceTB/SmolLM3-3B config.json), trained at seq 4096.
    "smollm3-3b": ModelConfig(),
    # The ~1B ablation size: same width, heads and vocabulary, 16 layers, narrower MLP (1.03B params).
    "smollm3-1b": ModelConfig(n_layers=16, intermediate_size=6144),
    # For CPU tests: byte-level vocabulary, four layers so layer 3 is a NoPE layer.
    "tiny": ModelConfig(
        vocab_size=256,
        hidden_size=64,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        intermediate_size=176,
        rope_theta=10000.0,
        max_seq_len=512,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=2,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
    cfg = replace(PRESETS[name], **overrides)
    cfg.validate()
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape [batch, seq, head_dim] for integer positions [batch, seq] (fp32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate half-split pairs of x [batch, heads, seq, head_dim] (the Llama/SmolLM3 convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


class AttentionMask:
    """How tokens may attend: causal, and within their own document when doc_ids are given.

    On GPU the mask is a FlexAttention block mask (sparse: skips whole blocks across documents); where
    FlexAttention cannot train (CPU has no backward), SDPA gets a dense block-diagonal causal bool mask.
    """

    def __init__(self, doc_ids: torch.Tensor | None, seq_len: int, impl: str) -> None:
        self.impl = impl
        self.dense: torch.Tensor | None = None
        self.block = None
        if doc_ids is None:
            return
        if impl == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            def same_doc_causal(b, h, q, kv):
                return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

            self.block = create_block_mask(
                same_doc_causal, doc_ids.shape[0], None, seq_len, seq_len, device=doc_ids.device
            )
        else:
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=doc_ids.device).tril()
            self.dense = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal  # [batch, q, kv]
            self.dense = self.dense[:, None]


_flex_compiled = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():  # inside a compiled block: the outer graph fuses it
        return flex_attention(q, k, v, block_mask=block, enable_gqa=True)
    global _flex_compiled  # compiled once per process: eager FlexAttention is a slow reference path
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled(q, k, v, block_mask=block, enable_gqa=True)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.use_rope = cfg.uses_rope(layer)
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=False)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        b, s, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.q_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if self.use_rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if mask.block is not None:
            out = _flex(q, k, v, mask.block)
        elif mask.dense is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    """SwiGLU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied: one tensor, one gradient
        self.attn_impl = "sdpa"  # "flex" on GPU with document masking (set by the loop)
        self.activation_checkpointing = False
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, std) weights, residual outputs scaled by 1/sqrt(2 * layers), unit norms."""
        out_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if p.ndim == 1:
                    p.fill_(1.0)
                else:
                    std = (
                        out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else self.cfg.init_std
                    )
                    p.normal_(0.0, std, generator=generator)

    def forward(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [batch, seq, vocab] for tokens [batch, seq]. With doc_ids, tokens attend only within
        their document; positions (RoPE) default to 0..seq-1."""
        b, s = tokens.shape
        if positions is None:
            positions = torch.arange(s, device=tokens.device).expand(b, s)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        mask = AttentionMask(doc_ids, s, self.attn_impl)
        x = self.embed_tokens(tokens)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy in fp32; targets of -100 are ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1), ignore_index=-100)
