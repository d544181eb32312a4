"""The World Action Model network: tokens, the MoT trunk, heads, losses and one denoising pass.

Token layout of one sample:
    video   V views x (1 + H) latent frames x P patches: frame 0 is the clean conditioning
            frame, frames 1..H are the noisy future (v-prediction)
    state   1 token (clean)
    action  K = actions_per_frame * H tokens (x0-prediction)
    value   1 token (x0-prediction)
RoPE positions are (time, row, col): video frame f at time f, action k at time k / 4 (4 actions
per latent frame, the action expert's temporal scale), state and value at time 0.
Flow convention: x_t = (1 - t) x_0 + t x_1 with x_1 ~ N(0, I), t in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wam_ros.model.autoencoder import VideoAutoencoder
from wam_ros.model.config import ModelConfig
from wam_ros.model.layers import DepthBlock, MoTLayer, OutputHead, Rope3d, TimestepEmbedding
from wam_ros.model.text import make_text_encoder

MIN_DEPTH_M = 0.1  # inverse depth targets are clipped at 10 m^-1
GATE_TOKEN_FEATURES = 8


def inverse_depth(depth_m: Tensor) -> Tensor:
    """Metres -> inverse depth; invalid (0) stays 0."""
    return torch.where(depth_m > 0, 1.0 / depth_m.clamp(min=MIN_DEPTH_M), torch.zeros_like(depth_m))


@dataclass
class Trunk:
    """Outputs of one pass through the trunk."""

    video_velocity: Tensor  # (B, V, F, C, h, w) v-prediction for every video token
    video_hidden: Tensor  # (B, V, F, D) final hidden states pooled per view and frame
    action_x0: Tensor | None  # (B, K, A)
    value_x0: Tensor | None  # (B,) in [-1, 1] (progress 0..1 mapped)
    inverse_depth: Tensor | None  # (B, V, F, H, W)


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
        layer = nn.TransformerDecoderLayer(width, nhead=4, dim_feedforward=4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.reactive_layers)
        self.out = nn.Linear(width, cfg.action_dim)

    def forward(self, latents: Tensor, hidden: Tensor, state: Tensor) -> Tensor:
        memory = self.latent_in(latents.flatten(3).flatten(1, 2)) + self.hidden_in(hidden.flatten(1, 2))
        memory = torch.cat([memory + self.frame_embed, self.state_in(state)[:, None]], dim=1)
        queries = self.queries.expand(len(state), -1, -1)
        return self.out(self.decoder(queries, memory))


class WorldActionModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, da, p = cfg.video.width, cfg.action.width, cfg.patch_size
        views, frames = len(cfg.cameras), cfg.horizon + 1
        self.autoencoder = VideoAutoencoder(cfg.latent_channels, cfg.autoencoder_width)
        self.text_encoder = make_text_encoder(cfg)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        # video expert
        self.patch_in = nn.Linear(cfg.latent_channels * p * p, d)
        self.depth_in = nn.Linear((8 * p) ** 2, d) if cfg.use_depth_input else None
        self.view_embed = nn.Parameter(torch.randn(views, d) * 0.02)
        self.video_time = TimestepEmbedding(d)
        # action-value expert
        self.state_in = nn.Linear(cfg.state_dim, da)
        self.action_in = nn.Linear(cfg.action_dim, da)
        self.value_in = nn.Linear(1, da)
        self.type_embed = nn.Parameter(torch.randn(3, da) * 0.02)
        self.action_time = TimestepEmbedding(da)
        self.layers = nn.ModuleList(MoTLayer(d, cfg.video.ffn, da, cfg.action.ffn, cfg.heads) for _ in range(cfg.blocks))
        self.video_head = OutputHead(d, cfg.latent_channels * p * p)
        self.action_head = OutputHead(da, cfg.action_dim)
        self.value_head = OutputHead(da, 1)
        # depth branch: replicas of the last M video blocks
        first = cfg.blocks - cfg.depth_blocks
        self.depth_blocks = nn.ModuleList(DepthBlock(layer.video, d, cfg.heads) for layer in self.layers[first:])
        self.depth_head = OutputHead(d, (8 * p) ** 2) if cfg.depth_blocks else None
        # gate and reactive expert
        # the gate keeps where things are: a narrow per-token projection, flattened (mean pooling
        # would discard the positions that tell contact from transit)
        self.gate_tokens = nn.Linear(d, GATE_TOKEN_FEATURES)
        self.gate = nn.Sequential(nn.Linear(views * cfg.tokens_per_frame * GATE_TOKEN_FEATURES + d, cfg.gate_hidden),
                                  nn.SiLU(), nn.Linear(cfg.gate_hidden, 1))
        self.reactive = ReactiveExpert(cfg)
        self._build_positions(views, frames)

    # ---- positions and masks -------------------------------------------------------------
    def _build_positions(self, views: int, frames: int) -> None:
        cfg = self.cfg
        hp, wp = (n // cfg.patch_size for n in cfg.latent_size)
        f, r, c = torch.meshgrid(torch.arange(frames), torch.arange(hp), torch.arange(wp), indexing="ij")
        video = torch.stack([f, r, c], dim=-1).reshape(1, -1, 3).expand(views, -1, -1).reshape(-1, 3).float()
        k = cfg.num_actions
        action_time = torch.cat([torch.zeros(1), torch.arange(k) / cfg.actions_per_frame, torch.zeros(1)])
        action = torch.stack([action_time, torch.zeros(k + 2), torch.zeros(k + 2)], dim=-1)
        rope = Rope3d(cfg.video.width // cfg.heads)
        for name, positions in (("video", video), ("action", action)):
            cos, sin = rope.angles(positions)
            self.register_buffer(f"{name}_cos", cos, persistent=False)
            self.register_buffer(f"{name}_sin", sin, persistent=False)
        # state/action rows see video + state/action; the value row sees everything
        n_video, n_av = len(video), k + 2
        mask = torch.ones(n_av, n_video + n_av, dtype=torch.bool)
        mask[:-1, -1] = False
        self.register_buffer("action_mask", mask, persistent=False)

    # ---- tokens ----------------------------------------------------------------------------
    def patchify(self, z: Tensor) -> Tensor:
        """(B, V, F, C, h, w) -> (B, V*F*P, C*p*p)."""
        p = self.cfg.patch_size
        b, v, f, c, h, w = z.shape
        z = z.reshape(b, v, f, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return z.reshape(b, v * f * (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: Tensor, frames: int, channels: int, cell: int) -> Tensor:
        """(B, V*F*P, channels*cell*cell) -> (B, V, F, channels, hp*cell, wp*cell)."""
        hp, wp = (n // self.cfg.patch_size for n in self.cfg.latent_size)
        b = tokens.shape[0]
        x = tokens.reshape(b, len(self.cfg.cameras), frames, hp, wp, channels, cell, cell)
        return x.permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(b, len(self.cfg.cameras), frames, channels, hp * cell, wp * cell)

    def text_features(self, instructions: list[str]) -> Tensor:
        return self.text_proj(self.text_encoder(instructions))

    def current_tokens(self, current_latent: Tensor, current_inverse_depth: Tensor | None) -> Tensor:
        """Embedded conditioning-frame tokens (B, V*P, D), view embedding included."""
        x = self.patch_in(self.patchify(current_latent))
        if self.depth_in is not None:
            if current_inverse_depth is None:
                raise ValueError("this model takes depth input: current_inverse_depth is required")
            cell = 8 * self.cfg.patch_size
            d = current_inverse_depth[:, :, None, None]  # (B, V, 1, 1, H, W)
            hp, wp = (n // self.cfg.patch_size for n in self.cfg.latent_size)
            d = d.reshape(d.shape[0], d.shape[1], 1, 1, hp, cell, wp, cell).permute(0, 1, 2, 4, 6, 3, 5, 7)
            x = x + self.depth_in(d.reshape(d.shape[0], -1, cell * cell))
        return x + self.view_embed.repeat_interleave(self.cfg.tokens_per_frame, dim=0)

    def gate_logit(self, current: Tensor, text: Tensor) -> Tensor:
        """p(interaction) logit from the current visual tokens and the instruction."""
        features = self.gate_tokens(current).flatten(1)
        return self.gate(torch.cat([features, text.mean(dim=1)], dim=-1)).squeeze(-1)

    # ---- the trunk -------------------------------------------------------------------------
    def trunk(self, current: Tensor, future_noisy: Tensor, t_video: Tensor, text: Tensor,
              state: Tensor | None = None, actions_noisy: Tensor | None = None, value_noisy: Tensor | None = None,
              t_action: Tensor | None = None, with_depth: bool = False) -> Trunk:
        """One pass. current: embedded conditioning tokens (B, V*P, D); future_noisy: (B, V, H, C, h, w)
        at t_video (B,). Without actions only the video expert runs (identical video outputs)."""
        cfg = self.cfg
        b, views, frames = current.shape[0], len(cfg.cameras), cfg.horizon + 1
        p_tokens = cfg.tokens_per_frame
        future = self.patch_in(self.patchify(future_noisy)).unflatten(1, (views, -1))
        future = future + self.view_embed[None, :, None]
        xv = torch.cat([current.unflatten(1, (views, p_tokens)), future], dim=2).flatten(1, 2)
        t_tok = torch.zeros(b, views, frames * p_tokens, device=current.device)
        t_tok[:, :, p_tokens:] = t_video[:, None, None]
        emb_v, mod_v = self.video_time(t_tok.flatten(1))
        rope_v = (self.video_cos, self.video_sin)
        xa = mod_a = emb_a = None
        if actions_noisy is not None:
            xa = torch.cat([self.state_in(state)[:, None], self.action_in(actions_noisy),
                            self.value_in(value_noisy[:, None, None])], dim=1)
            xa = xa + torch.cat([self.type_embed[:1], self.type_embed[1:2].expand(cfg.num_actions, -1),
                                 self.type_embed[2:]], dim=0)
            t_a = t_action[:, None].expand(-1, cfg.num_actions + 2).clone()
            t_a[:, 0] = 0.0  # the state is clean
            emb_a, mod_a = self.action_time(t_a)
        first_depth = cfg.blocks - cfg.depth_blocks
        main_inputs = []
        for i, layer in enumerate(self.layers):
            if with_depth and i >= first_depth:
                main_inputs.append(xv)
            xv, xa = layer(xv, mod_v, rope_v, text, xa, mod_a, (self.action_cos, self.action_sin), self.action_mask)
        velocity = self.unpatchify(self.video_head(xv, emb_v), frames, cfg.latent_channels, cfg.patch_size)
        hidden = xv.unflatten(1, (views, frames, p_tokens)).mean(dim=3)
        depth = None
        if with_depth and self.depth_head is not None:
            xd = main_inputs[0]
            for block, main_in in zip(self.depth_blocks, main_inputs):
                xd = block(xd, main_in, mod_v, rope_v, text)
            cell = 8 * cfg.patch_size
            depth = self.unpatchify(self.depth_head(xd, emb_v), frames, 1, cell)[:, :, :, 0]
        action_x0 = value_x0 = None
        if xa is not None:
            action_x0 = self.action_head(xa[:, 1:-1], emb_a[:, 1:-1])
            value_x0 = self.value_head(xa[:, -1:], emb_a[:, -1:])[:, 0, 0]
        return Trunk(velocity, hidden, action_x0, value_x0, depth)

    def forward(self, batch: dict, stage: str, generator: torch.Generator) -> dict[str, Tensor]:
        """Training losses (see training_losses); forward so that DDP can wrap the model."""
        return training_losses(self, batch, stage, generator)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part; `experts` is the MoT trunk (video + action-value expert)."""
        def count(*modules: nn.Module) -> int:
            return sum(p.numel() for m in modules for p in m.parameters())

        video = sum(count(layer.video) for layer in self.layers)
        action = sum(count(layer.action) for layer in self.layers)
        counts = {
            "video_expert": video + count(self.patch_in, self.video_time, self.video_head, self.text_proj)
            + self.view_embed.numel() + (count(self.depth_in) if self.depth_in is not None else 0),
            "action_value_expert": action + count(self.state_in, self.action_in, self.value_in, self.action_time,
                                                  self.action_head, self.value_head) + self.type_embed.numel(),
            "depth_branch": count(self.depth_blocks) + (count(self.depth_head) if self.depth_head is not None else 0),
            "autoencoder": count(self.autoencoder),
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


def sample_ans_times(batch: int, p_conditioned: float, beta: tuple[float, float],
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
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
    """Losses per head for one batch. stage "video": autoencoder reconstruction, video flow and depth
    (the action-value expert does not run); stage "joint": ANS-coupled video, depth, action and value
    losses, the reactive expert on the predicted future, and the gate (autoencoder frozen).

    batch: rgb (B, V, F, 3, H, W) in [-1, 1]; inverse_depth (B, V, F, H, W) or None; state (B, S) and
    actions (B, K, A) normalised; value (B,) progress in [0, 1]; gate (B,) labels; imitate (B,) 1 where
    the actions are worth imitating (a successful episode's; absent: all), instruction list. Failed
    episodes still teach the value, the gate and the video: what failing looks like."""
    cfg = model.cfg
    rgb, inv = batch["rgb"], batch.get("inverse_depth")
    losses: dict[str, Tensor] = {}
    if stage == "video":
        z = model.autoencoder.encode(rgb)
        losses["reconstruction"] = F.mse_loss(model.autoencoder.decode(z), rgb)
        z = z.detach()  # the flow learns on the latents, it does not reshape them
    elif stage == "joint":
        with torch.no_grad():
            z = model.autoencoder.encode(rgb)
    else:
        raise ValueError(f"stage {stage!r}: expected 'video' or 'joint'")
    b, device = len(rgb), rgb.device
    if stage == "video":
        t_o, t_a = torch.rand(b, generator=generator), None
    else:
        t_o, t_a = sample_ans_times(b, cfg.ans_probability, cfg.ans_beta, generator)
    t_o = t_o.to(device)
    z0 = z[:, :, 1:]
    noise = torch.randn(z0.shape, generator=generator).to(device)
    z_t = add_noise(z0, noise, t_o)
    current = model.current_tokens(z[:, :, :1], inv[:, :, 0] if inv is not None and cfg.use_depth_input else None)
    text = model.text_features(batch["instruction"])
    with_depth = inv is not None and cfg.depth_blocks > 0
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
        valid = (inv > 0).float()
        losses["depth"] = ((out.inverse_depth - inv).pow(2) * valid).sum() / valid.sum().clamp(min=1.0)
    if stage == "joint":
        denoised = (t_a > 0).float()  # t_a = 0 samples condition the video on clean actions: nothing to learn there
        imitate = batch.get("imitate", torch.ones(b, device=device))
        losses["action"] = x0_loss(out.action_x0, a0, denoised * imitate)
        losses["value"] = x0_loss(out.value_x0[:, None], v0[:, None], denoised)
        future_hat = (z_t - t_o.reshape(-1, 1, 1, 1, 1, 1) * out.video_velocity[:, :, 1:]).detach()
        reactive = model.reactive(torch.cat([z[:, :, :1], future_hat], dim=2), out.video_hidden.detach(),
                                  batch["state"])
        losses["reactive"] = sample_mean(F.smooth_l1_loss(reactive, a0, reduction="none"), imitate)
        losses["gate"] = F.binary_cross_entropy_with_logits(model.gate_logit(current, text), batch["gate"])
    return losses
