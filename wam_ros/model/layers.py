"""Transformer building blocks: 3-axis RoPE, timestep modulation, the Mixture-of-Transformers layer.

The MoT layer holds two experts with separate parameters (video at width Dv, action-value at
width Da) that meet only inside one shared self-attention of width Dv. The cross-modality mask
(video -> video; state/action -> video + state/action; value -> everything) is realised by
computing the video queries against video keys only, so video outputs cannot depend on the
action-value tokens at all (bit-identical, not merely close), and video-only passes (stage-1
training, the video tail of ANS sampling) skip the action expert entirely.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class Rope3d:
    """Rotary position embedding over (time, row, col); the head dim is split between the axes."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        spatial = 2 * (head_dim // 6)
        self.splits = (head_dim - 2 * spatial, spatial, spatial)
        self.theta = theta

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions: (N, 3) float -> cos, sin of shape (N, head_dim / 2)."""
        parts = []
        for axis, size in enumerate(self.splits):
            if size == 0:
                continue
            freqs = self.theta ** (-torch.arange(0, size, 2, dtype=torch.float32, device=positions.device) / size)
            parts.append(positions[:, axis:axis + 1].float() * freqs)
        angles = torch.cat(parts, dim=-1)
        return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, heads, N, head_dim) rotated pairwise (even, odd) by the angles of each token."""
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


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


class ExpertBlock(nn.Module):
    """One expert's parameters in one layer: modulated norms, its projections into and out of the
    shared attention, text cross-attention and a feed-forward layer."""

    def __init__(self, width: int, ffn: int, attn_width: int, heads: int):
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(6, width) / width ** 0.5)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * attn_width)
        self.attn_out = nn.Linear(attn_width, width)
        self.norm_text = nn.LayerNorm(width, eps=1e-6)
        self.text_attn = CrossAttention(width, attn_width, attn_width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(width, ffn)
        self.heads = heads

    def project(self, x: Tensor, mod: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pre-attention: (q, k, v) of shape (B, heads, N, head_dim)."""
        shift, scale = (mod[:, :, i] + self.modulation[i] for i in (0, 1))
        qkv = self.qkv(modulate(self.norm1(x), shift, scale))
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        return q, k, v

    def finish(self, x: Tensor, attended: Tensor, mod: Tensor, text: Tensor) -> Tensor:
        """Post-attention: gated residual, text cross-attention, modulated feed-forward."""
        gate_attn, shift2, scale2, gate_ffn = (mod[:, :, i] + self.modulation[i] for i in (2, 3, 4, 5))
        x = x + gate_attn * self.attn_out(attended.transpose(1, 2).flatten(-2))
        x = x + self.text_attn(self.norm_text(x), text)
        return x + gate_ffn * self.ffn(modulate(self.norm2(x), shift2, scale2))


def _rotate(q: Tensor, k: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    cos, sin = rope
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


class MoTLayer(nn.Module):
    """Video expert + action-value expert sharing one self-attention."""

    def __init__(self, video_width: int, video_ffn: int, action_width: int, action_ffn: int, heads: int):
        super().__init__()
        self.video = ExpertBlock(video_width, video_ffn, video_width, heads)
        self.action = ExpertBlock(action_width, action_ffn, video_width, heads)

    def forward(self, xv: Tensor, mod_v: Tensor, rope_v: tuple[Tensor, Tensor], text: Tensor,
                xa: Tensor | None = None, mod_a: Tensor | None = None,
                rope_a: tuple[Tensor, Tensor] | None = None, mask_a: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        qv, kv, vv = self.video.project(xv, mod_v)
        qv, kv = _rotate(qv, kv, rope_v)
        video_attended = F.scaled_dot_product_attention(qv, kv, vv)  # video -> video only
        xv_out = self.video.finish(xv, video_attended, mod_v, text)
        if xa is None:
            return xv_out, None
        qa, ka, va = self.action.project(xa, mod_a)
        qa, ka = _rotate(qa, ka, rope_a)
        keys, values = torch.cat([kv, ka], dim=2), torch.cat([vv, va], dim=2)
        action_attended = F.scaled_dot_product_attention(qa, keys, values, attn_mask=mask_a)
        return xv_out, self.action.finish(xa, action_attended, mod_a, text)


class DepthBlock(nn.Module):
    """A replica of a main video block plus a cross-attention to the main branch's input at the
    same layer. Information flows main -> depth only."""

    def __init__(self, main: ExpertBlock, width: int, heads: int):
        super().__init__()
        self.block = copy.deepcopy(main)
        self.norm_main = nn.LayerNorm(width, eps=1e-6)
        self.main_attn = CrossAttention(width, width, width, heads)
        nn.init.zeros_(self.main_attn.out.weight)
        nn.init.zeros_(self.main_attn.out.bias)

    def forward(self, x: Tensor, main_input: Tensor, mod: Tensor, rope: tuple[Tensor, Tensor],
                text: Tensor) -> Tensor:
        x = x + self.main_attn(self.norm_main(x), main_input)
        q, k, v = self.block.project(x, mod)
        q, k = _rotate(q, k, rope)
        return self.block.finish(x, F.scaled_dot_product_attention(q, k, v), mod, text)


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
