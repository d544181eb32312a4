"""The World Action Model's mechanisms, each on its own (no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.model_data import TASK, observation, synthetic_dataset, tiny_config
from wam_ros.config import ConfigError, gripper_columns, load_robot_config
from wam_ros.data.targets import gripper_events, interaction_labels, monte_carlo_returns, progress_targets, rewards
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.model.action_space import ChunkEncoder
from wam_ros.model.model_config import load_model_config
from wam_ros.model.normalization import ACTION_SCALE_FLOOR, STATE_INPUT_BOUND, STATE_SCALE_FLOOR, Normalizer
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
from wam_ros.model.text import UnknownInstruction
from wam_ros.model.train import TrainConfig, WindowDataset
from wam_ros.model.wam import (
    WorldActionModel,
    add_noise,
    sample_ans_times,
    training_losses,
    video_loss,
    x0_loss,
    x0_to_velocity,
)
from wam_ros.robots.actions import EE_DELTA, JOINT_DELTA, ActionConverter
from wam_ros.robots.urdf import generate_urdf


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg)
    dataset = WindowDataset(episodes, meta, cfg)
    model = WorldActionModel(cfg).eval()
    model.text_encoder.register([TASK])
    policy = WorldActionPolicy(
        model,
        dataset.normalizer,
        CheckpointMeta(
            meta.cameras, list(cfg.image_size), meta.state_names, meta.action_names, meta.action_space, meta.fps
        ),
    )
    return cfg, dataset, model, policy, episodes


def trunk_inputs(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = model.vae.encode(batch["rgb"])
    b = len(z)
    return dict(
        current=model.conditioning(z[:, :, :1], batch["inverse_depth"][:, :, 0]),
        future_noisy=torch.randn(z[:, :, 1:].shape, generator=g),
        t_video=torch.full((b,), 0.7),
        text=model.text_features(batch["instruction"]),
        state=batch["state"],
        actions_noisy=torch.randn(batch["actions"].shape, generator=g),
        value_noisy=torch.randn(b, generator=g),
        t_action=torch.full((b,), 0.4),
    )


@torch.no_grad()
def test_cross_modality_mask(tiny):
    cfg, dataset, model, _, _ = tiny
    inputs = trunk_inputs(model, dataset.batch([0, 7, 30]))
    base = model.trunk(**inputs, with_depth=True)

    other_actions = model.trunk(**{**inputs, "actions_noisy": inputs["actions_noisy"] + 1.0}, with_depth=True)
    assert torch.equal(base.video_velocity, other_actions.video_velocity)  # video -> video only
    assert torch.equal(base.video_hidden, other_actions.video_hidden)
    assert torch.equal(base.inverse_depth, other_actions.inverse_depth)
    assert not torch.allclose(base.value_x0, other_actions.value_x0)  # value -> everything

    other_video = model.trunk(**{**inputs, "future_noisy": inputs["future_noisy"] + 1.0})
    assert (other_video.action_x0 - base.action_x0).abs().max() > 1e-4  # actions see video
    assert (other_video.value_x0 - base.value_x0).abs().max() > 1e-6

    other_state = model.trunk(**{**inputs, "state": inputs["state"] + 1.0})
    assert (other_state.action_x0 - base.action_x0).abs().max() > 1e-4  # actions see the state
    assert torch.equal(base.video_velocity, other_state.video_velocity)

    other_value = model.trunk(**{**inputs, "value_noisy": inputs["value_noisy"] + 1.0})
    assert torch.equal(base.action_x0, other_value.action_x0)  # the value token is seen by nobody
    assert torch.equal(base.video_velocity, other_value.video_velocity)

    video_only = model.trunk(**{k: inputs[k] for k in ("current", "future_noisy", "t_video", "text")})
    assert torch.equal(base.video_velocity, video_only.video_velocity)


@torch.no_grad()
def test_depth_branch_is_unilateral_and_free_when_off(tiny):
    cfg, dataset, model, policy, episodes = tiny
    inputs = trunk_inputs(model, dataset.batch([3, 40]))
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in (*model.depth_blocks, model.depth_head)]
    try:
        off = model.trunk(**inputs, with_depth=False)
        assert calls == [] and off.inverse_depth is None  # switched off: never computed
        on = model.trunk(**inputs, with_depth=True)
        assert len(calls) == cfg.depth_blocks + 1
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(on.video_velocity, off.video_velocity)
    assert torch.equal(on.action_x0, off.action_x0) and torch.equal(on.value_x0, off.value_x0)
    assert on.inverse_depth.shape == (2, len(cfg.cameras), cfg.horizon + 1, *cfg.image_size)
    # the main branch's outputs do not change when the depth blocks' weights do
    before = policy.predict(observation(cfg, episodes[0]), seed=3)
    saved = {k: v.clone() for k, v in model.depth_blocks.state_dict().items()}
    for p in model.depth_blocks.parameters():
        p.add_(0.5)
    after = policy.predict(observation(cfg, episodes[0]), seed=3)
    model.depth_blocks.load_state_dict(saved)
    assert np.array_equal(before.actions, after.actions) and np.array_equal(before.future_rgb, after.future_rgb)
    assert not np.array_equal(before.future_depth, after.future_depth)
    assert policy.predict(observation(cfg, episodes[0]), seed=3, depth=False).future_depth is None


def test_ans_training_distribution():
    g = torch.Generator().manual_seed(0)
    n = 40000
    t_o, t_a = sample_ans_times(n, 0.5, (1.5, 1.0), g)
    assert bool((t_o >= t_a).all()) and bool(((t_o >= 0) & (t_o <= 1) & (t_a >= 0) & (t_a <= 1)).all())
    conditioned = t_a == 0
    assert abs(conditioned.float().mean().item() - 0.5) < 0.015  # 3 sigma of a binomial at n = 40000
    b = ((t_o - t_a) / (1 - t_a))[~conditioned]
    assert abs(b.mean().item() - 0.6) < 0.01  # Beta(1.5, 1) has mean 0.6
    assert abs((b < 0.5).float().mean().item() - 0.5**1.5) < 0.015  # its CDF is x^1.5
    assert abs(t_o[conditioned].mean().item() - 0.5) < 0.01  # U(0, 1) in the conditioned branch


@torch.no_grad()
def test_ans_inference_passes_and_final_actions(tiny):
    cfg, _, model, policy, episodes = tiny
    passes, action_passes = [], []
    hooks = [
        model.video.blocks[0].attn1.to_q.register_forward_hook(lambda *a: passes.append(1)),
        model.action_blocks[0].qkv_proj.register_forward_hook(lambda *a: action_passes.append(1)),
    ]
    try:
        session = policy.session(observation(cfg, episodes[0]), action_steps=2, video_steps=6, seed=1)
        snapshots, progress = [], []
        with pytest.raises(RuntimeError, match="no value yet"):
            session.progress()
        while not session.video_final:
            session.step()
            snapshots.append(session.action_chunk())
            progress.append(session.progress())
        # the expected progress is the first pass's estimate, not the sampled value's last draw
        assert progress == [progress[0]] * 6
        assert progress[0] != pytest.approx(float(np.clip((float(session.value) + 1) / 2, 0, 1)), abs=1e-6)
        assert len(passes) == 6 and len(action_passes) == 2  # T_O passes, the action expert in T_a of them
        assert session.actions_final
        for later in snapshots[2:]:
            assert np.array_equal(later, snapshots[1])  # final after pass T_a
        assert not np.array_equal(snapshots[0], snapshots[1])
        passes.clear()
        policy.model.cfg.gate_threshold = 0.0  # predictive: no video needed for the actions
        fast = policy.predict(observation(cfg, episodes[0]), video=False, action_steps=2, video_steps=6, seed=1)
        assert len(passes) == 2 and fast.future_rgb is None
        assert np.array_equal(fast.actions, snapshots[1])
        # with the video: the actions are handed out after T_a passes, before the video finishes
        passes.clear()
        handed_out = []
        full = policy.predict(
            observation(cfg, episodes[0]),
            action_steps=2,
            video_steps=6,
            seed=1,
            on_actions=lambda early: handed_out.append((len(passes), early)),
        )
        ((passes_then, early),) = handed_out
        assert passes_then == 2 and len(passes) == 6 and early.future_rgb is None
        assert np.array_equal(early.actions, full.actions) and full.future_rgb is not None
    finally:
        policy.model.cfg.gate_threshold = 0.5
        for h in hooks:
            h.remove()


@torch.no_grad()
def test_gate_picks_the_expert(tiny):
    cfg, _, _, policy, episodes = tiny
    obs = observation(cfg, episodes[1], 5)
    try:
        policy.model.cfg.gate_threshold = 0.0
        predictive = policy.predict(obs, seed=2)
        policy.model.cfg.gate_threshold = 1.0
        reactive = policy.predict(obs, video=False, seed=2)
    finally:
        policy.model.cfg.gate_threshold = 0.5
    assert predictive.expert == "predictive" and reactive.expert == "reactive"
    assert predictive.gate_probability == reactive.gate_probability
    assert reactive.actions.shape == predictive.actions.shape == (cfg.num_actions, cfg.action_dim)
    assert not np.allclose(reactive.actions, predictive.actions)
    assert 0.0 <= predictive.value <= 1.0
    assert predictive.future_rgb.shape == (len(cfg.cameras), 4 * cfg.horizon, *cfg.image_size, 3)  # action rate
    assert predictive.future_depth.shape == (len(cfg.cameras), cfg.horizon, *cfg.image_size)  # per latent frame
    assert np.array_equal(predictive.rgb_at_depth_frames(), predictive.future_rgb[:, 3::4])
    assert predictive.future_rgb.dtype == np.uint8 and predictive.future_depth.dtype == np.float32


def test_loss_parameterisations_match_the_formulas():
    v = torch.tensor([[1.0, 2.0]])
    x1, x0 = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    assert video_loss(v, x1, x0).item() == pytest.approx(0.5)  # ||v - (x1 - x0)||^2
    x0_hat = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    a0 = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert x0_loss(x0_hat, a0).item() == pytest.approx((1 + 4 + 0 + 4) / 4)  # no 1/t^2 weighting
    assert x0_loss(x0_hat, a0, torch.tensor([1.0, 0.0])).item() == pytest.approx(2.5)
    t = torch.tensor([0.25, 0.8])
    clean, noise = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [-1.0, 3.0]])
    x_t = add_noise(clean, noise, t)
    assert torch.allclose(x_t[0], 0.75 * clean[0] + 0.25 * noise[0])
    assert torch.allclose(x0_to_velocity(x_t, clean, t, 0.02), noise - clean)  # v = x1 - x0
    tiny_t = torch.tensor([0.001])
    assert torch.allclose(x0_to_velocity(torch.ones(1, 2), torch.zeros(1, 2), tiny_t, 0.02), torch.full((1, 2), 50.0))


@torch.no_grad()
def test_the_gate_reads_the_instruction_not_its_padding():
    """umT5 features are zero beyond the instruction (Wan pads to 512 tokens): padding the same
    features with zero tokens leaves the gate's logit as it was."""
    torch.manual_seed(0)
    model = WorldActionModel(tiny_config()).eval()
    latent = torch.randn(1, len(model.cfg.cameras), 1, model.cfg.latent_channels, *model.cfg.latent_size)
    inverse_depth = torch.rand(1, len(model.cfg.cameras), *model.cfg.image_size)
    with torch.no_grad():
        current = model.conditioning(latent, inverse_depth)
        text = torch.randn(1, 3, model.cfg.text_dim)
        padded = torch.cat([text, torch.zeros(1, 29, model.cfg.text_dim)], dim=1)
        assert torch.allclose(model.gate_logit(current, padded), model.gate_logit(current, text), atol=1e-6)
        assert not torch.allclose(model.gate_logit(current, text[:, :1]), model.gate_logit(current, text), atol=1e-6)


