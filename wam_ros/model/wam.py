"""The World Action Model network: tokens, the MoT trunk on the Wan Video Expert, heads, losses.

Data contract (what a training window and an observation must carry):
    rgb            (B, V, clip_frames, 3, H, W) in [-1, 1], clip_frames = 1 + 4 H raw frames per view,
                   consecutive at the action rate: frame 0 is the present, frame k + 1 the one after
                   action k. The causal Wan VAE turns them into 1 + H latent frames: frame 0 alone
                   encodes to latent frame 0 (inference encodes only the present frame), latent frame
                   j >= 1 spans raw frames 4j-3 .. 4j, i.e. 4 raw frames and 4 actions.
    inverse_depth  (B, V, clip_frames, H, W) for the same frames (0 = invalid); the depth branch
                   predicts it at the latent frames' last raw frames 0, 4, 8, .., 4H.
    state (B, S), actions (B, K = 4 H, A) normalised, value (B,) progress in [0, 1].

Token layout of one sample:
    video   V views x (1 + H) latent frames x P patches (Wan's patch embedding per view, plus a
            learned view embedding that starts at zero): frame 0 is the clean conditioning frame
            (timestep 0), frames 1..H the noisy future (v-prediction; the latents or, with
            video_target "change", their change from the still latents of the present), per-token
            timesteps as in Wan2.2-TI2V
    state   1 token (clean)
    action  K tokens (x0-prediction)
    value   1 token (x0-prediction)
RoPE is Wan's (time, row, col) rotary embedding; the views share positions. Action k sits at time
(k + 1) / 4: the latent frame its result falls in, at a quarter of the video's temporal scale.
Flow convention: x_t = (1 - t) x_0 + t x_1 with x_1 ~ N(0, I), t in [0, 1] (Wan's timestep is 1000 t).

Cross-modality mask: video attends to video (and, with video_sees_actions, to the state and
action tokens); state and action tokens attend to video + state/action; the value token attends to
everything. Without video_sees_actions the video queries never meet an action key, so video
outputs are bit-identical with and without action tokens, and video-only passes skip the
action-value expert.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wam_ros.model.layers import ActionBlock, DepthBlock, OutputHead, TimestepEmbedding
from wam_ros.model.model_config import ModelConfig
from wam_ros.model.text import make_text_encoder
from wam_ros.model.wan import TIMESTEP_SCALE, VideoVAE, WanVideoExpert, load_transformer, load_vae

CHANGE_SCALE_MOMENTUM = 0.01
MIN_CHANGE_SCALE = 1e-4  # a batch in which nothing moves must not make the scale vanish
MIN_DEPTH_M = 0.1  # inverse depth targets are clipped at 10 m^-1
GATE_TOKEN_FEATURES = 8


def inverse_depth(depth_m: Tensor) -> Tensor:
    """Metres -> inverse depth; invalid (0) stays 0."""
    return torch.where(depth_m > 0, 1.0 / depth_m.clamp(min=MIN_DEPTH_M), torch.zeros_like(depth_m))


@dataclass
class Trunk:
    """Outputs of one pass through the trunk."""

    video_velocity: Tensor  # (B, V, 1 + H, C, h, w) v-prediction for every latent frame
    video_hidden: Tensor  # (B, V, 1 + H, D) final hidden states pooled per view and frame
    action_x0: Tensor | None  # (B, K, A)
    value_x0: Tensor | None  # (B,) in [-1, 1] (progress 0..1 mapped)
    inverse_depth: Tensor | None  # (B, V, 1 + H, H_img, W_img)


@dataclass
class Conditioning:
    """The present observation, embedded once per chunk: its latent frame, its depth tokens and the
    tokens the gate reads."""

    latent: Tensor  # (B, V, 1, C, h, w) normalised VAE latent of the present frame
    depth_tokens: Tensor | None  # (B, V, P, D) embedded present inverse depth, added to frame-0 tokens
    tokens: Tensor  # (B, V * P, D) present-frame tokens (patch + depth + view embedding)


def pixels_to_tokens(x: Tensor, cell: int) -> Tensor:
    """(..., hp * cell, wp * cell) -> (..., hp * wp, cell * cell), row-major over token cells."""
    *lead, h, w = x.shape
    x = x.reshape(*lead, h // cell, cell, w // cell, cell).movedim(-3, -2)
    return x.reshape(*lead, (h // cell) * (w // cell), cell * cell)


def tokens_to_pixels(x: Tensor, hp: int, wp: int, cell: int) -> Tensor:
    """The inverse of pixels_to_tokens."""
    *lead, _, _ = x.shape
    x = x.reshape(*lead, hp, wp, cell, cell).movedim(-2, -3)
    return x.reshape(*lead, hp * cell, wp * cell)


class ReactiveExpert(nn.Module):
    """HarmoWAM's reactive expert: inverse dynamics from predicted future latent frames plus the
    world model's pooled features of them, decoded by K action queries."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, w = cfg.latent_size
        frames = len(cfg.cameras) * (cfg.horizon + 1)
        width = cfg.reactive_width
        self.latent_in = nn.Linear(cfg.latent_channels * h * w, width)
        self.hidden_in = nn.Linear(cfg.video.width, width)
        self.frame_embed = nn.Parameter(torch.randn(frames, width) * 0.02)
        self.state_in = nn.Linear(cfg.state_dim, width)
        self.queries = nn.Parameter(torch.randn(cfg.num_actions, width) * 0.02)
        layer = nn.TransformerDecoderLayer(
            width, nhead=4, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.reactive_layers)
        self.out = nn.Linear(width, cfg.action_dim)

    def forward(self, latents: Tensor, hidden: Tensor, state: Tensor) -> Tensor:
        memory = self.latent_in(latents.flatten(3).flatten(1, 2)) + self.hidden_in(hidden.flatten(1, 2))
        memory = torch.cat([memory + self.frame_embed, self.state_in(state)[:, None]], dim=1)
        queries = self.queries.expand(len(state), -1, -1)
        return self.out(self.decoder(queries, memory))


