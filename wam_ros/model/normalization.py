"""Per-dataset normalisation by the 1st/99th percentiles (numpy only).

States map [q01, q99] -> [-1, 1]. Actions in delta spaces are scaled without a bias
(x / max(|q01|, |q99|)), so a zero action stays "no motion"; absolute columns (joint position
targets, gripper openings) use the same affine map as states.

A column that never varied gets scale 1 as a state (an input; an unseen value must not blow it
up) but ACTION_SCALE_FLOOR as an action (an output: the network's residual error must not move
what the demonstrations never moved). With scale 1, the idle arm of a one-armed task drifted by
0.7 rad over one closed-loop episode of delta chunks. Both give the same training targets (0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_EPS = 1e-6
ACTION_SCALE_FLOOR = 1e-3  # rad or m: a constant action column moves at most this per unit of error


def statistics(values: np.ndarray) -> dict[str, list[float]]:
    """q01, q99, mean, std, min, max per column of (N, D) values."""
    v = np.asarray(values, dtype=np.float64)
    return {"q01": np.quantile(v, 0.01, axis=0).tolist(), "q99": np.quantile(v, 0.99, axis=0).tolist(),
            "mean": v.mean(axis=0).tolist(), "std": v.std(axis=0).tolist(),
            "min": v.min(axis=0).tolist(), "max": v.max(axis=0).tolist()}


@dataclass
class AffineMap:
    offset: np.ndarray
    scale: np.ndarray

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) * self.scale + self.offset

    @classmethod
    def from_quantiles(cls, q01: Sequence[float], q99: Sequence[float], biased: Sequence[bool],
                       constant_scale: float = 1.0) -> "AffineMap":
        """constant_scale: the scale of a column whose quantiles coincide."""
        lo, hi, biased = np.asarray(q01, float), np.asarray(q99, float), np.asarray(biased, bool)
        offset = np.where(biased, (lo + hi) / 2, 0.0)
        scale = np.where(biased, (hi - lo) / 2, np.maximum(np.abs(lo), np.abs(hi)))
        return cls(offset, np.where(scale < _EPS, constant_scale, np.maximum(scale, _EPS)))


@dataclass
class Normalizer:
    state: AffineMap
    action: AffineMap
    stats: dict[str, Any]

    @classmethod
    def from_data(cls, states: np.ndarray, actions: np.ndarray, action_space: str,
                  gripper_indices: Sequence[int]) -> "Normalizer":
        stats = {"state": statistics(states), "action": statistics(actions)}
        return cls.from_stats(stats, action_space, gripper_indices)

    @classmethod
    def from_stats(cls, stats: dict[str, Any], action_space: str, gripper_indices: Sequence[int]) -> "Normalizer":
        s, a = stats["state"], stats["action"]
        biased_actions = [action_space == "joint_position" or i in gripper_indices for i in range(len(a["q01"]))]
        return cls(AffineMap.from_quantiles(s["q01"], s["q99"], [True] * len(s["q01"])),
                   AffineMap.from_quantiles(a["q01"], a["q99"], biased_actions, ACTION_SCALE_FLOOR), stats)
