"""A tiny model config and a synthetic dataset with learnable structure, for the model tests.

The episodes are drawn procedurally: a coloured block slides across each view while both arms
follow smooth joint trajectories; the left gripper closes half-way (a gate event). Frames,
depth, states and actions are consistent with each other, so every head has something to learn.
"""

from __future__ import annotations

import numpy as np

from wam_ros.data.dataset import DatasetMeta, Episode
from wam_ros.model.model_config import ModelConfig, load_model_config
from wam_ros.model.policy import Observation

TASK = "slide the block"


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        image_size=[32, 32],
        blocks=2,
        heads=2,
        video={"width": 32, "ffn": 64},
        action={"width": 16, "ffn": 32},
        depth_blocks=1,
        horizon=2,
        latent_channels=4,
        vae_base_dim=4,
        reactive_width=32,
        reactive_layers=1,
        gate_hidden=16,
        text_dim=16,
        action_steps=2,
        video_steps=6,
        gate_window=3,
    )
    values.update(overrides)
    return load_model_config("small", **values)


def meta_for(cfg: ModelConfig) -> DatasetMeta:
    names = [f"{side}_joint{i}" for side in ("left", "right") for i in range(1, 7)]
    names = names[:6] + ["left_gripper"] + names[6:] + ["right_gripper"]
    return DatasetMeta(
        cameras=list(cfg.cameras), state_names=names, action_names=list(names), action_space=cfg.action_space, fps=15.0
    )


def synthetic_episode(cfg: ModelConfig, length: int = 24, phase: float = 0.0, success: bool = True) -> Episode:
    h, w = cfg.image_size
    views = len(cfg.cameras)
    rgb = np.full((length, views, h, w, 3), 40, np.uint8)
    depth = np.full((length, views, h, w), 1500, np.uint16)
    state = np.zeros((length, 14))
    size = max(h // 4, 2)
    for t in range(length):
        for v in range(views):
            x = int((t + 3 * v + phase * 4) % (w - size))
            rgb[t, v, h // 3 : h // 3 + size, x : x + size] = (220, 60 + 50 * v, 40)
            depth[t, v, h // 3 : h // 3 + size, x : x + size] = 600
        s = t / length * np.pi + phase
        state[t, :6] = 0.5 * np.sin(s + np.arange(6))
        state[t, 7:13] = 0.5 * np.cos(s + np.arange(6))
        state[t, 6] = 0.04 if t < length // 2 else 0.0
        state[t, 13] = 0.04
    action = np.concatenate([state[1:], state[-1:]])
    return Episode(rgb=rgb, depth=depth, state=state, action=action, task=TASK, success=success)


def synthetic_dataset(cfg: ModelConfig, episodes: int = 3, length: int = 24) -> tuple[DatasetMeta, list[Episode]]:
    return meta_for(cfg), [synthetic_episode(cfg, length, phase=0.7 * i, success=i % 3 != 2) for i in range(episodes)]


def observation(cfg: ModelConfig, episode: Episode, t: int = 0, **changes) -> Observation:
    """Frame t of an episode as the policy's input; keyword arguments replace fields."""
    obs = Observation(
        images={c: episode.rgb[t, i] for i, c in enumerate(cfg.cameras)},
        depths={c: episode.depth[t, i] for i, c in enumerate(cfg.cameras)},
        state=episode.state[t].copy(),
        instruction=episode.task,
    )
    for name, value in changes.items():
        setattr(obs, name, value)
    return obs


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two training checkpoints (torch.load'ed) hold identical weights and training history."""
    import torch

    for name, tensor in a["model"].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, b["model"][name]), name
    assert a["train"]["history"] == b["train"]["history"]
