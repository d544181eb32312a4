"""The Video Expert and the VAE, on diffusers' Wan: `WanTransformer3DModel` and `AutoencoderKLWan`.

The transformer is held as a submodule, so its parameters keep diffusers' own names and a
pretrained Wan (a local diffusers directory, or a single file in diffusers' or Wan's original
layout) loads 1:1. wam_ros does not call the transformer's forward inside the
Mixture-of-Transformers: it runs Wan's computation piece by piece (`WanVideoExpert.qkv`,
`.attend`, `.finish`) so that the self-attention keys and values of the video stream are exposed
to the action-value expert. `WanVideoExpert.forward` assembles the same pieces into the video-only
Wan forward; a test holds it bit-identical (fp32) to `WanTransformer3DModel.forward`.

Nothing here downloads: every loader takes a local path.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor, nn

from wam_ros.model.model_config import ModelConfig

ROPE_THETA = 10000.0  # WanRotaryPosEmbed's default (it does not store it)
TIMESTEP_SCALE = 1000.0  # Wan's timesteps are sigma * 1000


class PriorError(ValueError):
    """A pretrained Wan that does not fit the model config, or a path that holds none."""


# ---- the transformer --------------------------------------------------------------------------
def wan_transformer(cfg: ModelConfig) -> WanTransformer3DModel:
    """A randomly initialised Wan transformer of the config's shapes (Wan2.1/2.2's fixed choices:
    frequency dim 256, cross-attention norm, RMS q/k norm across heads, eps 1e-6)."""
    return WanTransformer3DModel(
        patch_size=(1, cfg.patch_size, cfg.patch_size),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.video.width // cfg.heads,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        text_dim=cfg.text_dim,
        freq_dim=256,
        ffn_dim=cfg.video.ffn,
        num_layers=cfg.blocks,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
    )


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Wan's rotary embedding: x (B, N, heads, head_dim), cos/sin (1, N, 1, head_dim) repeated pairwise."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class WanVideoExpert(nn.Module):
    """The Video Expert: a `WanTransformer3DModel` (`.transformer`) and Wan's computation split at
    the self-attention so another expert can share it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transformer = wan_transformer(cfg)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    # ---- inputs ----------------------------------------------------------------------------
    def embed(self, latents: Tensor) -> Tensor:
        """(N, C, F, h, w) latents -> (N, F * P, D) tokens (Wan's patch embedding)."""
        x = self.transformer.patch_embedding(latents)
        return x.flatten(2).transpose(1, 2).contiguous()

    def rotary(self, frames: int, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Wan's RoPE for a latent grid of (frames, height, width) cells (before patching): cos, sin
        (1, F * P, 1, head_dim)."""
        grid = torch.empty(1, 1, frames, height, width, device="meta")  # the rope reads only the shape
        return self.transformer.rope(grid)

    def rotary_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Wan's RoPE at arbitrary (time, row, col) token positions (N, 3), fractional times allowed:
        cos, sin (1, N, 1, head_dim). At integer positions it equals the rope's own tables."""
        rope = self.transformer.rope
        parts_cos, parts_sin = [], []
        for axis, dim in enumerate((rope.t_dim, rope.h_dim, rope.w_dim)):
            freqs = 1.0 / ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
            angles = positions[:, axis : axis + 1].to(torch.float64) * freqs
            parts_cos.append(angles.cos().repeat_interleave(2, dim=1))
            parts_sin.append(angles.sin().repeat_interleave(2, dim=1))
        cos, sin = torch.cat(parts_cos, dim=1).float(), torch.cat(parts_sin, dim=1).float()
        return cos[None, :, None], sin[None, :, None]

    def conditions(self, timestep: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """timestep (B,) or per token (B, N) in Wan's units (sigma * 1000); text (B, L, text_dim) ->
        (temb (B, D) or (B, N, D), modulation (B, 6, D) or (B, N, 6, D), text states (B, L, D))."""
        per_token = timestep.ndim == 2
        temb, projection, text_states, _ = self.transformer.condition_embedder(
            timestep.flatten() if per_token else timestep,
            text,
            None,
            timestep_seq_len=timestep.shape[1] if per_token else None,
        )
        return temb, projection.unflatten(2 if per_token else 1, (6, -1)), text_states

    # ---- one block -------------------------------------------------------------------------
    @staticmethod
    def modulation(block: WanTransformerBlock, projection: Tensor) -> tuple[Tensor, ...]:
        """The six adaLN vectors (shift, scale, gate, c_shift, c_scale, c_gate) of a block."""
        if projection.ndim == 4:
            parts = (block.scale_shift_table.unsqueeze(0) + projection.float()).chunk(6, dim=2)
            return tuple(p.squeeze(2) for p in parts)
        return (block.scale_shift_table + projection.float()).chunk(6, dim=1)

    @staticmethod
    def qkv(
        block: WanTransformerBlock, x: Tensor, mod: tuple[Tensor, ...], rotary: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Modulated norm and attn1's projections, RMS q/k norm and RoPE: (B, N, heads, head_dim) each."""
        shift, scale = mod[0], mod[1]
        h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
        attn = block.attn1
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))
        return rotate(q, *rotary), rotate(k, *rotary), v

    @staticmethod
    def attend(block: WanTransformerBlock, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """attn1's attention (through diffusers' backend dispatch, as Wan runs it): (B, N, heads * head_dim)."""
        out = dispatch_attention_fn(
            q,
            k,
            v,
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
            backend=block.attn1.processor._attention_backend,
            parallel_config=None,
        )
        return out.flatten(2, 3).type_as(q)

    @staticmethod
    def finish(
        block: WanTransformerBlock, x: Tensor, attended: Tensor, mod: tuple[Tensor, ...], text_states: Tensor
    ) -> Tensor:
        """attn1's output projection and gated residual, text cross-attention (attn2), modulated ffn."""
        gate, c_shift, c_scale, c_gate = mod[2:]
        attn = block.attn1
        out = attn.to_out[1](attn.to_out[0](attended))
        x = (x.float() + out * gate).type_as(x)
        h = block.norm2(x.float()).type_as(x)
        x = x + block.attn2(h, text_states, None, None)
        h = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
        return (x.float() + block.ffn(h).float() * c_gate).type_as(x)

    # ---- outputs ---------------------------------------------------------------------------
    def head(self, x: Tensor, temb: Tensor) -> Tensor:
        """Wan's output norm (modulated by temb) and projection: (B, N, C * p * p)."""
        t = self.transformer
        if temb.ndim == 3:
            shift, scale = (t.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (t.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        return t.proj_out((t.norm_out(x.float()) * (1 + scale) + shift).type_as(x))

    def unpatchify(self, tokens: Tensor, frames: int, height: int, width: int) -> Tensor:
        """(N, F * P, C * p * p) -> (N, C, F, height, width) in Wan's layout."""
        p_t, p_h, p_w = self.transformer.config.patch_size
        x = tokens.reshape(tokens.shape[0], frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def forward(self, latents: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        """The video-only Wan forward from the pieces above: latents (B, C, F, h, w), timestep (B,) or
        (B, F * P) in Wan's units, text (B, L, text_dim) -> velocity (B, C, F, h, w)."""
        _, _, frames, height, width = latents.shape
        rotary = self.rotary(frames, height, width)
        x = self.embed(latents)
        temb, projection, text_states = self.conditions(timestep, text)
        for block in self.blocks:
            mod = self.modulation(block, projection)
            x = self.finish(block, x, self.attend(block, *self.qkv(block, x, mod, rotary)), mod, text_states)
        return self.unpatchify(self.head(x, temb), frames, height, width)


# ---- the VAE ----------------------------------------------------------------------------------
def wan_vae(cfg: ModelConfig) -> AutoencoderKLWan:
    """A randomly initialised Wan VAE of the config's layout; latents_mean/std 0/1 (a pretrained VAE
    brings its own)."""
    wan22 = cfg.vae_layout == "wan2.2"
    return AutoencoderKLWan(
        base_dim=cfg.vae_base_dim,
        decoder_base_dim=cfg.vae_decoder_base_dim or None,
        z_dim=cfg.latent_channels,
        num_res_blocks=cfg.vae_res_blocks,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * cfg.latent_channels,
        latents_std=[1.0] * cfg.latent_channels,
        is_residual=wan22,
        in_channels=12 if wan22 else 3,
        out_channels=12 if wan22 else 3,
        patch_size=2 if wan22 else None,
        scale_factor_temporal=cfg.temporal_compression,
        scale_factor_spatial=cfg.spatial_compression,
    )


class VideoVAE(nn.Module):
    """`AutoencoderKLWan` (`.vae`) with latents normalised by its latents_mean/std. The statistics are
    persistent buffers: a checkpoint carries them although they live in the VAE's config."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.vae = wan_vae(cfg)
        self.register_buffer("latents_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latents_std", torch.ones(cfg.latent_channels))

    def adopt_statistics(self) -> None:
        """Takes latents_mean/std from the VAE's config (after a pretrained VAE was loaded)."""
        config = self.vae.config
        with torch.no_grad():
            self.latents_mean.copy_(torch.tensor(config.latents_mean, dtype=torch.float32))
            self.latents_std.copy_(torch.tensor(config.latents_std, dtype=torch.float32))

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latents_mean.reshape(shape).to(like), self.latents_std.reshape(shape).to(like)

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, V, 1 + 4n, 3, H, W) in [-1, 1] -> normalised latents (B, V, 1 + n, C, H/s, W/s), the
        posterior's mode. Causal: frame 0 alone encodes to latent frame 0 of any clip it starts."""
        b, v = rgb.shape[:2]
        z = self.vae.encode(rgb.flatten(0, 1).transpose(1, 2)).latent_dist.mode()
        mean, std = self._stats(z)
        return ((z - mean) / std).transpose(1, 2).unflatten(0, (b, v))

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, V, 1 + n, C, h, w) -> rgb (B, V, 1 + 4n, 3, s h, s w) in [-1, 1]."""
        b, v = latents.shape[:2]
        z = latents.flatten(0, 1).transpose(1, 2)
        mean, std = self._stats(z)
        rgb = self.vae.decode(z * std + mean).sample
        return rgb.transpose(1, 2).unflatten(0, (b, v))


# ---- loading a pretrained prior ---------------------------------------------------------------
def _read_single_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data.get("state_dict", data) if isinstance(data, dict) else data


def _load_single_file(module: nn.Module, path: Path, convert) -> None:
    """A state dict in diffusers' layout, or Wan's original one (converted by diffusers' own
    converter), loaded strictly: a file of other shapes fails with the differences named."""
    state = _read_single_file(path)
    own = module.state_dict()
    if not set(own) <= set(state):
        state = convert(state)
    missing = sorted(set(own) - set(state))
    if missing:
        raise PriorError(f"{path}: not a Wan file of this layout (missing {missing[:4]}, {len(missing)} in all)")
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise PriorError(f"{path} does not fit the model config: " + "; ".join(wrong[:4]))
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def _check_config(what: str, loaded: dict, expected: dict) -> None:
    wrong = [
        f"{k}: prior {loaded.get(k)!r} vs config {v!r}"
        for k, v in expected.items()
        if (list(loaded.get(k)) if isinstance(loaded.get(k), (list, tuple)) else loaded.get(k)) != v
    ]
    if wrong:
        raise PriorError(f"the pretrained {what} does not fit the model config: " + "; ".join(wrong))


def load_transformer(expert: WanVideoExpert, path: Path, dtype: torch.dtype = torch.float32) -> None:
    """Pretrained Wan transformer weights into the expert: a diffusers directory (model or
    `transformer/` subfolder) or a single .safetensors/.pt file."""
    path = Path(path).expanduser()
    if path.is_file():
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        _load_single_file(expert.transformer, path, convert_wan_transformer_to_diffusers)
        expert.transformer.to(dtype)
        return
    sub = "transformer" if (path / "transformer" / "config.json").is_file() else None
    if not (path / (sub or "") / "config.json").is_file():
        raise PriorError(f"{path}: no Wan transformer (config.json, or transformer/config.json)")
    loaded = WanTransformer3DModel.from_pretrained(path, subfolder=sub, torch_dtype=dtype, local_files_only=True)
    ours = expert.transformer.config
    _check_config(
        "transformer",
        dict(loaded.config),
        {
            k: (list(ours[k]) if k == "patch_size" else ours[k])
            for k in (
                "patch_size",
                "num_attention_heads",
                "attention_head_dim",
                "in_channels",
                "out_channels",
                "text_dim",
                "ffn_dim",
                "num_layers",
            )
        },
    )
    expert.transformer = loaded


def load_vae(video_vae: VideoVAE, path: Path, dtype: torch.dtype = torch.float32) -> None:
    """A pretrained Wan VAE: a diffusers directory (model or `vae/` subfolder) or a single file (its
    latents_mean/std then stay those of the model's VAE config: Wan2.1's defaults for a z-16 VAE)."""
    path = Path(path).expanduser()
    if path.is_file():
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        if video_vae.vae.config.z_dim == 16:  # AutoencoderKLWan's defaults are Wan2.1's statistics
            defaults = inspect.signature(AutoencoderKLWan.__init__).parameters
            video_vae.vae.register_to_config(
                latents_mean=defaults["latents_mean"].default, latents_std=defaults["latents_std"].default
            )
        _load_single_file(video_vae.vae, path, convert_wan_vae_to_diffusers)
    else:
        sub = "vae" if (path / "vae" / "config.json").is_file() else None
        if not (path / (sub or "") / "config.json").is_file():
            raise PriorError(f"{path}: no Wan VAE (config.json, or vae/config.json)")
        loaded = AutoencoderKLWan.from_pretrained(path, subfolder=sub, torch_dtype=dtype, local_files_only=True)
        ours = video_vae.vae.config
        _check_config(
            "VAE",
            dict(loaded.config),
            {k: ours[k] for k in ("z_dim", "is_residual", "patch_size", "in_channels", "scale_factor_spatial")},
        )
        video_vae.vae = loaded
    video_vae.adopt_statistics()
    video_vae.vae.to(dtype)
