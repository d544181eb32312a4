"""TienKung arm backend: the robot runs ROS 2 itself, so this backend is a topic bridge.

TienKung's `bodyctrl_msgs` package is not published; this backend speaks
`sensor_msgs/JointState` with motor ids as joint names (defaults: 11-17 left arm, 21-27 right
arm, 18 and 28 the grippers), positions in rad (grippers in m of one finger's travel). The node
wires `publish` to the command topic and feeds status messages to `on_status`; this module
imports no rclpy.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Sequence

import numpy as np

from wam_ros.robots.bridge import ArmState, BridgeError

DEFAULT_MOTOR_IDS = {
    **{f"left_joint{i}": 10 + i for i in range(1, 8)},
    "left_gripper": 18,
    **{f"right_joint{i}": 20 + i for i in range(1, 8)},
    "right_gripper": 28,
}


class TienKungBackend:
    def __init__(
        self,
        publish: Callable[[list[str], list[float]], None],
        motor_ids: dict[str, int] | None = None,
        wait_for_status: Callable[[float], bool] | None = None,
        status_timeout: float = 2.0,
    ):
        self.motor_ids = dict(DEFAULT_MOTOR_IDS if motor_ids is None else motor_ids)
        if len(set(self.motor_ids.values())) != len(self.motor_ids):
            raise ValueError(f"motor ids must be unique, got {self.motor_ids}")
        self.joint_names = list(self.motor_ids)
        self._publish = publish
        self._lock = threading.Lock()
        self._positions = np.full(len(self.joint_names), math.nan)
        self._velocities = np.zeros(len(self.joint_names))
        self._efforts = np.zeros(len(self.joint_names))
        self._stamp = -math.inf
        self._error = ""
        self._status_timeout = status_timeout
        self._ids = [str(self.motor_ids[n]) for n in self.joint_names]

    def on_status(
        self,
        now: float,
        names: Sequence[str],
        positions: Sequence[float],
        velocities: Sequence[float] = (),
        efforts: Sequence[float] = (),
    ) -> None:
        """A status message from the robot (motor ids as names); unknown ids are ignored."""
        index = {str(name): i for i, name in enumerate(names)}
        with self._lock:
            for k, motor in enumerate(self._ids):
                i = index.get(motor)
                if i is None:
                    continue
                self._positions[k] = positions[i]
                if i < len(velocities):
                    self._velocities[k] = velocities[i]
                if i < len(efforts):
                    self._efforts[k] = efforts[i]
            if not np.isnan(self._positions).any():
                self._stamp = now

    def connect(self) -> None:
        # the robot's status stream must name every configured motor before anything is sent
        import time

        deadline = time.monotonic() + self._status_timeout
        while True:
            with self._lock:
                missing = [n for n, q in zip(self.joint_names, self._positions) if math.isnan(q)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BridgeError(
                    f"TienKung: no status for {missing} (motor ids "
                    f"{[self.motor_ids[n] for n in missing]}) within {self._status_timeout:.1f} s"
                )
            time.sleep(0.01)

    def enable(self) -> None:
        pass  # TienKung's own controller enables the arms

    def read(self, now: float) -> ArmState:
        with self._lock:
            return ArmState(
                self._positions.copy(), self._velocities.copy(), self._efforts.copy(), self._stamp, self._error
            )

    def command(self, positions: np.ndarray) -> None:
        self._publish(self._ids, [float(q) for q in positions])

    def hold(self) -> None:
        with self._lock:
            held = self._positions.copy()
        if not np.isnan(held).any():
            self.command(held)

    def recover(self) -> None:
        with self._lock:
            self._error = ""

    def disconnect(self) -> None:
        pass