def test_failed_episodes_teach_the_value_and_gate_but_are_not_imitated(tiny):
    cfg, dataset, model, _, episodes = tiny
    failed = [i for i, (e, _) in enumerate(dataset.index) if not episodes[e].success]
    succeeded = [i for i, (e, _) in enumerate(dataset.index) if episodes[e].success]
    assert failed and succeeded
    failed_batch = dataset.batch(failed[:6])
    assert failed_batch["imitate"].tolist() == [0.0] * 6
    losses = training_losses(model, failed_batch, "joint", torch.Generator().manual_seed(0))
    assert losses["action"].item() == 0.0 and losses["reactive"].item() == 0.0
    assert losses["value"].item() > 0.0 and losses["gate"].item() > 0.0
    mixed = dataset.batch(failed[:3] + succeeded[:3])
    assert mixed["imitate"].tolist() == [0.0] * 3 + [1.0] * 3
    losses = training_losses(model, mixed, "joint", torch.Generator().manual_seed(0))
    assert losses["reactive"].item() > 0.0


def test_monte_carlo_value_targets():
    gamma = 0.9
    r = rewards(4, success=True)
    assert r.tolist() == [0, 0, 0, 1]
    assert np.allclose(monte_carlo_returns(r, gamma), [gamma**3, gamma**2, gamma, 1])
    assert np.allclose(progress_targets(r, gamma), [gamma**3, gamma**2, gamma, 1])
    assert rewards(4, success=False).sum() == 0 and progress_targets(rewards(4, False), gamma).max() == 0
    staged = rewards(4, True, [1], mode="stages")
    assert staged.tolist() == [0, 0.5, 0, 0.5]
    assert np.allclose(
        monte_carlo_returns(staged, gamma), [0.5 * gamma + 0.5 * gamma**3, 0.5 + 0.5 * gamma**2, 0.5 * gamma, 0.5]
    )
    progress = progress_targets(staged, gamma)
    assert np.allclose(progress, [0.5 * gamma + 0.5 * gamma**3, 0.5 + 0.5 * gamma**2, 0.5 + 0.5 * gamma, 1.0])
    assert np.all(np.diff(progress) >= 0)  # completing a stage never lowers the target
    assert rewards(5, False, [1], mode="stages", num_stages=3).tolist() == pytest.approx([0, 1 / 3, 0, 0, 0])
    with pytest.raises(ValueError, match="outside the episode"):
        rewards(4, True, [7], mode="stages")


