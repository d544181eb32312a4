"""Forward kinematics of the dual-arm URDFs with Pinocchio (ROS-free)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pinocchio as pin


class Kinematics:
    """FK for any frame of a URDF; joint positions are given by name (unknown names raise)."""

    def __init__(self, urdf: str):
        self.model = pin.buildModelFromXML(urdf)
        self._data = self.model.createData()
        self._q_index = {self.model.names[j]: self.model.joints[j].idx_q for j in range(1, self.model.njoints)}
        self._mimic = {
            name: name.replace("_gripper_mirror", "_gripper")
            for name in self._q_index
            if name.endswith("_gripper_mirror")
        }

    @property
    def joint_names(self) -> list[str]:
        return list(self._q_index)

    def configuration(self, positions: Mapping[str, float]) -> np.ndarray:
        q = pin.neutral(self.model)
        for name, value in positions.items():
            if name not in self._q_index:
                raise KeyError(f"unknown joint {name!r}; known: {', '.join(self._q_index)}")
            q[self._q_index[name]] = value
        for mirror, source in self._mimic.items():
            if source in positions:
                q[self._q_index[mirror]] = positions[source]
        return q

    def frame_poses(self, positions: Mapping[str, float], frames: list[str]) -> dict[str, np.ndarray]:
        """4x4 poses of `frames` in the URDF root frame."""
        pin.framesForwardKinematics(self.model, self._data, self.configuration(positions))
        out = {}
        for frame in frames:
            if not self.model.existFrame(frame):
                raise KeyError(f"unknown frame {frame!r}")
            out[frame] = self._data.oMf[self.model.getFrameId(frame)].homogeneous.copy()
        return out

    def frame_pose(self, positions: Mapping[str, float], frame: str) -> np.ndarray:
        return self.frame_poses(positions, [frame])[frame]

    def solve_ik(
        self,
        frame: str,
        target: np.ndarray,
        joints: Sequence[str],
        start: Mapping[str, float],
        iterations: int = 100,
        damping: float = 1e-4,
        tolerance: float = 1e-5,
        limit_margin: float = 0.02,
    ) -> tuple[dict[str, float], float]:
        """Damped-least-squares IK for `frame` to the 4x4 `target`, moving only `joints`.

        Joint limits are respected: each step is clipped into [lower + margin, upper - margin],
        and the null space pulls joints away from their limits. Returns the solution and the
        final pose error (translation m + rotation rad, as the norm of the 6-d log error).
        """
        if not self.model.existFrame(frame):
            raise KeyError(f"unknown frame {frame!r}")
        frame_id = self.model.getFrameId(frame)
        q = self.configuration(start)
        columns = [self.model.joints[self.model.getJointId(n)].idx_v for n in joints]
        q_index = [self._q_index[n] for n in joints]
        lower = self.model.lowerPositionLimit[q_index] + limit_margin
        upper = self.model.upperPositionLimit[q_index] - limit_margin
        middle = (lower + upper) / 2.0
        goal = pin.SE3(target[:3, :3], target[:3, 3])
        error = np.inf
        for _ in range(iterations):
            pin.forwardKinematics(self.model, self._data, q)
            pin.updateFramePlacement(self.model, self._data, frame_id)
            current = self._data.oMf[frame_id]
            # position error of the frame origin and rotation error, both in world axes: what the
            # LOCAL_WORLD_ALIGNED Jacobian maps joint velocities to
            err6 = np.concatenate(
                [goal.translation - current.translation, pin.log3(goal.rotation @ current.rotation.T)]
            )
            error = float(np.linalg.norm(err6))
            if error < tolerance:
                break
            J = pin.computeFrameJacobian(self.model, self._data, q, frame_id, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)[
                :, columns
            ]
            JJt = J @ J.T + damping * np.eye(6)
            step = J.T @ np.linalg.solve(JJt, err6)
            if len(columns) > 6:  # redundant arm: stay away from the limits in the null space
                null = np.eye(len(columns)) - J.T @ np.linalg.solve(JJt, J)
                step += null @ (0.05 * (middle - q[q_index]) / np.maximum(upper - lower, 1e-6))
            q[q_index] = np.clip(q[q_index] + step, lower, upper)
        solution = {n: float(q[i]) for n, i in zip(joints, q_index)}
        return solution, error
