"""The Wan Video Expert and VAE: faithfulness to diffusers, loading a prior, the depth copies, the
ANS/mask decision, and the refusal of checkpoints of the retired architecture."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from support.model_data import TASK, synthetic_dataset, tiny_config
from wam_ros.model.policy import CheckpointError, load_policy
from wam_ros.model.train import WindowDataset
from wam_ros.model.wam import WorldActionModel, training_losses
from wam_ros.model.wan import TIMESTEP_SCALE, PriorError, WanVideoExpert


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (zero-initialised outputs would hide whole computations)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


WAN21 = dict(vae_layout="wan2.1", image_size=[32, 32])  # 8x VAE: 4 x 4 latents, 2 x 2 tokens per frame
TI2V = dict(vae_layout="wan2.2", image_size=[64, 64], latent_channels=6)  # 16x VAE (48 channels at full size)


@pytest.mark.parametrize("layout", [WAN21, TI2V], ids=["wan2.1", "wan2.2-ti2v"])
@torch.no_grad()
def test_video_expert_reproduces_diffusers_wan_bit_for_bit(layout):
    cfg = tiny_config(**layout)
    expert = WanVideoExpert(cfg).eval()
    randomise(expert)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, cfg.latent_channels, 3, *cfg.latent_size, generator=g)
    text = torch.randn(2, 5, cfg.text_dim, generator=g)
    if layout is TI2V:
        # Wan2.2-TI2V's per-token timesteps (diffusers' expand_timesteps): the conditioning frame at 0
        timestep = torch.full((2, 3 * cfg.tokens_per_frame), 640.0)
        timestep[:, : cfg.tokens_per_frame] = 0.0
    else:
        timestep = torch.tensor([250.0, 900.0])
    reference = expert.transformer(latents, timestep, text, return_dict=False)[0]
    assert torch.equal(expert(latents, timestep, text), reference)
    assert reference.abs().mean() > 0.1  # a real computation, not zeros


@torch.no_grad()
def test_the_trunk_runs_wan_on_the_video_tokens():
    """One view, no depth input: the MoT trunk's video velocity is Wan's forward with per-token
    timesteps (conditioning frame at 0), bit for bit, with or without the action-value expert."""
    cfg = tiny_config(cameras=["head"], use_depth_input=False, depth_blocks=0)
    model = WorldActionModel(cfg).eval()
    randomise(model)
    with torch.no_grad():
        model.view_embed.zero_()  # as initialised: a loaded prior is not disturbed
    model.text_encoder.register([TASK])
    g = torch.Generator().manual_seed(2)
    frames = cfg.horizon + 1
    latents = torch.randn(2, 1, frames, cfg.latent_channels, *cfg.latent_size, generator=g)
    t = torch.tensor([0.3, 0.8])
    text = model.text_features([TASK, TASK])
    current = model.conditioning(latents[:, :, :1], None)
    video_only = model.trunk(current, latents[:, :, 1:], t, text)
    b, p = 2, cfg.tokens_per_frame
    timestep = torch.cat([torch.zeros(b, p), (t[:, None] * TIMESTEP_SCALE).expand(b, (frames - 1) * p)], dim=1)
    reference = model.video.transformer(latents[:, 0].transpose(1, 2), timestep, text, return_dict=False)[0]
    assert torch.equal(video_only.video_velocity[:, 0], reference.transpose(1, 2))
    joint = model.trunk(
        current,
        latents[:, :, 1:],
        t,
        text,
        torch.randn(b, cfg.state_dim, generator=g),
        torch.randn(b, cfg.num_actions, cfg.action_dim, generator=g),
        torch.randn(b, generator=g),
        torch.tensor([0.2, 0.5]),
    )
    assert torch.equal(joint.video_velocity, video_only.video_velocity)  # video never sees the actions


def _save_prior(cfg, directory):
    """A tiny random Wan 'prior' as diffusers writes it: transformer/ and vae/ subfolders."""
    prior = WorldActionModel(cfg)
    randomise(prior.video, 3)
    randomise(prior.vae, 4)
    prior.video.transformer.save_pretrained(directory / "transformer")
    prior.vae.vae.register_to_config(latents_mean=[0.5] * cfg.latent_channels, latents_std=[2.0] * cfg.latent_channels)
    prior.vae.vae.save_pretrained(directory / "vae")
    return prior


def test_a_wan_prior_loads_from_a_diffusers_directory_and_from_single_files(tmp_path):
    cfg = tiny_config()
    prior = _save_prior(cfg, tmp_path)
    model = WorldActionModel.from_wan(cfg, tmp_path)
    for name, value in prior.video.transformer.state_dict().items():
        assert torch.equal(model.video.transformer.state_dict()[name], value), name
    for name, value in prior.vae.vae.state_dict().items():
        assert torch.equal(model.vae.vae.state_dict()[name], value), name
    assert torch.equal(model.vae.latents_mean, torch.full((cfg.latent_channels,), 0.5))  # the VAE's statistics
    assert torch.equal(model.vae.latents_std, torch.full((cfg.latent_channels,), 2.0))
    # the depth branch is copied from the loaded blocks, not from the random ones it was built with
    first = cfg.blocks - cfg.depth_blocks
    for depth, source in zip(model.depth_blocks, model.video.blocks[first:]):
        for name, value in source.state_dict().items():
            assert torch.equal(depth.block.state_dict()[name], value), name
    assert torch.equal(model.view_embed, torch.zeros_like(model.view_embed))

    # single files: the transformer's state dict in diffusers' layout, the VAE's likewise
    save_file(prior.video.transformer.state_dict(), str(tmp_path / "wan.safetensors"))
    save_file(prior.vae.vae.state_dict(), str(tmp_path / "vae.safetensors"))
    single = WorldActionModel.from_wan(cfg, tmp_path / "wan.safetensors", tmp_path / "vae.safetensors")
    for name, value in prior.video.transformer.state_dict().items():
        assert torch.equal(single.video.transformer.state_dict()[name], value), name
    assert torch.equal(single.depth_blocks[0].block.attn1.to_q.weight, prior.video.blocks[first].attn1.to_q.weight)


def test_a_prior_of_other_shapes_is_refused(tmp_path):
    _save_prior(tiny_config(), tmp_path)
    with pytest.raises(PriorError, match="num_layers"):
        WorldActionModel.from_wan(tiny_config(blocks=3), tmp_path)
    with pytest.raises(PriorError, match="no Wan transformer"):
        WorldActionModel.from_wan(tiny_config(), tmp_path / "missing")


def _joint_batch(cfg):
    meta, episodes = synthetic_dataset(cfg, episodes=2)
    dataset = WindowDataset(episodes, meta, cfg)
    return dataset.batch([0, 5, 11, 17])


@pytest.mark.parametrize("video_sees_actions", [False, True])
def test_ans_clean_action_branch_only_where_the_video_sees_the_actions(video_sees_actions):
    """Under the MV-WAM mask the clean-actions branch has probability 0 (it could teach nothing);
    where the video may attend to the actions, that branch's video loss trains the action expert."""
    cfg = tiny_config(video_sees_actions=video_sees_actions, ans_probability=1.0)
    assert cfg.ans_conditioned_probability == (1.0 if video_sees_actions else 0.0)
    torch.manual_seed(0)
    model = WorldActionModel(cfg)
    model.text_encoder.register([TASK])
    batch = _joint_batch(cfg)
    losses = training_losses(model, batch, "joint", torch.Generator().manual_seed(0))
    if not video_sees_actions:
        assert losses["action"] > 0 and losses["value"] > 0  # ordinary joint samples: t_a > 0
        return
    assert losses["action"] == 0 and losses["value"] == 0  # every sample has clean actions (t_a = 0) ...
    losses["video"].backward()  # ... and the video loss reaches the action expert through the attention
    assert model.action_in.weight.grad.abs().sum() > 0
    assert model.action_blocks[0].qkv_proj.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_with_video_sees_actions_the_video_depends_on_the_actions_but_not_the_value():
    cfg = tiny_config(video_sees_actions=True)
    model = WorldActionModel(cfg).eval()
    model.text_encoder.register([TASK])
    batch = _joint_batch(cfg)
    z = model.vae.encode(batch["rgb"])
    current = model.conditioning(z[:, :, :1], batch["inverse_depth"][:, :, 0])
    text = model.text_features(batch["instruction"])
    b = len(z)
    args = [
        current,
        z[:, :, 1:],
        torch.full((b,), 0.5),
        text,
        batch["state"],
        batch["actions"],
        torch.zeros(b),
        torch.zeros(b),
    ]
    base = model.trunk(*args)
    moved = model.trunk(*args[:5], batch["actions"] + 1.0, *args[6:])
    assert not torch.allclose(base.video_velocity, moved.video_velocity)
    other_value = model.trunk(*args[:6], torch.ones(b), args[7])
    assert torch.equal(base.video_velocity, other_value.video_velocity)


def test_checkpoints_of_the_old_architecture_are_refused_with_a_retrain_message(tmp_path):
    """A checkpoint as the retired own-autoencoder/DiT code wrote it (format 1, its config fields,
    its state-dict names)."""
    old_config = {**tiny_config().to_dict(), "autoencoder_width": 8}
    for name in (
        "vae_layout",
        "vae_base_dim",
        "vae_decoder_base_dim",
        "vae_res_blocks",
        "vae_trainable",
        "video_sees_actions",
    ):
        old_config.pop(name)
    state = {
        "autoencoder.encoder.0.conv.weight": torch.zeros(8, 3, 3, 3, 3),
        "layers.0.video.qkv.weight": torch.zeros(96, 32),
        "patch_in.weight": torch.zeros(32, 16),
    }
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "config": old_config, "model": state, "normalization": {}, "meta": {}}, path)
    with pytest.raises(CheckpointError, match="retired architecture.*retrain") as error:
        load_policy(path)
    assert "\n" not in str(error.value)
