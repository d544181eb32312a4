"""Forward kinematics of the dual-arm URDFs with Pinocchio (ROS-free)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pinocchio as pin



class Kinematics:
    """FK for any frame of a URDF; joint positions are given by name (unknown names raise)."""

    def __init__(self, urdf: str):
        self.model = pin.buildModelFromXML(urdf)
        self._data = self.model.createData()
        self._q_index = {
            self.model.names[j]: self.model.joints[j].idx_q for j in range(1, self.model.njoints)
        }
        self._mimic = {name: name.replace("_gripper_mirror", "_gripper")
                       for name in self._q_index if name.endswith("_gripper_mirror")}

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

