"""Limit-respecting point-to-point joint moves (ROS-free): synchronized minimum-jerk profiles."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

# Peaks of the minimum-jerk profile s(u) = 10u^3 - 15u^4 + 6u^5 over a move of length 1 in time 1
_PEAK_VELOCITY, _PEAK_ACCELERATION, _PEAK_JERK = 1.875, 5.7735, 60.0


def min_jerk_duration(
    distance: np.ndarray,
    max_velocity: np.ndarray,
    max_acceleration: np.ndarray,
    max_jerk: np.ndarray,
    margin: float = 0.9,
) -> float:
    """Shortest duration (s) in which every joint moves `distance` within `margin` x its limits."""
    d = np.abs(np.asarray(distance, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.concatenate(
            [
                _PEAK_VELOCITY * d / (margin * np.asarray(max_velocity)),
                np.sqrt(_PEAK_ACCELERATION * d / (margin * np.asarray(max_acceleration))),
                np.cbrt(_PEAK_JERK * d / (margin * np.asarray(max_jerk))),
            ]
        )
    t = t[np.isfinite(t)]
    return float(t.max()) if t.size else 0.0


def min_jerk_profile(u: np.ndarray | float) -> np.ndarray:
    """s(u) = 10u^3 - 15u^4 + 6u^5: 0 -> 1 with zero velocity and acceleration at both ends."""
    u = np.asarray(u, dtype=float)
    return u**3 * (10 - 15 * u + 6 * u**2)


def min_jerk_move(start: np.ndarray, goal: np.ndarray, duration: float, dt: float) -> np.ndarray:
    """Waypoints at dt spacing (the first after dt, the last exactly `goal`), shape N x joints."""
    start, goal = np.asarray(start, dtype=float), np.asarray(goal, dtype=float)
    steps = max(1, math.ceil(duration / dt - 1e-9))
    s = min_jerk_profile(np.arange(1, steps + 1) / steps)
    return start + s[:, None] * (goal - start)


class TimedTrajectory:
    """Joint targets at absolute times, sampled by linear interpolation (held after the end), or
    with `profile` (e.g. min_jerk_profile) shaping each segment.

    What a trajectory executor does with a JointTrajectory: before the first point it moves
    from the position at `start` (given) towards the first point.
    """

    def __init__(
        self,
        times: np.ndarray,
        positions: np.ndarray,
        start_time: float,
        start_positions: np.ndarray,
        profile: Callable[[float], float] | None = None,
    ):
        self._profile = profile
        times = np.asarray(times, dtype=float)
        if len(times) == 0 or (np.diff(times) <= 0).any():
            raise ValueError("trajectory times must be non-empty and strictly increasing")
        self._times = np.concatenate([[start_time], times]) if times[0] > start_time else times
        first = [np.asarray(start_positions, dtype=float)] if times[0] > start_time else []
        self._positions = np.vstack([*first, np.asarray(positions, dtype=float)])

    @property
    def end_time(self) -> float:
        return float(self._times[-1])

    def sample(self, t: float) -> np.ndarray:
        if t <= self._times[0]:
            return self._positions[0].copy()
        if t >= self._times[-1]:
            return self._positions[-1].copy()
        k = int(np.searchsorted(self._times, t, side="right")) - 1
        w = (t - self._times[k]) / (self._times[k + 1] - self._times[k])
        if self._profile is not None:
            w = float(self._profile(w))
        return (1.0 - w) * self._positions[k] + w * self._positions[k + 1]
