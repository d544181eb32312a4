"""Scripted joint motion for demos and tests: smooth sinusoids around home, inside the limits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wam_ros.config import RobotConfig


@dataclass(frozen=True)
class MotionConfig:
    amplitude: float = 0.35  # rad, before clipping to 90 % of each joint's range
    period: float = 6.0  # s, base period; joints run at staggered multiples of it
    gripper_period: float = 4.0  # s, open/close cycle


class ScriptedMotion:
    """targets(t) -> joint targets for every joint in robot.joint_names at time t (s)."""

    def __init__(self, robot: RobotConfig, config: MotionConfig | None = None):
        self.config = config or MotionConfig()
        self.joint_names = robot.joint_names
        home = robot.home_positions()
        limits = robot.joint_limits()
        self._home = np.array([home[n] for n in self.joint_names])
        lo = np.array([limits[n][0] for n in self.joint_names])
        hi = np.array([limits[n][1] for n in self.joint_names])
        margin = 0.05 * (hi - lo)
        self._lo, self._hi = lo + margin, hi - margin
        self._is_gripper = np.array([n.endswith("_gripper") for n in self.joint_names])
        self._gripper_max = hi
        n = len(self.joint_names)
        # staggered frequencies and phases so that the arms do not move in lockstep
        self._freq = (1.0 + 0.25 * (np.arange(n) % 4)) / self.config.period
        self._phase = np.linspace(0.0, math.pi, n)

    def targets(self, t: float) -> np.ndarray:
        ramp = min(1.0, t / 2.0)  # start at home without a jump
        q = (
            self._home
            + ramp * self.config.amplitude * np.sin(2 * math.pi * self._freq * t + self._phase)
            - ramp * self.config.amplitude * np.sin(self._phase)
        )
        opening = 0.5 * (1.0 + math.cos(2 * math.pi * t / self.config.gripper_period))
        q[self._is_gripper] = opening * self._gripper_max[self._is_gripper]
        return np.clip(
            q, np.where(self._is_gripper, 0.0, self._lo), np.where(self._is_gripper, self._gripper_max, self._hi)
        )