def test_gate_labels_from_gripper_events():
    g = np.zeros((30, 2))
    g[:10, 0] = 0.08  # left closes at frame 10
    g[25:, 1] = 0.05  # right opens at frame 25
    assert gripper_events(g) == [10, 25]
    labels = interaction_labels(g, window=3)
    expected = np.zeros(30)
    expected[7:14] = 1
    expected[22:29] = 1
    assert labels.tolist() == expected.tolist()
    assert interaction_labels(np.full(20, 0.04), window=3).sum() == 0  # no event, all transit
    height = np.full((30, 2), 0.3)
    height[16, 1] = 0.02
    with_height = interaction_labels(g, window=3, ee_height=height, height_threshold=0.05)
    assert with_height[16] == 1 and with_height.sum() == expected.sum() + 1


def test_normalisation_scales_delta_actions_without_bias():
    rng = np.random.default_rng(0)
    actions = rng.normal(0.3, 0.1, size=(500, 4))
    actions[:, 3] = rng.uniform(0.0, 0.08, 500)  # gripper opening: absolute
    delta = Normalizer.from_data(actions, actions, "joint_delta", gripper_indices=[3])
    zero = np.zeros((1, 4))
    assert np.allclose(delta.action.normalize(zero)[0, :3], 0.0)  # no motion stays no motion
    assert (np.abs(delta.action.normalize(actions)[:, :3]) <= 1).mean() >= 0.98  # q99 of |a| maps to 1
    assert np.allclose(delta.action.denormalize(delta.action.normalize(actions)), actions, atol=1e-5)
    absolute = Normalizer.from_data(actions, actions, "joint_position", gripper_indices=[3])
    normalized = absolute.action.normalize(actions)
    assert np.allclose(np.quantile(normalized, [0.01, 0.99], axis=0), [[-1] * 4, [1] * 4], atol=1e-6)
    for space in ("ee_delta", "joint_delta"):
        n = Normalizer.from_data(actions, actions, space, [3])
        assert n.action.offset[3] != 0 and np.all(n.action.offset[:3] == 0)
    # an idle arm: its columns never move, so a network error of 0.05 must not move it either
    idle = actions.copy()
    idle[:, 2] = 0.0  # a delta column without motion
    idle[:, 3] = 0.035  # a gripper that stays open
    for space in ("joint_delta", "joint_position"):
        n = Normalizer.from_data(idle, idle, space, [3])
        assert np.all(n.action.normalize(idle)[:, 2:] == 0.0)  # the training targets
        drift = np.abs(n.action.denormalize(np.full((1, 4), 0.05))[0, 2:] - idle[0, 2:])
        assert np.all(drift <= 0.05 * ACTION_SCALE_FLOOR + 1e-9)
        assert n.state.scale[2] == 1.0  # an input that never varied is not blown up


