"""An emulated AgileX Piper arm on python-can's in-process virtual bus.

It speaks the arm side of the real CAN protocol (the frames piper_sdk sends and parses):
commands 0x151 (motion control 2), 0x155-0x157 (joints, two big-endian int32 per frame,
0.001 deg), 0x159 (gripper, int32 0.001 mm + int16 effort), 0x471 (motor enable); feedback
0x2A1 (status), 0x2A5-0x2A7 (joints), 0x2A8 (gripper) at `rate` Hz. Joints move towards
their targets at `speed` rad/s once enabled. Used for dry runs without arms and in tests.

Faults to rehearse: `arm_status` (e.g. 0x07 collision, 0x0B teach record) and `err_code` (the
per-joint bits of the status frame) are reported as set; `reading_offset` (rad per joint) is
added to the fed-back joint angles only, as a glitched encoder or frame would be; `silent`
stops all feedback.
"""

from __future__ import annotations

import math
import threading
import time

import can
import numpy as np

from wam_ros.config import RobotConfig

JOINT_COMMANDS = (0x155, 0x156, 0x157)
JOINT_FEEDBACK = (0x2A5, 0x2A6, 0x2A7)
GRIPPER_COMMAND, GRIPPER_FEEDBACK = 0x159, 0x2A8
MOTION_CONTROL_2, ENABLE, STATUS = 0x151, 0x471, 0x2A1


def _int32_pair(a: int, b: int) -> bytes:
    return int(a).to_bytes(4, "big", signed=True) + int(b).to_bytes(4, "big", signed=True)


class PiperEmulator:
    def __init__(
        self,
        channel: str,
        initial_joints_rad: np.ndarray | None = None,
        initial_gripper_mm: float = 0.0,
        rate: float = 200.0,
        speed: float = 2.0,
        gripper_speed_mm: float = 100.0,
    ):
        self.channel = channel
        self.joints = np.zeros(6) if initial_joints_rad is None else np.array(initial_joints_rad, dtype=float)
        self.targets = self.joints.copy()
        self.gripper_mm = self.gripper_target_mm = float(initial_gripper_mm)
        self.enabled = False
        self.ctrl_mode = 0
        self.arm_status = 0  # 0 normal; e.g. 0x07 collision, 0x05 joint communication error
        self.err_code = 0  # bits 0-5: joint 1-6 communication error, bits 8-13: joint 1-6 angle limit
        self.reading_offset = np.zeros(6)  # added to the reported joint angles, not to the joints
        self.silent = False  # stop all feedback (a pulled CAN cable)
        self.commands_received = 0
        self._rate, self._speed, self._gripper_speed = rate, speed, gripper_speed_mm
        self._bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"piper_emulator_{channel}", daemon=True)

    @staticmethod
    def at_home(robot: RobotConfig, side: str, channel: str) -> "PiperEmulator":
        """An emulated arm resting at the robot config's home pose, gripper included."""
        home = robot.home_positions()
        return PiperEmulator(
            channel,
            [home[n] for n in robot.arm_joint_names(side)],
            initial_gripper_mm=2e3 * home[robot.gripper_joint_name(side)],
        )

    def __enter__(self) -> "PiperEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._bus.shutdown()

    def _handle(self, frame: can.Message) -> None:
        data = bytes(frame.data)
        with self._lock:
            if frame.arbitration_id in JOINT_COMMANDS:
                k = JOINT_COMMANDS.index(frame.arbitration_id)
                for i in range(2):
                    millideg = int.from_bytes(data[4 * i : 4 * i + 4], "big", signed=True)
                    self.targets[2 * k + i] = math.radians(millideg / 1000.0)
                self.commands_received += 1
            elif frame.arbitration_id == GRIPPER_COMMAND:
                self.gripper_target_mm = int.from_bytes(data[0:4], "big", signed=True) / 1000.0
            elif frame.arbitration_id == MOTION_CONTROL_2:
                self.ctrl_mode = data[0]
            elif frame.arbitration_id == ENABLE:
                self.enabled = data[1] == 0x02

    def _run(self) -> None:
        period = 1.0 / self._rate
        while not self._stop.is_set():
            start = time.monotonic()
            while (frame := self._bus.recv(timeout=0.0)) is not None:
                self._handle(frame)
            with self._lock:
                if self.enabled and self.arm_status == 0:
                    self.joints += np.clip(self.targets - self.joints, -self._speed * period, self._speed * period)
                    step = self._gripper_speed * period
                    self.gripper_mm += float(np.clip(self.gripper_target_mm - self.gripper_mm, -step, step))
                frames = self._feedback() if not self.silent else []
            for frame in frames:
                self._bus.send(frame)
            self._stop.wait(max(0.0, period - (time.monotonic() - start)))

    def _feedback(self) -> list[can.Message]:
        millideg = np.round(np.degrees(self.joints + self.reading_offset) * 1000.0).astype(int)
        frames = [
            can.Message(
                arbitration_id=fid, data=_int32_pair(millideg[2 * k], millideg[2 * k + 1]), is_extended_id=False
            )
            for k, fid in enumerate(JOINT_FEEDBACK)
        ]
        gripper = (
            int(round(self.gripper_mm * 1000)).to_bytes(4, "big", signed=True) + (0).to_bytes(2, "big") + b"\x00\x00"
        )
        frames.append(can.Message(arbitration_id=GRIPPER_FEEDBACK, data=gripper, is_extended_id=False))
        status = bytes([self.ctrl_mode, self.arm_status, 0, 0, 0, 0]) + int(self.err_code).to_bytes(2, "big")
        frames.append(can.Message(arbitration_id=STATUS, data=status, is_extended_id=False))
        return frames
