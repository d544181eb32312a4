"""AgileX Piper arm backend over CAN with piper_sdk (one CAN port per arm).

Joint targets go out as JointCtrl in 0.001 deg after MotionCtrl_2 (CAN command mode, MOVE J);
the gripper as GripperCtrl in 0.001 mm of opening (opening = 2 x one finger's travel).
Feedback: joint angles, gripper opening and the arm status frame (0x2A1); feedback that stops
advancing makes the bridge report a lost connection. Faults (`piper_fault`):
- arm_status other than 0x00 (normal). That includes the teach states 0x0B-0x0D (record,
  execution, pause): in teach mode a person moves the arm by hand (or the arm replays a
  recording), so streaming commands to it is unsafe; it is reported as "arm in teach mode".
- err_code with arm_status normal. piper_sdk decodes err_code (bytes 6-7 of 0x2A1, big-endian)
  as per-joint bits: bits 0-5 joint 1-6 communication error, bits 8-13 joint 1-6 angle limit
  exceeded (ArmMsgFeedbackStatus.err_code); either means a joint cannot be trusted or commanded,
  so any of those bits is a fault. The reserved bits (6, 7, 14, 15) carry no meaning and are ignored.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np

from wam_ros.robots.bridge import ArmState, BridgeError

# arm_status values of the 0x2A1 status frame (piper_sdk ArmMsgFeedbackStatus)
ARM_STATUS = {
    0x00: "normal",
    0x01: "emergency stop",
    0x02: "no solution",
    0x03: "singularity",
    0x04: "target angle exceeds limit",
    0x05: "joint communication error",
    0x06: "joint brake not released",
    0x07: "collision",
    0x08: "overspeed during teach drag",
    0x09: "joint status error",
    0x0A: "other error",
    0x0B: "teach record",
    0x0C: "teach execution",
    0x0D: "teach pause",
    0x0E: "NTC over temperature",
    0x0F: "release resistor NTC over temperature",
}
TEACH_STATES = (0x0B, 0x0C, 0x0D)
CAN_COMMAND_MODE, MOVE_J = 0x01, 0x01
CAN_BITRATE = 1_000_000  # the Piper's CAN bus
DEFAULT_CAN_PORTS = ("can_left", "can_right")  # the names AgileX's can_config.sh gives the two arms' adapters
ARPHRD_CAN = 280  # /sys/class/net/<if>/type of a CAN interface
IFF_UP = 0x1


def can_interface_problem(
    port: str, net: Path = Path("/sys/class/net"), details: dict | None = None
) -> tuple[str, str]:
    """(what keeps a SocketCAN port from talking to a Piper, the fix); ("", "") when nothing.
    `details`: the interface's `ip -details -json link show` entry (read here when None)."""
    up = f"sudo ip link set {port} up type can bitrate {CAN_BITRATE}"
    where = net / port
    if not where.exists():
        present = (
            sorted(
                p.name
                for p in net.iterdir()
                if (p / "type").is_file() and (p / "type").read_text().strip() == str(ARPHRD_CAN)
            )
            if net.is_dir()
            else []
        )
        return (
            f"CAN interface {port} does not exist (CAN interfaces here: {', '.join(present) or 'none'})",
            f"plug in the USB-CAN adapter, name it (AgileX can_config.sh), `{up}`, or set agilex.can_ports",
        )
    if (where / "type").read_text().strip() != str(ARPHRD_CAN):
        return f"{port} is not a CAN interface", "set agilex.can_ports to the Pipers' CAN ports"
    if not int((where / "flags").read_text().strip(), 16) & IFF_UP:
        return f"CAN interface {port} is down", f"`{up}`"
    if details is None:
        try:
            out = subprocess.run(
                ["ip", "-details", "-json", "link", "show", port],
                capture_output=True,
                text=True,
                timeout=5.0,
                check=True,
            ).stdout
            details = json.loads(out)[0]
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return "", ""  # no `ip` to ask: the bitrate is checked by the arm answering
    bitrate = details.get("linkinfo", {}).get("info_data", {}).get("bittiming", {}).get("bitrate")
    if bitrate is not None and int(bitrate) != CAN_BITRATE:
        return (
            f"CAN interface {port} runs at {int(bitrate)} bit/s, the Piper at {CAN_BITRATE}",
            f"`sudo ip link set {port} down` then `{up}`",
        )
    return "", ""


