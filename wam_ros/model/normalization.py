"""Per-dataset normalisation by the 1st/99th percentiles (numpy only).

States map [q01, q99] -> [-1, 1]. Actions in delta spaces are scaled without a bias
(x / max(|q01|, |q99|)), so a zero action stays "no motion"; absolute columns (joint position
targets, gripper openings) use the same affine map as states.

A column that never varied gets scale 1 as a state (an input; an unseen value must not blow it
up) but ACTION_SCALE_FLOOR as an action (an output: the network's residual error must not move
what the demonstrations never moved). With scale 1, the idle arm of a one-armed task drifted by
0.7 rad over one closed-loop episode of delta chunks. Both give the same training targets (0).

A joint that barely varied is an input of the same kind: its state scale is at least
STATE_SCALE_FLOOR, and normalised states are clipped to +-STATE_INPUT_BOUND. A wrist joint that
moved 3e-4 rad in the demonstrations (scale 3e-4) read 900 units after a slip knocked it 0.3 rad,
and both experts answered with chunks whose first targets lay up to 17 rad from the arm. The floor
and the bound are stored with the statistics, so a checkpoint keeps the normalisation it was
trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from wam_ros.data.dataset import statistics

_EPS = 1e-6
ACTION_SCALE_FLOOR = 1e-3  # rad or m: a constant action column moves at most this per unit of error
STATE_SCALE_FLOOR = 0.05  # rad: a joint's deviation from a barely varied position reads at most 20 units per rad
STATE_INPUT_BOUND = 3.0  # normalised units (the demonstrations span [-1, 1])


@dataclass
class AffineMap:
    offset: np.ndarray
    scale: np.ndarray
    bound: float = math.inf  # normalised values are clipped to +-bound

    def normalize(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, dtype=np.float64) - self.offset) / self.scale
        return np.clip(y, -self.bound, self.bound).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) * self.scale + self.offset

    @classmethod
    def from_quantiles(
        cls,
        q01: Sequence[float],
        q99: Sequence[float],
        biased: Sequence[bool],
        constant_scale: float = 1.0,
        scale_floor: np.ndarray | float = _EPS,
        bound: float = math.inf,
    ) -> "AffineMap":
        """constant_scale: the scale of a column whose quantiles coincide; scale_floor: the least
        scale of any other column (per column or one for all)."""
        lo, hi, biased = np.asarray(q01, float), np.asarray(q99, float), np.asarray(biased, bool)
        offset = np.where(biased, (lo + hi) / 2, 0.0)
        scale = np.where(biased, (hi - lo) / 2, np.maximum(np.abs(lo), np.abs(hi)))
        return cls(
            offset, np.where(scale < _EPS, constant_scale, np.maximum(scale, np.maximum(scale_floor, _EPS))), bound
        )


@dataclass
class Normalizer:
    state: AffineMap
    action: AffineMap
    stats: dict[str, Any]

    @classmethod
    def from_data(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        action_space: str,
        gripper_indices: Sequence[int],
        state_gripper_indices: Sequence[int] = (),
    ) -> "Normalizer":
        """gripper_indices: gripper columns of the actions; state_gripper_indices: of the states
        (openings in m, exempt from the joints' STATE_SCALE_FLOOR in rad)."""
        stats = {
            "state": statistics(states),
            "action": statistics(actions),
            "state_scale_floor": STATE_SCALE_FLOOR,
            "state_input_bound": STATE_INPUT_BOUND,
        }
        return cls.from_stats(stats, action_space, gripper_indices, state_gripper_indices)

    @classmethod
    def from_stats(
        cls,
        stats: dict[str, Any],
        action_space: str,
        gripper_indices: Sequence[int],
        state_gripper_indices: Sequence[int] = (),
    ) -> "Normalizer":
        """Statistics without a state floor or bound (checkpoints from before them) get neither."""
        s, a = stats["state"], stats["action"]
        biased_actions = [action_space == "joint_position" or i in gripper_indices for i in range(len(a["q01"]))]
        state_floor = np.where(
            np.isin(np.arange(len(s["q01"])), list(state_gripper_indices)), _EPS, stats.get("state_scale_floor", _EPS)
        )
        return cls(
            AffineMap.from_quantiles(
                s["q01"],
                s["q99"],
                [True] * len(s["q01"]),
                scale_floor=state_floor,
                bound=stats.get("state_input_bound", math.inf),
            ),
            AffineMap.from_quantiles(a["q01"], a["q99"], biased_actions, ACTION_SCALE_FLOOR),
            stats,
        )
