"""Samplers (Euler, UniPC) on an analytic flow, and the policy's denoising session with UniPC and ANS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.model_data import TASK, observation, synthetic_dataset, tiny_config
from wam_ros.config import ConfigError
from wam_ros.model.policy import CheckpointMeta, WorldActionPolicy
from wam_ros.model.sampling import EulerSampler, UniPCSampler, make_sampler, sample, shifted_times
from wam_ros.model.train import WindowDataset
from wam_ros.model.wam import WorldActionModel, x0_to_velocity

# Data x0 ~ N(MU, S^2) per coordinate, noise x1 ~ N(0, 1), x_t = (1 - t) x0 + t x1. Then x_t is
# Gaussian with mean m_t = (1 - t) MU and variance var_t = (1 - t)^2 S^2 + t^2, the exact velocity
# field is E[x1 - x0 | x_t] = (t - (1 - t) S^2) / var_t (x_t - m_t) - MU, and its ODE carries the
# noise x1 = z to exactly x0 = MU + S z.
MU, S = 0.7, 0.5


def gaussian_moments(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = t[:, None]
    return t, (1 - t) * MU, (1 - t) ** 2 * S**2 + t**2


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t, mean, var = gaussian_moments(x, t)
    return (t - (1 - t) * S**2) / var * (x - mean) - MU


def exact_x0(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t, mean, var = gaussian_moments(x, t)
    return MU + (1 - t) * S**2 / var * (x - mean)


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(512, 8, generator=torch.Generator().manual_seed(0))


def error(x: torch.Tensor, z: torch.Tensor) -> float:
    return float((x - (MU + S * z)).abs().mean())


def test_time_grid_is_shared_and_ends_at_zero():
    assert np.allclose(shifted_times(4, 1.0), [1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = shifted_times(10, 3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and np.all(np.diff(shifted) < 0)
    assert np.all(shifted[1:-1] > shifted_times(10, 1.0)[1:-1])  # a shift > 1 spends more steps at high noise
    for shift in (1.0, 3.0):
        euler, unipc = EulerSampler(10, shift), UniPCSampler(10, shift)
        x = torch.zeros(1, 3)
        ts = []
        while not unipc.done:
            ts.append((euler.t, unipc.t))
            euler.step(x, x)
            unipc.step(x, x)
        assert euler.done and euler.t == 0.0 and len(ts) == 10
        # UniPC evaluates the model on the same grid (its first sigma is 1 - 1e-6, float32)
        assert np.allclose(*zip(*ts), atol=2e-6)
        with pytest.raises(RuntimeError):
            unipc.step(x, x)
    half = UniPCSampler(3).step(torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16  # computed in fp32, handed back in the stream's dtype
    with pytest.raises(ValueError, match="expected one of"):
        make_sampler("heun", 5)


def test_unipc_and_euler_agree_at_many_steps_and_unipc_wins_at_few(noise):
    many = {k: sample(k, 200, noise, exact_velocity) for k in ("euler", "unipc")}
    assert error(many["euler"], noise) < 5e-3  # Euler is first order: ~0.6 / steps here
    assert error(many["unipc"], noise) < 2e-4
    assert float((many["euler"] - many["unipc"]).abs().mean()) < 5e-3
    few = {k: sample(k, 10, noise, exact_velocity) for k in ("euler", "unipc")}
    to_many = {k: float((few[k] - many["unipc"]).abs().mean()) for k in few}
    # measured: Euler 5.5e-2, UniPC 2.0e-3 (27x closer); at 200 steps they differ by 2.9e-3 (Euler's error)
    assert to_many["unipc"] < to_many["euler"] / 10
    assert error(few["unipc"], noise) < error(few["euler"], noise) / 10
    # with Wan's flow shift too (measured at 25 steps, shift 3: Euler 4.4e-2, UniPC 3.3e-3)
    shifted = {k: error(sample(k, 25, noise, exact_velocity, shift=3.0), noise) for k in ("euler", "unipc")}
    assert shifted["unipc"] < shifted["euler"] / 5


def test_x0_heads_through_x0_to_velocity_sample_the_same(noise):
    """The action and value heads predict x0; the session turns it into a velocity (clipped at t_min,
    which no step of a 10-step grid reaches) and the scheduler's flow_prediction turns it back."""

    def from_x0(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0_to_velocity(x, exact_x0(x, t), t, 0.02)

    for kind in ("euler", "unipc"):
        direct, via_x0 = sample(kind, 10, noise, exact_velocity), sample(kind, 10, noise, from_x0)
        assert torch.allclose(direct, via_x0, atol=1e-5)


# ---- the policy's session ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unipc_policy():
    torch.manual_seed(0)
    cfg = tiny_config(sampler="unipc", flow_shift=3.0, action_flow_shift=1.0)
    meta, episodes = synthetic_dataset(cfg, episodes=1)
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
    return policy, observation(cfg, episodes[0])


def test_sampler_config_is_checked():
    with pytest.raises(ConfigError, match="sampler"):
        tiny_config(sampler="heun")
    with pytest.raises(ConfigError, match="action_flow_shift"):
        tiny_config(flow_shift=1.0, action_flow_shift=3.0)  # would put t_a above t_O


def test_session_with_unipc_makes_actions_final_after_action_steps(unipc_policy, monkeypatch):
    policy, obs = unipc_policy
    calls: list[tuple[float, float | None]] = []
    trunk = policy.model.trunk

    def spy(current, future, t_video, text, *rest, **kwargs):
        t_action = rest[3] if len(rest) > 3 else kwargs.get("t_action")
        calls.append((float(t_video), None if t_action is None else float(t_action)))
        return trunk(current, future, t_video, text, *rest, **kwargs)

    monkeypatch.setattr(policy.model, "trunk", spy)
    session = policy.session(obs, action_steps=3, video_steps=7, seed=1)  # the config's sampler: unipc
    assert isinstance(session.action_sampler, UniPCSampler) and isinstance(session.video_sampler, UniPCSampler)
    chunks = []
    with torch.no_grad():
        while not session.video_final:
            session.step()
            chunks.append(session.action_chunk())
            assert session.actions_final == (session.passes >= 3)
    assert len(calls) == 7
    t_video = [c[0] for c in calls]
    t_action = [c[1] for c in calls[:3]]
    assert np.allclose(t_video, shifted_times(7, 3.0)[:-1], atol=1e-5)
    assert np.allclose(t_action, shifted_times(3, 1.0)[:-1], atol=1e-5)  # reaches t = 0 after pass 3 (ANS)
    assert all(ta <= tv for ta, tv in zip(t_action, t_video))  # within ANS's training distribution
    assert all(c[1] is None for c in calls[3:])  # the video alone afterwards
    assert np.isfinite(chunks[-1]).all() and np.isfinite(session.value.numpy()).all()
    assert all(np.array_equal(chunks[2], later) for later in chunks[3:])  # final after action_steps
    assert not np.array_equal(chunks[0], chunks[2])
    assert np.isfinite(session.future.numpy()).all()


def test_unipc_session_starts_as_euler_then_differs(unipc_policy):
    """UniPC's first step is the order-1 (DDIM = Euler) step; from the second on it uses the history."""
    policy, obs = unipc_policy
    sessions = {k: policy.session(obs, action_steps=3, video_steps=3, seed=4, sampler=k) for k in ("euler", "unipc")}
    assert isinstance(sessions["euler"].action_sampler, EulerSampler)
    chunks = {k: [] for k in sessions}
    with torch.no_grad():
        for _ in range(3):
            for k, s in sessions.items():
                s.step()
                chunks[k].append(s.action_chunk())
    assert np.allclose(chunks["euler"][0], chunks["unipc"][0], atol=1e-4)
    assert not np.allclose(chunks["euler"][-1], chunks["unipc"][-1], atol=1e-4)
    for k in sessions:  # predict() takes the same choice
        prediction = policy.predict(
            obs, video=False, action_steps=3, video_steps=3, seed=4, sampler=k, expert="predictive"
        )
        assert np.array_equal(prediction.actions, chunks[k][-1])


def test_unipc_session_with_rtc_guidance(unipc_policy):
    policy, obs = unipc_policy
    cfg = policy.cfg
    guided = policy.session(obs, action_steps=2, video_steps=2, seed=2)
    free = policy.session(obs, action_steps=2, video_steps=2, seed=2)
    target = np.zeros((cfg.num_actions, cfg.action_dim))
    for _ in range(2):
        guided.step(inpaint_target=target, inpaint_weights=np.ones(cfg.num_actions))
        with torch.no_grad():
            free.step()
    assert np.isfinite(guided.action_chunk()).all()
    assert not np.allclose(guided.action_chunk(), free.action_chunk())
