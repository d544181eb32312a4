"""Franka FR3 arm backend with franky (one FCI host per arm).

Streaming: every new joint target replaces the running asynchronous JointMotion (franky plans
each with Ruckig within the robot's limits scaled by `dynamics_factor`). The gripper follows
with franky.Gripper's asynchronous moves. Reflexes and control errors surface as faults;
`recover()` calls recover_from_errors. franky switches the calling thread to SCHED_FIFO, so
this backend belongs in the bridge process only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam_ros.robots.bridge import ArmState, BridgeError

DEFAULT_FCI_HOSTS = ("172.16.0.2", "172.16.0.3")  # left, right
FCI_PORT = 1337  # libfranka's command connection (TCP)


@dataclass(frozen=True)
class FrankaSettings:
    dynamics_factor: float = 0.2  # franky relative_dynamics_factor (0, 1]
    realtime: bool = True  # enforce a real-time kernel (False for franky-sim / tests)
    # set_collision_behavior thresholds: per-joint torques (Nm) and Cartesian forces/torques (N, Nm)
    joint_torque_threshold: float = 40.0
    cartesian_force_threshold: float = 60.0
    gripper_speed: float = 0.05  # m/s
    gripper_deadband: float = 0.002  # m of opening: smaller gripper changes are not sent

    def __post_init__(self) -> None:
        if not 0.0 < self.dynamics_factor <= 1.0:
            raise ValueError(f"dynamics_factor must be in (0, 1], got {self.dynamics_factor}")


def is_realtime_kernel() -> bool:
    """A PREEMPT_RT kernel: what libfranka's realtime enforcement needs."""
    flag = Path("/sys/kernel/realtime")
    return (flag.is_file() and flag.read_text().strip() == "1") or "PREEMPT_RT" in os.uname().version


class FrankaBackend:
    def __init__(self, side: str, host: str, settings: FrankaSettings = FrankaSettings()):
        self.side, self.host, self.settings = side, host, settings
        self.joint_names = [f"{side}_joint{i}" for i in range(1, 8)] + [f"{side}_gripper"]
        self.robot = None
        self.gripper = None
        self._sent: np.ndarray | None = None
        self._sent_width = math.nan
        self._gripper_move = None  # franky BoolFuture of the running gripper move

    def connect(self) -> None:
        import franky

        if self.settings.realtime and not is_realtime_kernel():
            raise BridgeError(
                f"{self.side} FR3 at {self.host}: this kernel ({os.uname().release}) is not real-time; "
                "boot a PREEMPT_RT kernel (Franka's FCI needs it), or set franka.realtime:=false "
                "for franky-sim and dry runs"
            )
        realtime = franky.RealtimeConfig.Enforce if self.settings.realtime else franky.RealtimeConfig.Ignore
        try:
            self.robot = franky.Robot(self.host, realtime_config=realtime)
            self.robot.relative_dynamics_factor = self.settings.dynamics_factor
            torque, force = self.settings.joint_torque_threshold, self.settings.cartesian_force_threshold
            self.robot.set_collision_behavior([torque] * 7, [force] * 6)
            self.gripper = franky.Gripper(self.host)
        except Exception as exc:  # franky raises its own exception types per failure
            self.robot = self.gripper = None
            raise BridgeError(
                f"{self.side} FR3 at {self.host}: cannot connect ({exc}); check franka.hosts (the "
                "arm's FCI IP, reachable from this PC) and that FCI is enabled in Desk"
            ) from None

    def enable(self) -> None:
        self.robot.recover_from_errors()
        self._sent, self._sent_width = None, math.nan

    def read(self, now: float) -> ArmState:
        state = self.robot.current_joint_state
        width = self.gripper.width
        positions = np.append(np.asarray(state.position, dtype=float), width / 2.0)
        velocities = np.append(np.asarray(state.velocity, dtype=float), 0.0)
        error = ""
        if self.robot.has_errors:
            error = f"FR3 reflex or control error: {self.robot.state.current_errors}"
        return ArmState(positions, velocities, np.zeros(8), now, error)

    def command(self, positions: np.ndarray) -> None:
        import franky

        joints = np.asarray(positions[:7], dtype=float)
        # a zero-length JointMotion is refused by the planner (-101): only send changes
        if self._sent is None or np.abs(joints - self._sent).max() > 1e-6:
            try:
                self.robot.move(franky.JointMotion(joints.tolist()), asynchronous=True)
            except Exception as exc:  # franky's control, protocol and planner exceptions
                self._sent = None
                raise BridgeError(
                    f"{self.side} FR3 at {self.host}: motion refused ({type(exc).__name__}: {exc})"
                ) from None
            self._sent = joints
        width = 2.0 * float(positions[7])
        # the gripper takes one move at a time: a new move waits until the running one is done
        busy = self._gripper_move is not None and not self._gripper_move.wait(0)
        if not busy and (
            math.isnan(self._sent_width) or abs(width - self._sent_width) > self.settings.gripper_deadband
        ):
            self._gripper_move = self.gripper.move_async(width, self.settings.gripper_speed)
            self._sent_width = width

    def hold(self) -> None:
        if self.robot is not None:
            try:
                self.robot.stop()
            finally:
                self._sent = None

    def recover(self) -> None:
        self.robot.recover_from_errors()
        self._sent, self._sent_width = None, math.nan

    def disconnect(self) -> None:
        self.robot = self.gripper = None
