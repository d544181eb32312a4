"""Model configuration: dataclasses, the `small` / `paper` presets and YAML loading (no torch).

A config names everything the network's shapes depend on. Presets live in
`config/model/<name>.yaml`; any YAML file with the same fields (a subset overrides `base`)
gives a config in between.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from wam_ros.config import ConfigError
from wam_ros.paths import share_dir

ACTION_SPACES = ("joint_position", "joint_delta", "ee_delta")
REWARDS = ("success", "stages")
TEXT_ENCODERS = ("task_table", "precomputed", "umt5")
SAMPLERS = ("euler", "unipc")
VAE_LAYOUTS = ("wan2.1", "wan2.2")
VIDEO_TARGETS = ("latent", "change")


def choice_problems(**fields: tuple[str, tuple[str, ...]]) -> list[str]:
    """One message per field whose value is not among its choices: field=(value, choices)."""
    return [
        f"{name} {value!r}: expected one of {choices}"
        for name, (value, choices) in fields.items()
        if value not in choices
    ]


@dataclass
class ExpertConfig:
    """One transformer expert of the Mixture-of-Transformers."""

    width: int
    ffn: int  # hidden size of the feed-forward layer


@dataclass
class ModelConfig:
    # observation
    cameras: tuple[str, ...] = ("head", "left_wrist", "right_wrist")
    image_size: tuple[int, int] = (64, 64)  # (height, width) the model sees
    use_depth_input: bool = True
    state_dim: int = 14
    action_dim: int = 14
    action_space: str = "joint_position"
    # future: H latent frames per view, K = actions_per_frame * H actions. One latent frame spans
    # temporal_compression raw frames, so actions_per_frame must equal it (validated).
    horizon: int = 4
    actions_per_frame: int = 4
    # video VAE: diffusers' AutoencoderKLWan, causal in time (4x). "wan2.1": 8x spatial (Wan2.1,
    # z 16); "wan2.2": 16x spatial through a 2x2 pixel patchify and residual blocks (Wan2.2-TI2V, z 48)
    vae_layout: str = "wan2.1"
    latent_channels: int = 16
    vae_base_dim: int = 96
    vae_decoder_base_dim: int = 0  # 0: the same as vae_base_dim (Wan2.2-TI2V's decoder is wider: 256)
    vae_res_blocks: int = 2
    vae_trainable: bool = False  # a tiny random VAE learns in stage 1; a pretrained one stays frozen
    # What the video flow denoises. "latent": the future latents themselves (what a pretrained Wan
    # was trained on). "change": the future latents minus the still latents (the present frame
    # repeated over the clip, WorldActionModel.still_latents), at unit scale (change_scale): a tiny
    # VAE's latents barely vary over time, so next to their own scale the motion is smaller than a
    # sampler's error and "latent" predicts that nothing moves.
    video_target: str = "latent"
    patch_size: int = 2  # latent cells per token side (the Wan transformer's (1, p, p) patches)
    # Mixture-of-Transformers: the Video Expert is a diffusers WanTransformer3DModel (blocks x
    # video.width, heads of width/heads); the action-value expert is narrower and is projected
    # into the shared attention
    blocks: int = 4
    heads: int = 4
    video: ExpertConfig = field(default_factory=lambda: ExpertConfig(width=128, ffn=512))
    action: ExpertConfig = field(default_factory=lambda: ExpertConfig(width=64, ffn=256))
    depth_blocks: int = 2  # the last M blocks replicated as the depth branch (0: none)
    # Cross-modality mask. False (MV-WAM): video attends to video only, so video outputs never
    # depend on the actions. True (X-WAM's action-conditioned world model): video also attends to
    # the state and action tokens. ANS's "clean actions, noisy video" branch only teaches something
    # when True (see ans_conditioned_probability).
    video_sees_actions: bool = False
    # language
    text_encoder: str = "task_table"
    text_dim: int = 64
    text_tokens: int = 1
    max_tasks: int = 64
    text_embeddings: str = ""  # file for text_encoder=precomputed; for umt5 an optional feature cache
    text_encoder_path: str = ""  # umt5: a local UMT5EncoderModel + tokenizer (or a Wan diffusers) directory
    # reactive expert (inverse dynamics) and gate
    reactive_width: int = 128
    reactive_layers: int = 2
    gate_hidden: int = 64
    gate_threshold: float = 0.5
    gate_window: int = 20  # frames either side of a gripper open<->close event
    gate_height: float | None = None  # optional end-effector height cue (m): below it = interaction
    # value
    gamma: float = 0.99
    reward: str = "success"
    # sampling: ANS with T_a action steps inside T_O video steps
    action_steps: int = 5
    video_steps: int = 25
    ans_probability: float = 0.5  # share of training samples with clean actions (action-conditioned video),
    # used only where the mask lets the video see the actions (ans_conditioned_probability)
    ans_beta: tuple[float, float] = (1.5, 1.0)
    t_min: float = 0.02  # x0 -> velocity is clipped at this t
    sampler: str = "euler"  # or "unipc" (diffusers UniPCMultistepScheduler, flow prediction)
    flow_shift: float = 1.0  # Wan's time shift of the video grid (1: linear; Wan uses 3-5)
    action_flow_shift: float = 1.0  # the action/value grid's; <= flow_shift keeps t_a <= t_O as in training

    @property
    def num_actions(self) -> int:
        return self.horizon * self.actions_per_frame

    @property
    def spatial_compression(self) -> int:
        return 16 if self.vae_layout == "wan2.2" else 8

    @property
    def temporal_compression(self) -> int:
        """Raw frames per latent frame after the first (both Wan VAE layouts: 4)."""
        return 4

    @property
    def clip_frames(self) -> int:
        """Raw frames a training window carries per view: the conditioning frame and 4H future ones,
        consecutive at the action rate (frame k+1 follows action k)."""
        return 1 + self.temporal_compression * self.horizon

    @property
    def latent_size(self) -> tuple[int, int]:
        s = self.spatial_compression
        return self.image_size[0] // s, self.image_size[1] // s

    @property
    def ans_conditioned_probability(self) -> float:
        """Share of joint training samples drawn from ANS's clean-actions branch (t_a = 0). Under
        the MV-WAM mask the video cannot see the actions, so that branch would give the video an
        unconditioned sample and the actions nothing to learn: its share goes to ordinary joint samples."""
        return self.ans_probability if self.video_sees_actions else 0.0

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_size
        return (h // self.patch_size) * (w // self.patch_size)

    def validate(self) -> "ModelConfig":
        problems = []
        h, w = self.image_size
        cell = self.spatial_compression * self.patch_size
        if h % cell or w % cell:
            problems.append(
                f"image_size {self.image_size} must be a multiple of {self.spatial_compression} * patch_size = {cell}"
            )
        problems += choice_problems(
            vae_layout=(self.vae_layout, VAE_LAYOUTS),
            action_space=(self.action_space, ACTION_SPACES),
            reward=(self.reward, REWARDS),
            text_encoder=(self.text_encoder, TEXT_ENCODERS),
            sampler=(self.sampler, SAMPLERS),
            video_target=(self.video_target, VIDEO_TARGETS),
        )
        if self.actions_per_frame != self.temporal_compression:
            problems.append(
                f"actions_per_frame {self.actions_per_frame} must equal the VAE's temporal compression "
                f"{self.temporal_compression} (one latent frame spans that many frames and actions)"
            )
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            problems.append(f"cameras must be distinct names, got {list(self.cameras)}")
        if self.text_encoder == "precomputed" and not self.text_embeddings:
            problems.append("text_encoder=precomputed needs text_embeddings: a local file")
        if self.text_encoder == "umt5" and not self.text_encoder_path:
            problems.append("text_encoder=umt5 needs text_encoder_path: a local directory")
        if not 0 < self.action_flow_shift <= self.flow_shift:
            problems.append(
                f"action_flow_shift {self.action_flow_shift} must be within (0, flow_shift="
                f"{self.flow_shift}]: ANS trains with t_a <= t_O"
            )
        if self.video.width % self.heads or (self.video.width // self.heads) % 2:
            problems.append(f"video width {self.video.width} must split into {self.heads} heads of even size")
        if not 0 <= self.depth_blocks <= self.blocks:
            problems.append(f"depth_blocks {self.depth_blocks} must be within 0..blocks={self.blocks}")
        if not 1 <= self.action_steps <= self.video_steps:
            problems.append(f"action_steps {self.action_steps} must be within 1..video_steps={self.video_steps}")
        if problems:
            raise ConfigError("model config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"model config: unknown fields {unknown}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("video", "action"):
                value = value if isinstance(value, ExpertConfig) else ExpertConfig(**value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs).validate()


def model_config_dir() -> Path:
    return share_dir() / "config" / "model"


def load_model_config(name_or_path: str | Path, **overrides: Any) -> ModelConfig:
    """A preset name (`small`, `paper`) or a YAML path; `base: <preset>` in a file inherits from it."""
    path = Path(name_or_path)
    if not path.suffix:
        path = model_config_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in model_config_dir().glob("*.yaml"))
        raise ConfigError(f"model config {name_or_path!r}: no such file (presets: {presets})")
    values = yaml.safe_load(path.read_text()) or {}
    base = values.pop("base", None)
    if base:  # a sibling file first, so a directory of configs travels together
        sibling = path.with_name(f"{base}.yaml")
        merged = load_model_config(sibling if sibling.is_file() else base).to_dict()
    else:
        merged = {}
    for key, value in {**values, **overrides}.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return ModelConfig.from_dict(merged)
