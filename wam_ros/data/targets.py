"""Training targets from episodes (numpy only): Monte Carlo value targets and gate labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rewards(
    length: int, success: bool, stage_frames: Sequence[int] = (), mode: str = "success", num_stages: int | None = None
) -> np.ndarray:
    """Per-frame rewards.

    success: 1 at the last frame of a successful episode, else 0.
    stages:  1/S at each completed stage's frame; a successful episode's last frame completes the
             final stage when the markers do not already include it. S = num_stages, or when not
             given, the completed stages (success) or one more than completed (failure).
    """
    r = np.zeros(length)
    if mode == "success":
        if success and length:
            r[-1] = 1.0
        return r
    if mode != "stages":
        raise ValueError(f"reward mode {mode!r}: expected 'success' or 'stages'")
    frames = sorted({int(f) for f in stage_frames})
    if any(not 0 <= f < length for f in frames):
        raise ValueError(f"stage frames {frames} outside the episode (length {length})")
    if success and (not frames or frames[-1] != length - 1):
        frames.append(length - 1)
    stages = num_stages or (len(frames) if success else len(frames) + 1)
    if len(frames) > stages:
        raise ValueError(f"{len(frames)} completed stages but num_stages={stages}")
    r[frames] = 1.0 / stages
    return r


def monte_carlo_returns(r: np.ndarray, gamma: float = 0.99) -> np.ndarray:
    """c_t = sum_i gamma^i r_{t+i}."""
    c = np.zeros(len(r))
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        running = r[t] + gamma * running
        c[t] = running
    return c


def progress_targets(r: np.ndarray, gamma: float = 0.99) -> np.ndarray:
    """Value targets normalised to task progress in [0, 1]: the reward already collected plus the
    discounted return still ahead. With one success reward this is the Monte Carlo return itself
    (gamma^(T-1-t)); with stage rewards it never drops when a stage is completed, so a drop of the
    predicted value means the task went backwards (what the rollback supervisor watches)."""
    collected = np.concatenate([[0.0], np.cumsum(r)[:-1]])
    return np.clip(collected + monte_carlo_returns(r, gamma), 0.0, 1.0)


def gripper_events(gripper: np.ndarray) -> list[int]:
    """Frames at which any arm's gripper switches open <-> closed (threshold: the middle of that
    arm's range in the episode). gripper: (T,) or (T, arms)."""
    g = np.asarray(gripper, dtype=float)
    g = g[:, None] if g.ndim == 1 else g
    events: set[int] = set()
    for arm in g.T:
        lo, hi = float(arm.min()), float(arm.max())
        if hi - lo < 1e-6:
            continue
        closed = arm < (lo + hi) / 2
        events.update((np.flatnonzero(closed[1:] != closed[:-1]) + 1).tolist())
    return sorted(events)


def interaction_labels(
    gripper: np.ndarray, window: int = 20, ee_height: np.ndarray | None = None, height_threshold: float | None = None
) -> np.ndarray:
    """HarmoWAM gate labels: 1 ("interaction") within +-window frames of a gripper event of either
    arm, and, with a height cue, wherever an end effector is below height_threshold; else 0."""
    g = np.asarray(gripper)
    labels = np.zeros(len(g), dtype=np.float32)
    for e in gripper_events(g):
        labels[max(0, e - window) : e + window + 1] = 1.0
    if height_threshold is not None:
        if ee_height is None:
            raise ValueError("height_threshold needs ee_height")
        h = np.asarray(ee_height, dtype=float)
        h = h[:, None] if h.ndim == 1 else h
        labels[(h < height_threshold).any(axis=1)] = 1.0
    return labels


def frame_targets(
    gripper: np.ndarray,
    success: bool,
    stage_frames: Sequence[int] = (),
    reward: str = "success",
    gamma: float = 0.99,
    window: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (value target, gate label), float32, of an episode whose gripper openings are
    `gripper` (T,) or (T, arms): progress targets of its rewards, interaction labels around its
    gripper events. Training and dataset export both take their targets from here."""
    g = np.asarray(gripper)
    r = rewards(len(g), success, stage_frames, reward)
    return progress_targets(r, gamma).astype(np.float32), interaction_labels(g, window).astype(np.float32)
