"""teleop_node: an operator's commands as ActionChunks on policy/chunk, the topic the supervisor
checks and forwards to the arm bridge (a teleoperator never bypasses the supervisor).

source:=leader      AgileX / Cobot Magic leader arms: /master/joint_left|right (the AgileX bridge
                    reads them from the leader CAN buses) mirrored joint for joint.
source:=spacemouse  3Dconnexion SpaceMouse (HID): 6-DoF twist of the active arm's TCP, IK to joint
                    targets; button 0 toggles the gripper, button 1 switches the arm.
source:=keyboard    keys in the node's terminal (wam_ros.teleop.keyboard); space / x also start and
                    end recorder episodes through recorder/command.
(The scripted expert in the simulator is scripted_motion_node.)

Every tick publishes a one-step chunk of absolute joint targets (both arms, both grippers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from wam_ros.config import ROBOTS, SIDES, ConfigError, load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.msg import ActionChunk, GateState
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS, JOINT_STATE_QOS
from wam_ros.teleop.cartesian import CartesianTeleop, TwistLimits

SOURCES = ("leader", "spacemouse", "keyboard")


@dataclass(frozen=True)
class TeleopParams:
    robot: str = param("agilex", "Robot setup whose arms are commanded", choices=ROBOTS)
    source: str = param("leader", "Teleoperation device", choices=SOURCES)
    rate: float = param(30.0, "Command rate (Hz)", range_=(1.0, 500.0))
    max_linear_speed: float = param(0.10, "TCP speed at full deflection (m/s)", range_=(0.001, 1.0))
    max_angular_speed: float = param(0.6, "TCP rotation speed at full deflection (rad/s)", range_=(0.01, 3.0))


class TeleopNode(Node):
    def __init__(self, node_name: str = "teleop", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, TeleopParams)
        self.robot = load_robot_config(p.robot)
        limits = TwistLimits(linear=p.max_linear_speed, angular=p.max_angular_speed)
        self.dt = 1.0 / p.rate
        self.stroke = self.robot.arm.gripper.stroke
        self.arm_names = [n for side in SIDES for n in self.robot.arm_joint_names(side)]
        self.gripper_names = [self.robot.gripper_joint_name(side) for side in SIDES]
        self.measured: dict[str, float] = {}
        self.targets: dict[str, float] = {}
        self.gripper_open = {side: 1.0 for side in SIDES}
        self.active_side = "left"
        self._chunk_id = 0
        self.pub = self.create_publisher(ActionChunk, "policy/chunk", COMMAND_QOS)
        self.recorder_pub = self.create_publisher(String, "recorder/command", COMMAND_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, JOINT_STATE_QOS)
        self.device = self.keyboard = self.terminal = None
        if self.params.source == "leader":
            for side in SIDES:
                self.create_subscription(
                    JointState,
                    f"/master/joint_{side}",
                    lambda msg, side=side: self._on_leader(side, msg),
                    JOINT_STATE_QOS,
                )
        else:
            kinematics = Kinematics(generate_urdf(self.robot))
            self.arms = {side: CartesianTeleop(self.robot, kinematics, side, limits) for side in SIDES}
            self._open_device()
        self.create_timer(self.dt, self._tick)
        self.get_logger().info(f"teleop from {self.params.source} at {p.rate:.0f} Hz on policy/chunk")

    def _open_device(self) -> None:
        if self.params.source == "spacemouse":
            from wam_ros.teleop.spacemouse import SpaceMouseDevice, SpaceMouseError

            try:
                self.device = SpaceMouseDevice()
            except SpaceMouseError as exc:
                raise ConfigError(f"source spacemouse: {exc}") from None
            self._buttons = 0
        else:
            from wam_ros.teleop.keyboard import KEY_MAP, KeyboardState, Terminal

            try:
                self.terminal = Terminal()
            except RuntimeError as exc:
                raise ConfigError(f"source keyboard: {exc}") from None
            self.keyboard = KeyboardState()
            print(KEY_MAP, flush=True)  # on the terminal the keys are typed in

    def _on_joint_states(self, msg: JointState) -> None:
        self.measured.update(zip(msg.name, msg.position))
        if self.params.source != "leader" and all(n in self.measured for n in self.arm_names):
            for arm in self.arms.values():
                if arm.target is None:  # start from the measured pose once every joint is known
                    arm.sync(self.measured)

    def _on_leader(self, side: str, msg: JointState) -> None:
        positions = list(msg.position)
        joints = self.robot.arm_joint_names(side)
        if len(positions) < len(joints) or not all(math.isfinite(v) for v in positions):
            self.get_logger().warn(
                f"/master/joint_{side}: {len(positions)} positions, need {len(joints)} (+ gripper), all finite",
                throttle_duration_sec=1.0,
            )
            return
        self.targets.update(zip(joints, positions))
        if len(positions) > len(joints):
            self.gripper_open[side] = float(np.clip(positions[len(joints)] / self.stroke, 0.0, 1.0))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _cartesian_input(self) -> np.ndarray:
        if self.device is not None:
            state = self.device.poll()
            pressed = state.buttons & ~self._buttons
            self._buttons = state.buttons
            if pressed & 1:
                self.gripper_open[self.active_side] = 0.0 if self.gripper_open[self.active_side] > 0.5 else 1.0
            if pressed & 2:
                self.active_side = "right" if self.active_side == "left" else "left"
            return state.twist()
        now = self._now()
        for key in self.terminal.keys():
            command = self.keyboard.press(key, now)
            if command:
                self.recorder_pub.publish(String(data=command))
        self.active_side = self.keyboard.side
        self.gripper_open.update({s: 1.0 if is_open else 0.0 for s, is_open in self.keyboard.gripper_open.items()})
        return self.keyboard.twist(now)

    def _tick(self) -> None:
        if self.params.source != "leader":
            twist = self._cartesian_input()
            arm = self.arms[self.active_side]
            if arm.target is None:
                return  # no joint state yet
            try:
                for a in self.arms.values():
                    self.targets.update(a.step(twist if a is arm else np.zeros(6), self.dt))
            except ValueError as exc:
                self.get_logger().warn(f"bad device input: {exc}", throttle_duration_sec=1.0)
                return
        if not all(n in self.targets for n in self.arm_names):
            return  # nothing to command until every arm has a target
        self._chunk_id += 1
        now = self.get_clock().now()
        msg = ActionChunk(
            chunk_id=self._chunk_id,
            action_space=ActionChunk.ACTION_SPACE_JOINT_POSITION,
            joint_names=self.arm_names,
            horizon=1,
            dt=self.dt,
            positions=[float(self.targets[n]) for n in self.arm_names],
            gripper_names=self.gripper_names,
            gripper=[self.gripper_open[s] for s in SIDES],
            expert=GateState.EXPERT_TELEOP,
            value=math.nan,
        )
        msg.header.stamp = now.to_msg()
        msg.execute_from = now.to_msg()
        self.pub.publish(msg)

    def destroy_node(self) -> None:
        if self.terminal is not None:
            self.terminal.close()
        if self.device is not None:
            self.device.close()
        super().destroy_node()


NODE_CLASS = TeleopNode


def main(args: list[str] | None = None) -> int:
    return run_node(TeleopNode, args)
