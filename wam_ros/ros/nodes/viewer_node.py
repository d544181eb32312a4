"""viewer_node (`viewer:=web`): the live view in a browser (wam_ros.viewer, viser) fed from the
topics RViz shows: joint_states (the robot), policy/predicted_cloud and policy/live_cloud,
policy/value, and the head camera: head/color/image_raw, or on the policy host of a split deployment
(observation_transport:=compressed) the head view of observations/compressed, which is on the link
anyway. Open http://<host>:<port> (default 8080)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState, PointCloud2

from wam_ros.config import ROBOTS, ConfigError, load_robot_config
from wam_ros.data.images import ImageError
from wam_ros.msg import CompressedMultiViewRGBD, ValueEstimate
from wam_ros.ros.conversions import from_time, pointcloud_from_msg, view_array
from wam_ros.ros.link_conversions import compact_multiview_arrays
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS, IMAGE_QOS, JOINT_STATE_QOS
from wam_ros.viewer import WebViewer


@dataclass(frozen=True)
class ViewerParams:
    robot: str = param("agilex", "Robot setup", choices=ROBOTS)
    host: str = param("0.0.0.0", "Address the web viewer listens on")
    port: int = param(8080, "Port of the web viewer (0: any free one)", range_=(0, 65535))
    rate: float = param(10.0, "Most updates per second per stream (Hz)", range_=(0.1, 60.0))
    observation_transport: str = param(
        "raw",
        "Head camera from head/color/image_raw (raw) or from "
        "observations/compressed (compressed: the policy host of a split deployment)",
        choices=("raw", "compressed"),
    )


class ViewerNode(Node):
    def __init__(self, node_name: str = "viewer", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, ViewerParams)
        robot, host, port = load_robot_config(p.robot), p.host, p.port
        self.period = 1.0 / p.rate
        try:
            self.viewer = WebViewer(robot, host, port)
        except OSError as exc:
            raise ConfigError(f"port {port}: {exc}") from None
        self._last: dict[str, float] = {}
        self.create_subscription(JointState, "joint_states", self._on_joints, JOINT_STATE_QOS)
        for name in ("predicted", "live"):
            self.create_subscription(
                PointCloud2, f"policy/{name}_cloud", lambda m, n=name: self._on_cloud(n, m), IMAGE_QOS
            )
        self.create_subscription(ValueEstimate, "policy/value", self._on_value, COMMAND_QOS)
        if p.observation_transport == "raw":
            self.create_subscription(Image, "head/color/image_raw", self._on_image, IMAGE_QOS)
        else:
            self.create_subscription(CompressedMultiViewRGBD, "observations/compressed", self._on_set, IMAGE_QOS)
        self.get_logger().info(f"web viewer on http://{host}:{self.viewer.port}")

    def _due(self, stream: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(stream, -np.inf) < self.period:
            return False
        self._last[stream] = now
        return True

    def _on_joints(self, msg: JointState) -> None:
        if len(msg.position) == len(msg.name) and self._due("joints"):
            try:
                self.viewer.set_joints(dict(zip(msg.name, msg.position)))
            except KeyError as exc:  # joints of another robot
                self.get_logger().warn(f"joint_states: {exc}", throttle_duration_sec=10.0)

    def _on_cloud(self, name: str, msg: PointCloud2) -> None:
        if not self._due(name):
            return
        try:
            points = pointcloud_from_msg(msg).data
        except ValueError as exc:
            self.get_logger().warn(f"policy/{name}_cloud: {exc}", throttle_duration_sec=10.0)
            return
        xyz = np.stack([points["x"], points["y"], points["z"]], axis=1)
        rgb = np.stack([(points["rgb"] >> shift) & 0xFF for shift in (16, 8, 0)], axis=1)
        self.viewer.set_cloud(name, xyz, rgb)

    def _on_value(self, msg: ValueEstimate) -> None:
        if np.isfinite(msg.value):
            self.viewer.add_value(from_time(msg.header.stamp), msg.value)

    def _on_image(self, msg: Image) -> None:
        if self._due("image"):
            try:
                self.viewer.set_image(view_array(msg, "color"))
            except ImageError as exc:
                self.get_logger().warn(f"head/color/image_raw: {exc}", throttle_duration_sec=10.0)

    def _on_set(self, msg: CompressedMultiViewRGBD) -> None:
        if self._due("image") and not msg.degraded and "head" in msg.camera_names:
            try:
                self.viewer.set_image(compact_multiview_arrays(msg, ["head"])[0]["head"])
            except (ImageError, ValueError) as exc:
                self.get_logger().warn(f"observations/compressed: {exc}", throttle_duration_sec=10.0)

    def destroy_node(self) -> None:
        self.viewer.close()
        super().destroy_node()


NODE_CLASS = ViewerNode


def main(args: list[str] | None = None) -> int:
    return run_node(ViewerNode, args)