def test_a_barely_varied_joint_is_not_blown_up_as_an_input():
    rng = np.random.default_rng(0)
    states = rng.normal(0.3, 0.2, size=(500, 4))
    states[:, 1] = rng.uniform(-3e-4, 3e-4, 500)  # a wrist joint the demonstrations hardly moved
    states[:, 3] = rng.uniform(0.0, 0.035, 500)  # a gripper opening (m), narrower than the joint floor
    n = Normalizer.from_data(states, states, "joint_delta", [3], state_gripper_indices=[3])
    assert n.state.scale[1] == pytest.approx(STATE_SCALE_FLOOR)
    assert n.state.scale[3] == pytest.approx(0.0175, rel=0.05)  # openings keep their own scale
    assert np.allclose(
        np.quantile(n.state.normalize(states)[:, [0, 3]], [0.01, 0.99], axis=0), [[-1] * 2, [1] * 2], atol=1e-5
    )
    knocked = states[0].copy()
    knocked[1] += 0.1  # 330 units at the data's own scale
    assert n.state.normalize(knocked)[1] == pytest.approx(0.1 / STATE_SCALE_FLOOR, abs=0.01)
    knocked[1] += 0.2
    assert n.state.normalize(knocked)[1] == pytest.approx(STATE_INPUT_BOUND)  # clipped
    # a checkpoint's statistics carry the floor and bound it was trained with; older ones had none
    restored = Normalizer.from_stats(n.stats, "joint_delta", [3], [3])
    assert np.array_equal(restored.state.normalize(knocked), n.state.normalize(knocked))
    legacy = {k: n.stats[k] for k in ("state", "action")}
    old = Normalizer.from_stats(legacy, "joint_delta", [3], [3])
    assert old.state.scale[1] < 1e-3 and old.state.normalize(knocked)[1] > 900


