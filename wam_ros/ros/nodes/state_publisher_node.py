"""state_publisher_node: robot_state_publisher's job inside `wam-ros bringup`, where the ROS package
is not installed (the pip set-up): `robot_description` (latched std_msgs/String), `/tf_static` for
the fixed joints and `/tf` for the movable ones from `joint_states`, stamped with the joint states'
stamp. Same parameter and topic names as robot_state_publisher; the transforms come from
wam_ros.geometry.joint_tree. Under `ros2 launch` the real robot_state_publisher runs instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from wam_ros.config import ConfigError
from wam_ros.geometry.joint_tree import movable_transforms, parse_joints
from wam_ros.geometry.transforms import matrix_to_quaternion
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import JOINT_STATE_QOS, LATCHED_QOS

# tf2's conventions: /tf_static latched with every static transform in one message, /tf a deep queue
TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def transform_msg(parent: str, child: str, T: np.ndarray, stamp) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in T[:3, 3])
    w, x, y, z = matrix_to_quaternion(T)
    msg.transform.rotation.w, msg.transform.rotation.x = float(w), float(x)
    msg.transform.rotation.y, msg.transform.rotation.z = float(y), float(z)
    return msg


@dataclass(frozen=True)
class StatePublisherParams:
    robot_description: str = param("", "The robot's URDF (as robot_state_publisher takes it)")


class StatePublisherNode(Node):
    def __init__(self, node_name: str = "robot_state_publisher", **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = declare_params(self, StatePublisherParams)
        urdf = self.params.robot_description
        if not urdf.strip():
            raise ConfigError("robot_description: empty; give the URDF text")
        try:
            self.joints = parse_joints(urdf)
        except (ValueError, AttributeError, SyntaxError) as exc:  # ElementTree.ParseError is a SyntaxError
            raise ConfigError(f"robot_description: not a usable URDF: {exc}") from None
        self._parent = {j.child: j.parent for j in self.joints}
        self.create_publisher(String, "robot_description", LATCHED_QOS).publish(String(data=urdf))
        static = [
            transform_msg(j.parent, j.child, j.transform(), self.get_clock().now().to_msg())
            for j in self.joints
            if j.kind == "fixed"
        ]
        self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(TFMessage(transforms=static))
        self.tf_pub = self.create_publisher(TFMessage, "/tf", TF_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, JOINT_STATE_QOS)

    def _on_joint_states(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            return  # malformed: robot_state_publisher drops it too
        moved = movable_transforms(self.joints, dict(zip(msg.name, msg.position)))
        if moved:
            self.tf_pub.publish(
                TFMessage(
                    transforms=[
                        transform_msg(self._parent[child], child, T, msg.header.stamp) for child, T in moved.items()
                    ]
                )
            )


NODE_CLASS = StatePublisherNode


def main(args: list[str] | None = None) -> int:
    return run_node(StatePublisherNode, args)
