"""Building blocks around the Wan Video Expert: the action-value expert's block, the depth
branch's block, timestep embeddings and output heads of the smaller experts.

The video side's blocks are Wan's own (wam_ros/model/wan.py); the two experts meet inside one
shared self-attention (wam_ros/model/wam.py).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor, nn

from wam_ros.model.wan import rotate


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 like the diffusion literature)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedding(nn.Module):
    """t -> expert-width embedding -> the six modulation vectors (shared by all blocks, Wan-style)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.project = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t: (B, N) per-token times -> (embedding (B, N, W), modulation (B, N, 6, W))."""
        emb = self.embed(timestep_features(t, 256))
        return emb, self.project(emb).unflatten(-1, (6, self.width))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class FeedForward(nn.Sequential):
    def __init__(self, width: int, hidden: int):
        super().__init__(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


class CrossAttention(nn.Module):
    """Queries at `width`, keys/values from a context at `context_width`, attention at `attn_width`."""

    def __init__(self, width: int, context_width: int, attn_width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, attn_width)
        self.kv = nn.Linear(context_width, 2 * attn_width)
        self.out = nn.Linear(attn_width, width)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = self.kv(context).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).flatten(-2))


class ActionBlock(nn.Module):
    """The action-value expert's parameters in one MoT layer: adaLN modulation, its projections into
    and out of the shared attention (attn_width = the video's heads x head_dim), RMS q/k norm like
    Wan's (so its queries and keys live on the scale of the video keys they meet), text
    cross-attention to Wan's projected text states, and a feed-forward layer."""

    def __init__(self, width: int, ffn: int, attn_width: int, heads: int):
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(6, width) / width**0.5)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv_proj = nn.Linear(width, 3 * attn_width)
        self.norm_q = nn.RMSNorm(attn_width, eps=1e-6)
        self.norm_k = nn.RMSNorm(attn_width, eps=1e-6)
        self.attn_out = nn.Linear(attn_width, width)
        self.norm_text = nn.LayerNorm(width, eps=1e-6)
        self.text_attn = CrossAttention(width, attn_width, attn_width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(width, ffn)
        self.heads = heads

    def qkv(self, x: Tensor, mod: Tensor, rotary: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Pre-attention: (q, k, v) of shape (B, N, heads, head_dim), q and k rotated (Wan's RoPE)."""
        shift, scale = (mod[:, :, i] + self.modulation[i] for i in (0, 1))
        q, k, v = self.qkv_proj(modulate(self.norm1(x), shift, scale)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)) for t in (self.norm_q(q), self.norm_k(k), v))
        return rotate(q, *rotary), rotate(k, *rotary), v

    def finish(self, x: Tensor, attended: Tensor, mod: Tensor, text_states: Tensor) -> Tensor:
        """Post-attention (attended: (B, N, attn_width)): gated residual, text cross-attention,
        modulated feed-forward."""
        gate_attn, shift2, scale2, gate_ffn = (mod[:, :, i] + self.modulation[i] for i in (2, 3, 4, 5))
        x = x + gate_attn * self.attn_out(attended)
        x = x + self.text_attn(self.norm_text(x), text_states)
        return x + gate_ffn * self.ffn(modulate(self.norm2(x), shift2, scale2))


class DepthBlock(nn.Module):
    """X-WAM's depth branch block: a copy of a Wan video block plus a cross-attention to the main
    branch's input at the same layer (information flows main -> depth only). The cross-attention's
    output starts at zero, so right after the copy the block computes what its source computes."""

    def __init__(self, source: WanTransformerBlock, width: int, heads: int):
        super().__init__()
        self.block = copy.deepcopy(source)
        self.norm_main = nn.LayerNorm(width, eps=1e-6)
        self.main_attn = CrossAttention(width, width, width, heads)
        nn.init.zeros_(self.main_attn.out.weight)
        nn.init.zeros_(self.main_attn.out.bias)

    def forward(
        self, x: Tensor, main_input: Tensor, modulation: Tensor, rotary: tuple[Tensor, Tensor], text_states: Tensor
    ) -> Tensor:
        x = x + self.main_attn(self.norm_main(x), main_input)
        return self.block(x, text_states, modulation, rotary)


class OutputHead(nn.Module):
    """Final modulated norm (shift/scale from the token's timestep embedding) and a projection."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, out)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        shift, scale = self.modulation(F.silu(t_emb)).chunk(2, dim=-1)
        return self.out(modulate(self.norm(x), shift, scale))
