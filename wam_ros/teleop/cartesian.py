"""Cartesian teleoperation (ROS-free): 6-DoF twists of a tool frame integrated into a target
pose, solved to joint targets with the robot's IK. Serves the SpaceMouse and the keyboard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pinocchio as pin

from wam_ros.config import RobotConfig
from wam_ros.geometry.kinematics import Kinematics


@dataclass(frozen=True)
class TwistLimits:
    linear: float = 0.10  # m/s at full deflection
    angular: float = 0.6  # rad/s at full deflection
    deadband: float = 0.05  # fraction of full deflection treated as zero (sensor drift)
    max_ik_error: float = 0.02  # a target the arm cannot reach this closely is not followed


class CartesianTeleop:
    """One arm's tool frame follows integrated twists. `twist` is (vx, vy, vz, wx, wy, wz) in
    [-1, 1] (fractions of the limits), in the robot base frame."""

    def __init__(self, robot: RobotConfig, kinematics: Kinematics, side: str, limits: TwistLimits = TwistLimits()):
        self.robot, self.kinematics, self.side, self.limits = robot, kinematics, side, limits
        self.frame = f"{side}_tcp"
        self.joints = robot.arm_joint_names(side)
        self.target: np.ndarray | None = None
        self.joint_targets: dict[str, float] | None = None
        self.rejected = 0

    def sync(self, positions: Mapping[str, float]) -> None:
        """Starts from the measured configuration (first state, or after the arm was moved)."""
        self.joint_targets = {n: float(positions[n]) for n in self.joints}
        self.target = self.kinematics.frame_pose(positions, self.frame)

    def step(self, twist: np.ndarray, dt: float) -> dict[str, float] | None:
        """Advances the target by twist * dt; returns the joint targets, or None before `sync`."""
        if self.target is None or self.joint_targets is None:
            return None
        twist = np.asarray(twist, dtype=float)
        if twist.shape != (6,) or not np.isfinite(twist).all():
            raise ValueError(f"twist must be 6 finite numbers, got {twist!r}")
        scaled = np.where(np.abs(twist) < self.limits.deadband, 0.0, np.clip(twist, -1.0, 1.0))
        if not scaled.any():
            return dict(self.joint_targets)
        candidate = self.target.copy()
        candidate[:3, 3] += scaled[:3] * self.limits.linear * dt
        candidate[:3, :3] = pin.exp3(scaled[3:] * self.limits.angular * dt) @ candidate[:3, :3]
        solution, error = self.kinematics.solve_ik(
            self.frame, candidate, self.joints, self.joint_targets, iterations=30
        )
        if error > self.limits.max_ik_error:
            self.rejected += 1  # out of reach: hold the last reachable target
            return dict(self.joint_targets)
        self.target, self.joint_targets = candidate, solution
        return dict(solution)
