"""Action spaces to joint targets (ROS-free), shared by everything that commands the arms.

- joint positions: absolute targets, passed through;
- joint deltas: increments relative to the joint state the chunk was conditioned on;
- end-effector deltas: per arm `{side}_dx, _dy, _dz` (m, base axes) and `{side}_drx, _dry,
  _drz` (axis-angle, rad, base axes) relative to the conditioning TCP pose, turned into joint
  targets by damped-least-squares IK with joint-limit avoidance, row by row from the
  conditioning state.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import transforms3d.axangles as axangles

from wam_ros.config import SIDES, RobotConfig
from wam_ros.geometry.kinematics import Kinematics

JOINT_POSITION, JOINT_DELTA, EE_DELTA = 0, 1, 2
EE_AXES = ("dx", "dy", "dz", "drx", "dry", "drz")
# Deltas beyond these are no motion a dual-arm robot makes within one chunk; they are refused
# before the IK, which overflows on them (1e300 ended in a math domain error).
MAX_EE_TRANSLATION = 2.0  # m
MAX_EE_ROTATION = 2 * np.pi  # rad


class ActionError(ValueError):
    """An action cannot be turned into joint targets (names, shape, or an unreachable pose)."""


def _rotation(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    return np.eye(3) if angle < 1e-12 else axangles.axangle2mat(rotvec / angle, angle)


def joint_space_targets(
    action_space: int, names: Sequence[str], rows: np.ndarray, conditioning: Mapping[str, float]
) -> np.ndarray:
    """Absolute joint targets from joint positions or joint deltas (no kinematics needed)."""
    rows = np.asarray(rows, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ActionError(f"expected rows x {len(names)} values, got shape {rows.shape}")
    if action_space == JOINT_POSITION:
        return rows
    if action_space == JOINT_DELTA:
        missing = [n for n in names if n not in conditioning]
        if missing:
            raise ActionError(f"joint deltas for joints without a state: {missing}")
        return rows + np.array([conditioning[n] for n in names])
    raise ActionError(
        f"action_space {action_space}: expected 0 (joint positions) or 1 (joint deltas) here; "
        "end-effector deltas (2) need the robot's kinematics"
    )


class ActionConverter:
    def __init__(self, robot: RobotConfig, kinematics: Kinematics, ik_tolerance: float = 1e-3):
        self.robot = robot
        self.kinematics = kinematics
        self.ik_tolerance = ik_tolerance  # largest accepted IK pose error (m + rad)

    def to_joint_positions(
        self, action_space: int, names: Sequence[str], rows: np.ndarray, conditioning: Mapping[str, float]
    ) -> tuple[list[str], np.ndarray]:
        if action_space != EE_DELTA:
            return list(names), joint_space_targets(action_space, names, rows, conditioning)
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise ActionError(f"expected rows x {len(names)} values, got shape {rows.shape}")
        sides = [s for s in SIDES if f"{s}_dx" in names]
        expected = [f"{s}_{a}" for s in sides for a in EE_AXES]
        if not sides or sorted(names) != sorted(expected):
            raise ActionError(
                f"end-effector deltas need the columns {[f'<side>_{a}' for a in EE_AXES]} per arm, got {list(names)}"
            )
        out_names = [n for s in sides for n in self.robot.arm_joint_names(s)]
        out = np.zeros((len(rows), len(out_names)))
        seed = dict(conditioning)
        for side in sides:
            frame = f"{side}_tcp"
            start = self.kinematics.frame_pose(conditioning, frame)
            joints = self.robot.arm_joint_names(side)
            cols = [list(names).index(f"{side}_{a}") for a in EE_AXES]
            deltas = rows[:, cols]
            if not np.isfinite(deltas).all():
                raise ActionError(f"{side} arm: non-finite end-effector delta")
            with np.errstate(over="ignore"):  # an overflowing norm is inf, and refused as such
                translation, rotation = np.linalg.norm(deltas[:, :3], axis=1), np.linalg.norm(deltas[:, 3:], axis=1)
            if (translation > MAX_EE_TRANSLATION).any() or (rotation > MAX_EE_ROTATION).any():
                raise ActionError(
                    f"{side} arm: end-effector delta of {translation.max():.3g} m / {rotation.max():.3g} "
                    f"rad beyond {MAX_EE_TRANSLATION} m / {MAX_EE_ROTATION:.3f} rad"
                )
            for k, row in enumerate(rows[:, cols]):
                target = np.eye(4)
                target[:3, 3] = start[:3, 3] + row[:3]
                target[:3, :3] = _rotation(row[3:]) @ start[:3, :3]
                solution, error = self.kinematics.solve_ik(frame, target, joints, seed)
                if error > self.ik_tolerance:
                    raise ActionError(f"{side} arm: step {k} target pose unreachable (IK error {error:.4f})")
                seed.update(solution)
                out[k, [out_names.index(j) for j in joints]] = [solution[j] for j in joints]
        return out_names, out
