"""scripted_motion_node: streams smooth joint targets (ScriptedMotion) on joint_commands."""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import JointState

from wam_ros.config import ROBOTS, load_robot_config
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare
from wam_ros.ros.qos import COMMAND_QOS
from wam_ros.sim.motion import MotionConfig, ScriptedMotion


class ScriptedMotionNode(Node):
    def __init__(self, node_name: str = "scripted_motion", **kwargs):
        super().__init__(node_name, **kwargs)
        robot = declare(self, "robot", "agilex", "Robot setup whose joints are commanded", choices=ROBOTS)
        rate = declare(self, "rate", 50.0, "Command rate (Hz, ROS time)", range_=(1.0, 1000.0))
        amplitude = declare(self, "amplitude", 0.35, "Joint motion amplitude (rad)", range_=(0.0, 1.5))
        period = declare(self, "period", 6.0, "Base period of the motion (s)", range_=(0.5, 120.0))
        self.motion = ScriptedMotion(load_robot_config(robot), MotionConfig(amplitude=amplitude, period=period))
        self.pub = self.create_publisher(JointState, "joint_commands", COMMAND_QOS)
        self._start_ns: int | None = None
        # ROS time (sim time under use_sim_time), so the motion follows the simulator's clock.
        self.create_timer(1.0 / rate, self._tick)

    def _tick(self) -> None:
        now = self.get_clock().now()
        if now.nanoseconds == 0:
            return  # no /clock received yet
        if self._start_ns is None:
            self._start_ns = now.nanoseconds
        t = (now.nanoseconds - self._start_ns) * 1e-9
        msg = JointState()
        msg.header.stamp = now.to_msg()
        msg.name = self.motion.joint_names
        msg.position = self.motion.targets(t).tolist()
        self.pub.publish(msg)


NODE_CLASS = ScriptedMotionNode


def main(args: list[str] | None = None) -> int:
    return run_node(ScriptedMotionNode, args)