def test_presets_and_the_paper_scale():
    small = load_model_config("small")
    counts = WorldActionModel(small).parameter_counts()
    assert 1e6 < counts["total"] < 10e6  # a few million
    assert load_model_config("paper") == load_model_config("mvwam")
    with torch.device("meta"):  # full size, no memory: the dry-run's path
        mvwam = WorldActionModel(load_model_config("mvwam")).parameter_counts()
        xwam = WorldActionModel(load_model_config("xwam")).parameter_counts()
    # Wan2.1-T2V-1.3B's transformer has 1.42 B parameters, Wan2.2-TI2V-5B's 5.0 B
    assert 1.40e9 < mvwam["video_expert"] < 1.44e9 and 4.9e9 < xwam["video_expert"] < 5.1e9
    assert mvwam["video_expert"] > 2.5 * mvwam["action_value_expert"]
    with pytest.raises(ConfigError, match="unknown fields"):
        load_model_config("small", widht=3)
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_model_config("small", image_size=[60, 64])
    with pytest.raises(ConfigError, match="temporal compression"):
        load_model_config("small", actions_per_frame=2)
    with pytest.raises(ConfigError, match="no such file"):
        load_model_config("huge")


@torch.no_grad()
def test_vae_is_causal_in_time(tiny):
    cfg, dataset, model, _, _ = tiny
    rgb = dataset.batch([0])["rgb"]
    assert rgb.shape[2] == cfg.clip_frames == 1 + 4 * cfg.horizon
    clip = model.vae.encode(rgb)
    assert clip.shape[2:] == (1 + cfg.horizon, cfg.latent_channels, *cfg.latent_size)
    alone = model.vae.encode(rgb[:, :, :1])  # what inference encodes: the present frame
    assert torch.allclose(clip[:, :, 0], alone[:, :, 0], atol=1e-5)
    changed = rgb.clone()
    changed[:, :, 5] = -changed[:, :, 5]  # raw frame 5 opens latent frame 2 (frames 5..8)
    later = model.vae.encode(changed)
    assert torch.allclose(later[:, :, :2], clip[:, :, :2], atol=1e-5)
    assert not torch.allclose(later[:, :, 2], clip[:, :, 2], atol=1e-3)
    assert model.vae.decode(clip).shape == rgb.shape


