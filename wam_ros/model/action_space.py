"""Recorded absolute joint targets -> the model's action space (numpy, no torch).

Datasets store what the arms were commanded: absolute joint targets. The model's `action_space`
picks the representation of a chunk, always relative to the state the chunk is conditioned on
(the inverse of wam_ros/robots/actions.py, which the bridges use to execute chunks):
- joint_position: the targets themselves;
- joint_delta: target - conditioning joint position (MV-WAM's layout); grippers stay absolute;
- ee_delta: per arm TCP translation (m) and rotation vector (rad) from the conditioning TCP pose
  to the target's, in base axes, then the gripper opening (X-WAM / HarmoWAM).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import transforms3d.axangles as axangles

from wam_ros.config import SIDES, RobotConfig
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.actions import EE_AXES, EE_DELTA, ActionConverter
from wam_ros.robots.urdf import generate_urdf


def _rotvec(rotation: np.ndarray) -> np.ndarray:
    axis, angle = axangles.mat2axangle(rotation, unit_thresh=1e-5)
    return np.asarray(axis) * angle


class ChunkEncoder:
    def __init__(
        self, space: str, state_names: Sequence[str], action_names: Sequence[str], robot: RobotConfig | None = None
    ):
        self.space, self.state_names, self.action_names = space, list(state_names), list(action_names)
        missing = [n for n in self.action_names if n not in self.state_names]
        if space != "joint_position" and missing:
            raise ValueError(f"{space} actions are relative to the state, but the state lacks {missing}")
        self.grippers = [n for n in self.action_names if n.endswith("gripper")]
        self.kinematics = None
        if space == "ee_delta":
            if robot is None:
                raise ValueError("ee_delta actions need the robot (its kinematics)")
            self.robot, self.kinematics = robot, Kinematics(generate_urdf(robot))
            self._converter = ActionConverter(robot, self.kinematics)
            self.sides = [s for s in SIDES if set(robot.arm_joint_names(s)) <= set(self.action_names)]
        elif space not in ("joint_position", "joint_delta"):
            raise ValueError(f"action space {space!r}: expected joint_position, joint_delta or ee_delta")

    @property
    def columns(self) -> list[str]:
        """The model's action columns (ActionChunk.joint_names for arm columns)."""
        if self.space != "ee_delta":
            return list(self.action_names)
        return [n for s in self.sides for n in (*(f"{s}_{a}" for a in EE_AXES), self.robot.gripper_joint_name(s))]

    def tcp_poses(self, positions: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """(T, sides, 4, 4) TCP poses of joint vectors; empty unless the space is ee_delta."""
        if self.kinematics is None:
            return np.zeros((len(positions), 0, 4, 4))
        frames = [f"{s}_tcp" for s in self.sides]
        poses = [self.kinematics.frame_poses(dict(zip(names, row)), frames) for row in positions]
        return np.array([[pose[f] for f in frames] for pose in poses])

    def _joint_offset(self, state: np.ndarray) -> np.ndarray:
        """joint_delta: the conditioning position of each action column (0 for grippers)."""
        return np.array([0.0 if n in self.grippers else state[self.state_names.index(n)] for n in self.action_names])

    def encode(
        self,
        targets: np.ndarray,
        state: np.ndarray,
        target_tcp: np.ndarray | None = None,
        state_tcp: np.ndarray | None = None,
    ) -> np.ndarray:
        """targets (K, len(action_names)) absolute, state (len(state_names),) -> (K, len(columns)).
        target_tcp (K, sides, 4, 4) and state_tcp (sides, 4, 4) from tcp_poses (ee_delta only)."""
        if self.space == "joint_position":
            return np.asarray(targets, dtype=float)
        if self.space == "joint_delta":
            return targets - self._joint_offset(state)
        out = []
        for i, side in enumerate(self.sides):
            start = state_tcp[i]
            translation = target_tcp[:, i, :3, 3] - start[:3, 3]
            rotation = np.array([_rotvec(pose[:3, :3] @ start[:3, :3].T) for pose in target_tcp[:, i]])
            gripper = targets[:, [self.action_names.index(self.robot.gripper_joint_name(side))]]
            out.append(np.concatenate([translation, rotation, gripper], axis=1))
        return np.concatenate(out, axis=1)

    def decode(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The inverse of encode: actions (K, len(columns)) relative to `state` -> absolute targets
        (K, len(action_names)). End-effector deltas go through IK (ActionError if unreachable)."""
        actions = np.asarray(actions, dtype=float)
        if self.space == "joint_position":
            return actions.copy()
        if self.space == "joint_delta":
            return actions + self._joint_offset(state)
        columns = self.columns
        arm_columns = [i for i, n in enumerate(columns) if not n.endswith("gripper")]
        names, joints = self._converter.to_joint_positions(
            EE_DELTA, [columns[i] for i in arm_columns], actions[:, arm_columns], dict(zip(self.state_names, state))
        )
        out = np.zeros((len(actions), len(self.action_names)))
        for j, name in enumerate(names):
            out[:, self.action_names.index(name)] = joints[:, j]
        for name in self.grippers:
            out[:, self.action_names.index(name)] = actions[:, columns.index(name)]
        return out
