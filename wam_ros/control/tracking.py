"""How the arms follow joint targets: a first-order response fitted from recordings (ROS-free).

A chunk is a sequence of joint targets; the joints reach them late (the position servo's response,
a velocity limit), so placing the predicted future at the targets puts the arms ahead of where they
will be. Per joint, each control period closes a share `gain` of the remaining distance to the
current target: q[t+1] = q[t] + gain (a[t] - q[t]). The gain is the least-squares fit of that
relation over every recorded step (1: targets reached within one period; the fit of the simulated
AgileX's recordings is about 0.3).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_GAIN = 0.02  # a joint that hardly followed its targets in the recordings still moves towards them
MIN_EXCITATION = 1e-8  # sum of squared target errors (rad² or m²) below which a joint was never commanded: gain 1


def fit_tracking_gains(episodes: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per joint, the gain of q[t+1] - q[t] = gain (a[t] - q[t]) fitted over (states (T, J), targets
    (T, J)) pairs of episodes, columns matched; clipped to [MIN_GAIN, 1]."""
    errors, steps = [], []
    for states, targets in episodes:
        states, targets = np.asarray(states, np.float64), np.asarray(targets, np.float64)
        if states.shape != targets.shape:
            raise ValueError(f"states {states.shape} and targets {targets.shape} differ")
        errors.append(targets[:-1] - states[:-1])
        steps.append(states[1:] - states[:-1])
    if not errors:
        raise ValueError("no episodes to fit the tracking response to")
    e, s = np.concatenate(errors), np.concatenate(steps)
    excitation = np.sum(e * e, axis=0)
    gains = np.sum(e * s, axis=0) / np.maximum(excitation, MIN_EXCITATION)
    return np.where(excitation > MIN_EXCITATION, np.clip(gains, MIN_GAIN, 1.0), 1.0)


def expected_positions(start: np.ndarray, targets: np.ndarray, gains: np.ndarray | None) -> np.ndarray:
    """(K, J) joint positions after each of the K targets (K, J) from positions `start` (J,), by the
    fitted response; gains None: every target reached (the response of a checkpoint without a fit)."""
    targets = np.asarray(targets, np.float64)
    if gains is None:
        return targets.copy()
    gains = np.asarray(gains, np.float64)
    q = np.asarray(start, np.float64).copy()
    out = np.empty_like(targets)
    for k, target in enumerate(targets):
        q = q + gains * (target - q)
        out[k] = q
    return out