def test_text_encoders(tmp_path, tiny):
    _, _, model, _, _ = tiny
    with pytest.raises(UnknownInstruction, match="not in the training data"):
        model.text_features(["fold the towel"])
    file = tmp_path / "embeddings.pt"
    torch.save({"fold the towel": torch.randn(2, 16)}, file)
    cfg = tiny_config(text_encoder="precomputed", text_embeddings=str(file), text_tokens=2)
    features = WorldActionModel(cfg).text_features(["fold the towel"])
    assert features.shape == (1, 2, cfg.text_dim)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        WorldActionModel(tiny_config(text_encoder="precomputed", text_embeddings=str(tmp_path / "missing.pt")))


@pytest.mark.parametrize("space", ["joint_delta", "ee_delta"])
def test_action_spaces_invert_the_bridges_conversion(space):
    """Chunks encoded for training decode back to the recorded joint targets through the same
    conversion the arm bridges execute (robots/actions.py)."""
    robot = load_robot_config("agilex")
    names = robot.joint_names
    rng = np.random.default_rng(1)
    home = np.array([0.0, 0.8, -0.9, 0.1, 0.4, 0.2, 0.03] * 2)
    state = home + rng.normal(0, 0.02, 14)
    targets = home + np.cumsum(rng.normal(0, 0.01, (6, 14)), axis=0)
    encoder = ChunkEncoder(space, names, names, robot)
    chunk = encoder.encode(targets, state, encoder.tcp_poses(targets, names), encoder.tcp_poses(state[None], names)[0])
    conditioning = dict(zip(names, state))
    arm = [n for n in encoder.columns if not n.endswith("gripper")]
    grippers = gripper_columns(encoder.columns)
    converter = ActionConverter(robot, Kinematics(generate_urdf(robot)), ik_tolerance=1e-5)
    code = JOINT_DELTA if space == "joint_delta" else EE_DELTA
    out_names, joints = converter.to_joint_positions(
        code, arm, chunk[:, [encoder.columns.index(n) for n in arm]], conditioning
    )
    recorded = targets[:, [names.index(n) for n in out_names]]
    assert np.abs(joints - recorded).max() < 1e-3
    assert np.abs(encoder.decode(chunk, state) - targets).max() < 1e-3  # what the policy node executes
    assert np.allclose(chunk[:, grippers], targets[:, gripper_columns(names)])  # openings stay absolute
    if space == "ee_delta":
        assert encoder.columns[:7] == [
            "left_dx",
            "left_dy",
            "left_dz",
            "left_drx",
            "left_dry",
            "left_drz",
            "left_gripper",
        ]
    held = encoder.encode(
        np.repeat(state[None], 3, axis=0),
        state,
        encoder.tcp_poses(np.repeat(state[None], 3, 0), names),
        encoder.tcp_poses(state[None], names)[0],
    )
    assert np.allclose(np.delete(held, grippers, axis=1), 0.0, atol=1e-9)  # holding still is the zero action


def test_action_rope_runs_at_a_quarter_of_the_video_time_scale(tiny):
    cfg, _, model, _, _ = tiny
    cos, _ = model._action_rotary(torch.device("cpu"))  # rows: state, K actions, value
    video_cos, _ = model.video.rotary(cfg.horizon + 1, *cfg.latent_size)
    frame = cfg.tokens_per_frame  # tokens per latent frame; token f * frame is (f, row 0, col 0)
    assert torch.equal(cos[0, 0], video_cos[0, 0])  # the state at time 0
    for f in range(1, cfg.horizon + 1):  # action 4f - 1 (its result ends latent frame f) sits at time f
        assert torch.allclose(cos[0, 4 * f], video_cos[0, f * frame], atol=1e-6)
    assert not torch.allclose(cos[0, 1], video_cos[0, frame], atol=1e-3)  # action 0 sits at time 1/4


def test_learning_rate_is_constant_then_decays_linearly_per_stage():
    cfg = TrainConfig(video_stage_steps=10, joint_stage_steps=20, lr=1e-3, decay_fraction=0.5)
    lrs = [cfg.learning_rate(s) for s in range(30)]
    assert lrs[:5] == [1e-3] * 5 and lrs[5:10] == pytest.approx([1e-3 * (10 - i) / 5 for i in range(5, 10)])
    assert lrs[10:20] == [1e-3] * 10 and lrs[29] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[20:29], lrs[21:30]))