class WorldActionModel(nn.Module):
    """Video Expert (diffusers' Wan transformer, `.video.transformer`) + action-value expert sharing
    one self-attention per layer, a depth branch of copied Wan blocks, the Wan VAE (`.vae.vae`),
    value/action heads, HarmoWAM's reactive expert and gate."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, da = cfg.video.width, cfg.action.width
        views = len(cfg.cameras)
        self.vae = VideoVAE(cfg)
        # video_target "change": the s.d. of the latents' change from the still ones, tracked in training
        # (0: not measured yet) and saved with the weights; the flow denoises the change over it
        self.register_buffer("change_scale", torch.zeros(()))
        self.text_encoder = make_text_encoder(cfg)
        self.video = WanVideoExpert(cfg)
        cell = cfg.spatial_compression * cfg.patch_size
        # a loaded prior must not be disturbed: view and depth-input embeddings start at zero
        self.view_embed = nn.Parameter(torch.zeros(views, d))
        self.depth_in = nn.Linear(cell * cell, d) if cfg.use_depth_input else None
        if self.depth_in is not None:
            nn.init.zeros_(self.depth_in.weight)
            nn.init.zeros_(self.depth_in.bias)
        # action-value expert
        self.state_in = nn.Linear(cfg.state_dim, da)
        self.action_in = nn.Linear(cfg.action_dim, da)
        self.value_in = nn.Linear(1, da)
        self.type_embed = nn.Parameter(torch.randn(3, da) * 0.02)
        self.action_time = TimestepEmbedding(da)
        self.action_blocks = nn.ModuleList(ActionBlock(da, cfg.action.ffn, d, cfg.heads) for _ in range(cfg.blocks))
        self.action_head = OutputHead(da, cfg.action_dim)
        self.value_head = OutputHead(da, 1)
        # depth branch: copies of the last M Wan blocks (re-copied by sync_depth_branch after a
        # prior is loaded)
        first = cfg.blocks - cfg.depth_blocks
        self.depth_blocks = nn.ModuleList(DepthBlock(block, d, cfg.heads) for block in self.video.blocks[first:])
        self.depth_head = OutputHead(d, cell * cell) if cfg.depth_blocks else None
        # gate and reactive expert
        # the gate keeps where things are: a narrow per-token projection, flattened (mean pooling
        # would discard the positions that tell contact from transit)
        self.gate_tokens = nn.Linear(d, GATE_TOKEN_FEATURES)
        self.gate = nn.Sequential(
            nn.Linear(views * cfg.tokens_per_frame * GATE_TOKEN_FEATURES + cfg.text_dim, cfg.gate_hidden),
            nn.SiLU(),
            nn.Linear(cfg.gate_hidden, 1),
        )
        self.reactive = ReactiveExpert(cfg)

    # ---- a pretrained prior ----------------------------------------------------------------
    @classmethod
    def from_wan(
        cls,
        cfg: ModelConfig,
        transformer: str | Path,
        vae: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "WorldActionModel":
        """A model whose Video Expert and VAE are a pretrained Wan (local files only, never downloaded):
        `transformer` is a diffusers directory (with transformer/ and vae/ subfolders, or the
        transformer's own folder) or a single file; `vae` defaults to the same directory. The depth
        branch is copied from the loaded blocks."""
        model = cls(cfg)
        model.load_wan_prior(transformer, vae, dtype)
        return model

    def load_wan_prior(
        self, transformer: str | Path, vae: str | Path | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        vae_path = Path(transformer) if vae is None else Path(vae)
        if vae is None and vae_path.is_file():
            raise ValueError(f"{transformer} is a single file: pass the VAE's file or directory too")
        load_transformer(self.video, Path(transformer), dtype)
        load_vae(self.vae, vae_path, dtype)
        self.sync_depth_branch()

    def sync_depth_branch(self) -> None:
        """Copies the last M video blocks into the depth branch (X-WAM: made from the pretrained blocks)."""
        first = self.cfg.blocks - self.cfg.depth_blocks
        for depth, source in zip(self.depth_blocks, self.video.blocks[first:]):
            depth.block.load_state_dict(source.state_dict())
            depth.block.to(next(source.parameters()).dtype)

    # ---- tokens ----------------------------------------------------------------------------
    def still_latents(self, present_rgb: Tensor) -> Tensor:
        """The latents of "nothing moves": the present frames (B, V, 3, H, W) repeated over a whole
        clip, encoded: (B, V, 1 + H, C, h, w). Frame 0 is the present's own latent (the VAE is
        causal). A causal VAE encodes a later latent frame (4 raw frames) differently from the
        first (1 frame), so the change that stands for motion is measured from these, not from
        latent frame 0: from frame 0, the bench VAE's latent change had s.d. 0.98 and its decode
        correlated 0.12 with the recorded motion."""
        clip = present_rgb[:, :, None].expand(-1, -1, self.cfg.clip_frames, -1, -1, -1)
        return self.vae.encode(clip)

    def video_target(self, latents: Tensor, still: Tensor | None) -> Tensor:
        """What the video flow denoises, from latents (B, V, 1 + H, C, h, w): the future latents
        ("latent") or their change from the still latents (still_latents) over change_scale ("change")."""
        if self.cfg.video_target == "latent":
            return latents[:, :, 1:]
        return (latents[:, :, 1:] - still[:, :, 1:]) / self._change_scale()

    def future_latents(self, still: Tensor | None, target: Tensor) -> Tensor:
        """The future latents (B, V, H, C, h, w) a denoised video target stands for."""
        if self.cfg.video_target == "latent":
            return target
        return still[:, :, 1:] + target * self._change_scale()

    def track_change_scale(self, latents: Tensor, still: Tensor, momentum: float = CHANGE_SCALE_MOMENTUM) -> None:
        """Training: follow the s.d. of the latents' change from the still latents (a trainable
        VAE keeps reshaping it); the first batch sets it."""
        with torch.no_grad():
            measured = (latents[:, :, 1:] - still[:, :, 1:]).float().std().clamp(min=MIN_CHANGE_SCALE)
            measured = measured.to(self.change_scale.dtype)
            followed = self.change_scale + momentum * (measured - self.change_scale)
            # no branch on the value: the memory plan runs this on the meta device
            self.change_scale.copy_(torch.where(self.change_scale > 0, followed, measured))

    def _change_scale(self) -> Tensor:
        # an untrained model has measured nothing: unit scale
        return torch.where(self.change_scale > 0, self.change_scale, torch.ones_like(self.change_scale))

    def text_features(self, instructions: list[str]) -> Tensor:
        """Raw text features (B, L, text_dim); Wan's condition embedder projects them in the trunk."""
        return self.text_encoder(instructions)

    def conditioning(self, current_latent: Tensor, current_inverse_depth: Tensor | None) -> Conditioning:
        """current_latent (B, V, 1, C, h, w); current_inverse_depth (B, V, H, W) or None."""
        cfg = self.cfg
        b, views = current_latent.shape[:2]
        tokens = self.video.embed(current_latent.flatten(0, 1).transpose(1, 2)).unflatten(0, (b, views))
        depth_tokens = None
        if self.depth_in is not None:
            if current_inverse_depth is None:
                raise ValueError("this model takes depth input: current_inverse_depth is required")
            cell = cfg.spatial_compression * cfg.patch_size
            depth_tokens = self.depth_in(pixels_to_tokens(current_inverse_depth, cell))
            tokens = tokens + depth_tokens
        tokens = tokens + self.view_embed[None, :, None]
        return Conditioning(current_latent, depth_tokens, tokens.flatten(1, 2))

    def gate_logit(self, current: Conditioning, text: Tensor) -> Tensor:
        """p(interaction) logit from the present visual tokens and the instruction."""
        features = self.gate_tokens(current.tokens).flatten(1)
        # the mean over the instruction's own tokens: umT5 features are zero beyond the sequence
        # (Wan's padding to 512), and a plain mean would dilute a short instruction to nothing
        valid = (text != 0).any(dim=-1, keepdim=True).to(text.dtype)
        instruction = (text * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
        return self.gate(torch.cat([features, instruction], dim=-1)).squeeze(-1)

    def _action_rotary(self, device: torch.device) -> tuple[Tensor, Tensor]:
        k = self.cfg.num_actions
        times = torch.cat([torch.zeros(1), (torch.arange(k) + 1) / self.cfg.actions_per_frame, torch.zeros(1)])
        positions = torch.stack([times, torch.zeros(k + 2), torch.zeros(k + 2)], dim=-1).to(device)
        return self.video.rotary_at(positions)

    def _action_mask(self, n_video: int, device: torch.device) -> Tensor:
        """Rows: state, K actions, value; columns: video tokens, then the same. True = may attend."""
        n_av = self.cfg.num_actions + 2
        mask = torch.ones(n_av, n_video + n_av, dtype=torch.bool, device=device)
        mask[:-1, -1] = False  # only the value token sees the value token
        return mask

    # ---- the trunk -------------------------------------------------------------------------
    def trunk(
        self,
        current: Conditioning,
        future_noisy: Tensor,
        t_video: Tensor,
        text: Tensor,
        state: Tensor | None = None,
        actions_noisy: Tensor | None = None,
        value_noisy: Tensor | None = None,
        t_action: Tensor | None = None,
        with_depth: bool = False,
    ) -> Trunk:
        """One pass. future_noisy (B, V, H, C, h, w): the noisy video target (video_target) at t_video (B,);
        text: raw features (B, L, text_dim).
        Without actions only the video expert runs."""
        cfg = self.cfg
        b, views, frames = future_noisy.shape[0], len(cfg.cameras), cfg.horizon + 1
        h, w = cfg.latent_size
        p_tokens = cfg.tokens_per_frame
        latents = torch.cat([current.latent, future_noisy], dim=2).flatten(0, 1).transpose(1, 2)
        x = self.video.embed(latents).unflatten(0, (b, views))  # (B, V, F * P, D)
        if current.depth_tokens is not None:
            x = torch.cat([x[:, :, :p_tokens] + current.depth_tokens, x[:, :, p_tokens:]], dim=2)
        x = (x + self.view_embed[None, :, None]).flatten(1, 2)
        t_tok = torch.zeros(b, views, frames * p_tokens, device=x.device)
        t_tok[:, :, p_tokens:] = t_video[:, None, None] * TIMESTEP_SCALE
        temb, projection, text_states = self.video.conditions(t_tok.flatten(1), text)
        cos, sin = self.video.rotary(frames, h, w)
        rotary = (cos.repeat(1, views, 1, 1), sin.repeat(1, views, 1, 1))
        xa = mod_a = emb_a = None
        if actions_noisy is not None:
            xa = torch.cat(
                [
                    self.state_in(state)[:, None],
                    self.action_in(actions_noisy),
                    self.value_in(value_noisy[:, None, None]),
                ],
                dim=1,
            )
            xa = xa + torch.cat(
                [self.type_embed[:1], self.type_embed[1:2].expand(cfg.num_actions, -1), self.type_embed[2:]], dim=0
            )
            t_a = t_action[:, None].expand(-1, cfg.num_actions + 2).clone()
            t_a[:, 0] = 0.0  # the state is clean
            emb_a, mod_a = self.action_time(t_a)
            rotary_a = self._action_rotary(x.device)
            mask = self._action_mask(x.shape[1], x.device)
        first_depth = cfg.blocks - cfg.depth_blocks
        main_inputs = []
        for i, block in enumerate(self.video.blocks):
            if with_depth and i >= first_depth:
                main_inputs.append(x)
            mod = self.video.modulation(block, projection)
            q, k, v = self.video.qkv(block, x, mod, rotary)
            if xa is None:
                x = self.video.finish(block, x, self.video.attend(block, q, k, v), mod, text_states)
                continue
            action_block = self.action_blocks[i]
            qa, ka, va = action_block.qkv(xa, mod_a, rotary_a)
            if cfg.video_sees_actions:  # video -> video + state/action (never the value)
                attended = self.video.attend(block, q, torch.cat([k, ka[:, :-1]], 1), torch.cat([v, va[:, :-1]], 1))
            else:
                attended = self.video.attend(block, q, k, v)
            keys, values = torch.cat([k, ka], dim=1), torch.cat([v, va], dim=1)
            action_attended = F.scaled_dot_product_attention(
                qa.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask
            )
            x = self.video.finish(block, x, attended, mod, text_states)
            xa = action_block.finish(xa, action_attended.transpose(1, 2).flatten(2), mod_a, text_states)
        out = self.video.head(x, temb).unflatten(1, (views, -1)).flatten(0, 1)
        velocity = self.video.unpatchify(out, frames, h, w).transpose(1, 2).unflatten(0, (b, views))
        hidden = x.unflatten(1, (views, frames, p_tokens)).mean(dim=3)
        depth = None
        if with_depth and self.depth_head is not None:
            xd = main_inputs[0]
            for depth_block, main_in in zip(self.depth_blocks, main_inputs):
                xd = depth_block(xd, main_in, projection, rotary, text_states)
            cell = cfg.spatial_compression * cfg.patch_size
            pixels = self.depth_head(xd, temb).unflatten(1, (views, frames, p_tokens))
            depth = tokens_to_pixels(pixels, h // cfg.patch_size, w // cfg.patch_size, cell)
        action_x0 = value_x0 = None
        if xa is not None:
            action_x0 = self.action_head(xa[:, 1:-1], emb_a[:, 1:-1])
            value_x0 = self.value_head(xa[:, -1:], emb_a[:, -1:])[:, 0, 0]
        return Trunk(velocity, hidden, action_x0, value_x0, depth)

    def forward(self, batch: dict, stage: str, generator: torch.Generator) -> dict[str, Tensor]:
        """Training losses (see training_losses); forward so that DDP can wrap the model."""
        return training_losses(self, batch, stage, generator)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part; `experts` is the MoT trunk (video + action-value expert). Works on the
        meta device."""

        def count(*modules: nn.Module | None) -> int:
            return sum(p.numel() for m in modules if m is not None for p in m.parameters())

        counts = {
            "video_expert": count(self.video, self.depth_in) + self.view_embed.numel(),
            "action_value_expert": count(
                self.action_blocks,
                self.state_in,
                self.action_in,
                self.value_in,
                self.action_time,
                self.action_head,
                self.value_head,
            )
            + self.type_embed.numel(),
            "depth_branch": count(self.depth_blocks, self.depth_head),
            "vae": count(self.vae),
            "text_encoder": count(self.text_encoder),
            "reactive_expert": count(self.reactive),
            "gate": count(self.gate, self.gate_tokens),
        }
        counts["experts"] = counts["video_expert"] + counts["action_value_expert"]
        counts["total"] = count(self)
        return counts


def x0_to_velocity(x_t: Tensor, x0: Tensor, t: Tensor, t_min: float) -> Tensor:
    """v = (x_t - x0_hat) / t with t clipped at t_min (x_t = (1 - t) x0 + t x1  =>  v = x1 - x0)."""
    t = t.clamp(min=t_min).reshape(-1, *([1] * (x_t.dim() - 1)))
    return (x_t - x0) / t


def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    t = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def sample_ans_times(
    batch: int, p_conditioned: float, beta: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Asynchronous Noise Sampling: with probability p, t_a = 0 and t_O ~ U(0, 1) (action-conditioned
    video); otherwise t_a ~ U(0, 1) and t_O = t_a + (1 - t_a) b with b ~ Beta(beta). Always t_O >= t_a."""
    conditioned = torch.rand(batch, generator=generator) < p_conditioned
    u = torch.rand(batch, generator=generator)
    t_a_free = torch.rand(batch, generator=generator)
    # Beta(a, b) from two Gamma draws (torch.distributions has no generator argument)
    ga = torch._standard_gamma(torch.full((batch,), beta[0]), generator=generator)
    gb = torch._standard_gamma(torch.full((batch,), beta[1]), generator=generator)
    b = ga / (ga + gb)
    t_a = torch.where(conditioned, torch.zeros(batch), t_a_free)
    t_o = torch.where(conditioned, u, t_a_free + (1 - t_a_free) * b)
    return t_o, t_a


def video_loss(velocity: Tensor, noise: Tensor, x0: Tensor) -> Tensor:
    """v-prediction: ||v(z_t) - (z_1 - z_0)||^2."""
    return F.mse_loss(velocity, noise - x0)


def sample_mean(error: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over samples of a per-sample error (B, ...); weight (B,) masks samples."""
    error = error.flatten(1).mean(dim=1)
    if weight is None:
        return error.mean()
    return (error * weight).sum() / weight.sum().clamp(min=1.0)


def x0_loss(x0_hat: Tensor, x0: Tensor, weight: Tensor | None = None) -> Tensor:
    """x0-prediction: ||f(a_t) - a_0||^2, no 1/t^2 weighting; weight masks samples (B,)."""
    return sample_mean((x0_hat - x0).pow(2), weight)


def training_losses(model: WorldActionModel, batch: dict, stage: str, generator: torch.Generator) -> dict[str, Tensor]:
    """Losses per head for one batch. stage "vae": a trainable VAE's reconstruction on the whole
    batch, nothing else; stage "video": video flow and depth (the action-value expert
    does not run), plus the VAE's reconstruction where it is trainable (vae_trainable: tiny random
    VAEs; a pretrained one stays frozen); stage "joint": ANS-coupled video, depth, action and value
    losses, the reactive expert on the predicted future, and the gate (VAE frozen).

    batch (see the module docstring for the frame contract): rgb (B, V, clip_frames, 3, H, W) in
    [-1, 1]; optionally latents (B, V, 1 + H, C, h, w): model.vae.encode(rgb) precomputed, which a
    data side may cache while the VAE is frozen (the encode dominates a tiny model's joint step);
    inverse_depth (B, V, clip_frames, H, W) or None; state (B, S) and actions (B, K, A)
    normalised; value (B,) progress in [0, 1]; gate (B,) labels; imitate (B,) 1 where the actions
    are worth imitating (a successful episode's; absent: all), instruction list. Failed episodes
    still teach the value, the gate and the video: what failing looks like.

    ANS: joint samples draw (t_O, t_a) with the clean-actions branch at cfg.ans_conditioned_probability:
    ans_probability where the video may attend to the actions (video_sees_actions), else 0. Under
    the MV-WAM mask that branch would train an unconditioned video and no action or value, so its
    share goes to ordinary joint samples (t_a ~ U(0, 1), t_O >= t_a)."""
    cfg = model.cfg
    if stage not in ("vae", "video", "joint"):
        raise ValueError(f"stage {stage!r}: expected 'vae', 'video' or 'joint'")
    if stage == "vae" and not cfg.vae_trainable:
        raise ValueError("stage 'vae' trains the VAE, but this config's VAE is frozen (vae_trainable: false)")
    rgb, inv = batch["rgb"], batch.get("inverse_depth")
    if rgb.shape[2] != cfg.clip_frames or (inv is not None and inv.shape[2] != cfg.clip_frames):
        raise ValueError(
            f"the batch has {rgb.shape[2]} frames per view; the model takes clip_frames = 1 + "
            f"{cfg.temporal_compression} * horizon = {cfg.clip_frames} consecutive frames at the action "
            "rate (rgb and inverse_depth)"
        )
    losses: dict[str, Tensor] = {}
    still = None  # video_target "change": still_latents of the present
    # a trainable VAE learns from the first quarter of the batch in stage "video" (the full-resolution
    # convolutions dominate a tiny model's step, and a quarter teaches it about as well), from all of
    # it in stage "vae", where nothing else runs
    if stage == "vae":
        learn = len(rgb)
    else:
        learn = max(1, len(rgb) // 4) if stage == "video" and cfg.vae_trainable and torch.is_grad_enabled() else 0
    # the change target is a small difference of latents: bf16 autocast would round it away (its
    # VAEs are tiny, so fp32 costs little)
    rounds = (
        cfg.video_target == "change"
        and rgb.device.type != "meta"  # meta: the memory plan's trace
        and torch.is_autocast_enabled(rgb.device.type)
    )
    vae_precision = torch.autocast(rgb.device.type, enabled=False) if rounds else contextlib.nullcontext()
    with vae_precision:
        parts = []
        if learn:
            z_learn = model.vae.encode(rgb[:learn])
            losses["reconstruction"] = F.mse_loss(model.vae.decode(z_learn), rgb[:learn])
            # the flow's noise is N(0, I): keep the latents at that scale without pulling them towards
            # a constant (a per-element KL would favour latents that barely change over time)
            losses["latent_scale"] = z_learn.mean().pow(2) + (z_learn.std() - 1).pow(2)
            if stage == "vae":
                return losses
            parts.append(z_learn.detach())  # the flow learns on the latents, it does not reshape them
        if "latents" in batch and not learn:  # the frozen VAE's latents, precomputed (cached) by the data side
            parts.append(batch["latents"])
        elif learn < len(rgb):
            with torch.no_grad():
                parts.append(model.vae.encode(rgb[learn:]))
        if cfg.video_target == "change":
            with torch.no_grad():
                still = model.still_latents(rgb[:, :, 0])
    z = torch.cat(parts)
    b, device = len(rgb), rgb.device
    if stage == "video":
        t_o, t_a = torch.rand(b, generator=generator), None
    else:
        t_o, t_a = sample_ans_times(b, cfg.ans_conditioned_probability, cfg.ans_beta, generator)
    t_o = t_o.to(device)
    if still is not None and torch.is_grad_enabled():
        model.track_change_scale(z, still)
    z0 = model.video_target(z, still)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    z_t = add_noise(z0, noise, t_o)
    key_inv = None if inv is None else inv[:, :, :: cfg.temporal_compression]  # the latent frames' last raw frames
    current = model.conditioning(z[:, :, :1], key_inv[:, :, 0] if key_inv is not None and cfg.use_depth_input else None)
    text = model.text_features(batch["instruction"])
    with_depth = key_inv is not None and cfg.depth_blocks > 0
    if stage == "joint":
        t_a = t_a.to(device)
        a0, v0 = batch["actions"], batch["value"] * 2 - 1
        a_t = add_noise(a0, torch.randn(a0.shape, generator=generator).to(device), t_a)
        v_t = add_noise(v0, torch.randn(v0.shape, generator=generator).to(device), t_a)
        out = model.trunk(current, z_t, t_o, text, batch["state"], a_t, v_t, t_a, with_depth=with_depth)
    else:
        out = model.trunk(current, z_t, t_o, text, with_depth=with_depth)
    losses["video"] = video_loss(out.video_velocity[:, :, 1:], noise, z0)
    if with_depth:
        valid = (key_inv > 0).float()
        losses["depth"] = ((out.inverse_depth - key_inv).pow(2) * valid).sum() / valid.sum().clamp(min=1.0)
    if stage == "joint":
        denoised = (t_a > 0).float()  # t_a = 0: clean actions condition the video, nothing to denoise
        imitate = batch.get("imitate", torch.ones(b, device=device))
        losses["action"] = x0_loss(out.action_x0, a0, denoised * imitate)
        losses["value"] = x0_loss(out.value_x0[:, None], v0[:, None], denoised)
        target_hat = (z_t - t_o.reshape(-1, 1, 1, 1, 1, 1) * out.video_velocity[:, :, 1:]).detach()
        future_hat = model.future_latents(still, target_hat)
        reactive = model.reactive(
            torch.cat([z[:, :, :1], future_hat], dim=2), out.video_hidden.detach(), batch["state"]
        )
        losses["reactive"] = sample_mean(F.smooth_l1_loss(reactive, a0, reduction="none"), imitate)
        losses["gate"] = F.binary_cross_entropy_with_logits(model.gate_logit(current, text), batch["gate"])
    return losses