def piper_fault(arm_status: int, err_code: int) -> str:
    """The fault named by a 0x2A1 status frame ('' when there is none); see the module docstring."""
    name = ARM_STATUS.get(arm_status, "unknown")
    if arm_status in TEACH_STATES:
        return f"arm in teach mode (0x{arm_status:02X} {name}): leave teach mode on the arm, then ~/recover"
    if arm_status != 0x00:
        return f"arm status 0x{arm_status:02X} ({name}), err_code 0x{err_code:04X}"
    joints = [f"joint {i + 1} communication error" for i in range(6) if err_code & (1 << i)]
    joints += [f"joint {i + 1} beyond its angle limit" for i in range(6) if err_code & (1 << (8 + i))]
    return f"err_code 0x{err_code:04X}: {', '.join(joints)}" if joints else ""


class PiperBackend:
    def __init__(
        self,
        side: str,
        can_port: str,
        interface: str = "socketcan",
        speed_percent: int = 100,
        gripper_effort: float = 1.0,
        feedback_timeout: float = 2.0,
    ):
        self.side = side
        self.can_port = can_port
        self.interface = interface
        self.speed_percent = int(speed_percent)
        self.gripper_effort_mnm = int(round(gripper_effort * 1000))  # 0.001 N·m
        self.feedback_timeout = feedback_timeout
        self.joint_names = [f"{side}_joint{i}" for i in range(1, 7)] + [f"{side}_gripper"]
        self.sdk = None
        self._last_sdk_stamp = -1.0
        self._fresh_at = -math.inf
        self._last_positions: np.ndarray | None = None
        self._last_read = -math.inf

    def connect(self) -> None:
        from piper_sdk import C_PiperInterface_V2

        if self.interface == "socketcan":
            problem, fix = can_interface_problem(self.can_port)
            if problem:  # piper_sdk would fail with only its object's repr
                raise BridgeError(f"{self.side} Piper: {problem}; {fix}")
            self.sdk = C_PiperInterface_V2(can_name=self.can_port)
        else:  # python-can interfaces such as "virtual" (dry runs, tests)
            self.sdk = C_PiperInterface_V2(can_name=self.can_port, judge_flag=False, can_auto_init=False)
            self.sdk.CreateCanBus(self.can_port, bustype=self.interface, judge_flag=False)
        self.sdk.ConnectPort()
        # never command from an unknown state: wait for the arm's first joint feedback
        deadline = time.monotonic() + self.feedback_timeout
        while self.sdk.GetArmJointMsgs().time_stamp == 0:
            if time.monotonic() > deadline:
                self.disconnect()
                raise BridgeError(
                    f"{self.side} Piper: no joint feedback on CAN port {self.can_port} "
                    f"within {self.feedback_timeout:.1f} s (powered, CAN up, bitrate 1 Mbit/s?)"
                )
            time.sleep(0.01)

    def enable(self) -> None:
        self.sdk.EnableArm(7)
        self.sdk.MotionCtrl_2(CAN_COMMAND_MODE, MOVE_J, self.speed_percent, 0x00)

    def read(self, now: float) -> ArmState:
        joint_msgs = self.sdk.GetArmJointMsgs()
        if joint_msgs.time_stamp != self._last_sdk_stamp:
            self._last_sdk_stamp, self._fresh_at = joint_msgs.time_stamp, now
        j = joint_msgs.joint_state
        q = np.radians(np.array([j.joint_1, j.joint_2, j.joint_3, j.joint_4, j.joint_5, j.joint_6]) / 1000.0)
        opening_m = self.sdk.GetArmGripperMsgs().gripper_state.grippers_angle / 1e6
        positions = np.append(q, opening_m / 2.0)
        velocities = np.zeros(7)
        if self._last_positions is not None and now > self._last_read:
            velocities = (positions - self._last_positions) / (now - self._last_read)
        self._last_positions, self._last_read = positions, now
        status = self.sdk.GetArmStatus().arm_status
        return ArmState(
            positions,
            velocities,
            np.zeros(7),
            self._fresh_at,
            piper_fault(status.arm_status, status.err_code),
            f"ctrl_mode 0x{status.ctrl_mode:02X}",
        )

    def command(self, positions: np.ndarray) -> None:
        millideg = [int(round(math.degrees(q) * 1000.0)) for q in positions[:6]]
        self.sdk.MotionCtrl_2(CAN_COMMAND_MODE, MOVE_J, self.speed_percent, 0x00)
        self.sdk.JointCtrl(*millideg)
        self.sdk.GripperCtrl(int(round(positions[6] * 2.0 * 1e6)), self.gripper_effort_mnm, 0x01, 0)

    def hold(self) -> None:
        if self.sdk is not None and self._last_positions is not None:
            self.command(self._last_positions)

    def recover(self) -> None:
        self.enable()

    def disconnect(self) -> None:
        if self.sdk is not None:
            self.sdk.DisconnectPort()
            self.sdk = None