def test_the_change_target_stands_for_the_future_latents_at_the_measured_scale(tiny):
    """video_target "change": the flow denoises the latents' change from the still latents (the
    present repeated over the clip) over its s.d., which training measures (the first batch sets
    it, later ones move it slowly) and the weights keep."""
    cfg, dataset, _, _, _ = tiny
    assert cfg.video_target == "change"  # small and what derives from it
    model = WorldActionModel(cfg)
    assert float(model.change_scale) == 0.0
    batch = dataset.batch(list(range(4)))
    with torch.no_grad():
        z = model.vae.encode(batch["rgb"])
        still = model.still_latents(batch["rgb"][:, :, 0])
    assert still.shape == z.shape
    torch.testing.assert_close(still[:, :, :1], z[:, :, :1])  # causal: the present's own latent
    # a clip in which nothing moves is no change at all
    with torch.no_grad():
        static = model.vae.encode(batch["rgb"][:, :, :1].expand_as(batch["rgb"]))
    model.track_change_scale(z, still)
    assert float(model.video_target(static, still).abs().max()) == 0.0
    measured = float((z[:, :, 1:] - still[:, :, 1:]).std())
    assert float(model.change_scale) == pytest.approx(measured, rel=1e-5)
    target = model.video_target(z, still)
    assert float(target.std()) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(model.future_latents(still, target), z[:, :, 1:])
    model.track_change_scale(z * 3, still * 3)
    assert float(model.change_scale) == pytest.approx(measured * 1.02, rel=1e-4)  # momentum 0.01
    assert "change_scale" in model.state_dict()
    latent = WorldActionModel(tiny_config(video_target="latent"))
    assert torch.equal(latent.video_target(z, None), z[:, :, 1:])
    with pytest.raises(ConfigError, match="video_target"):
        tiny_config(video_target="residual")


@torch.no_grad()
def test_the_predicted_future_is_the_observation_plus_the_decoded_change(tiny):
    """Colour: observed + decode(future) - decode(still latents), so what the VAE cannot reproduce
    of the present cancels; depth: observed + branch(future) - branch(present) in inverse depth
    where the observation has depth."""
    cfg, dataset, _, policy, episodes = tiny
    obs = observation(cfg, episodes[0], 5)
    obs.depths = dict(obs.depths)
    hole = obs.depths[cfg.cameras[0]].copy()
    hole[:8] = 0  # no depth measured there: the branch's own map
    obs.depths[cfg.cameras[0]] = hole
    prediction = policy.predict(obs, seed=3)
    session = policy.session(obs, seed=3)
    while not session.video_final:
        session.step(with_depth=session.passes == session.video_steps - 1)
    decoded = policy.model.vae.decode(session.latents())[0, :, 1:].movedim(-3, -1)  # (V, 4H, h, w, 3)
    still = policy.model.vae.decode(session.still)[0, :, 1:].movedim(-3, -1)
    observed = np.stack([obs.images[c] for c in cfg.cameras]).astype(np.float64)
    expected = np.clip(observed[:, None] + (decoded - still).numpy() * 127.5, 0, 255)
    assert np.abs(prediction.future_rgb - expected).max() <= 1.0  # rounding
    assert np.abs(prediction.future_rgb.astype(np.float64) - (decoded.numpy() + 1) * 127.5).max() > 2
    # a future that equals the still latents is the observation itself
    session.future = torch.zeros_like(session.future)
    unchanged, _ = policy._anchored_future(session, depth=False)
    assert np.abs(unchanged.astype(np.float64) - observed[:, None]).max() <= 0.5
    inv = session.last.inverse_depth[0].numpy()
    with np.errstate(divide="ignore"):  # the hole: replaced below
        observed_inv = 1.0 / (np.stack([obs.depths[c] for c in cfg.cameras]) / 1000.0)
    anchored = observed_inv[:, None] + inv[:, 1:] - inv[:, :1]
    expected_inv = np.where(np.stack([obs.depths[c] for c in cfg.cameras])[:, None] > 0, anchored, inv[:, 1:])
    valid = prediction.future_depth > 0
    np.testing.assert_allclose(1.0 / prediction.future_depth[valid], expected_inv[valid], rtol=1e-4)
