"""recorder_node: teleoperated demonstrations into rosbag2 (MCAP), one bag per episode.

In (recorded as serialized bytes, no conversion on the ROS thread):
    joint_states, joint_trajectory (commands the supervisor passed), policy/chunk (the command
    source's proposals), supervisor/state, and either `observations` (synced MultiViewRGBD,
    source:=synced) or each camera's color/depth images and camera_info (source:=raw).
Control: ~/start_episode (std_srvs/Trigger), ~/stop_episode (std_srvs/SetBool: data = success),
    recorder/command (std_msgs/String: start | success | failure | stop | toggle; what a keyboard
    or foot pedal sends; toggle starts, or ends a running episode as a success).
Out: /diagnostics (state, episode, MB written, drops, free disk; ERROR with the path and the free
    space after a failed write ended an episode, until the next one starts).

The recording itself lives in wam_ros.data.recorder; on Ctrl-C / SIGTERM an open episode is
closed and marked partial; a full disk ends it as disk_full, readable up to the failure; after a
crash `wam-ros dataset recover` (or any export) finishes it where it lies, full disk or not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from wam_ros.config import CAMERA_NAMES, ROBOTS, ConfigError, load_robot_config
from wam_ros.data.recorder import COMPRESSION_MODES, Recorder, RecorderConfig, RecorderError
from wam_ros.msg import ActionChunk, MultiViewRGBD, SupervisorState, TaskState
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import to_time
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, EVERY_MESSAGE_QOS, EVERY_SET_QOS, LATCHED_QOS, bag_profile

SOURCES = ("synced", "raw")
COMMANDS = ("start", "success", "failure", "stop", "toggle")


@dataclass(frozen=True)
class RecorderParams:
    robot: str = param("agilex", "Robot setup (stored in each episode)", choices=ROBOTS)
    directory: str = param("episodes", "Where episode bags are written")
    source: str = param("synced", "Record synced observations or the raw camera topics", choices=SOURCES)
    cameras: list[str] = param(list(CAMERA_NAMES), "Camera names (raw source: topic namespaces)")
    depth_topic: str = param("aligned_depth_to_color/image_raw", "Depth image topic per camera")
    compression: str = param(
        "none",
        "Image compression: none, jpeg or png color (depth becomes lossless compressedDepth PNG)",
        choices=COMPRESSION_MODES,
    )
    # writable: each episode stores the values they have when it starts (get_parameter), not these
    instruction: str = param("", "Task instruction stored with each episode", read_only=False)
    teleop: str = param("", "Teleoperation source stored with each episode", read_only=False)
    autostart_episode: bool = param(False, "Start an episode as soon as the node is up")
    jpeg_quality: int = param(90, "JPEG quality", range_=(1, 100))
    min_free_mb: float = param(
        1024.0, "Free disk space below which no episode starts and a running one ends (MB)", range_=(0.0, 1e9)
    )
    queue_mb: float = param(
        1024.0, "Messages waiting for the disk before new ones are dropped and counted (MB)", range_=(1.0, 1e6)
    )


def _bag_type(msg_type) -> str:
    """rosbags' name of an rclpy message class: sensor_msgs/msg/Image."""
    module = msg_type.__module__.split(".")
    return f"{module[0]}/msg/{msg_type.__name__}"


class RecorderNode(Node):
    def __init__(self, node_name: str = "recorder", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, RecorderParams)
        directory, cameras = Path(p.directory).expanduser(), list(p.cameras)
        try:
            config = RecorderConfig(
                directory=directory,
                compression=p.compression,
                jpeg_quality=p.jpeg_quality,
                min_free_mb=p.min_free_mb,
                queue_mb=p.queue_mb,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if p.compression != "none" and p.source == "synced":
            raise ConfigError("compression: synced observations are stored as recorded; use source:=raw to compress")
        robot = load_robot_config(p.robot)
        subscriptions: list[tuple[str, type, object]] = [
            ("joint_states", JointState, EVERY_MESSAGE_QOS),
            ("joint_trajectory", JointTrajectory, COMMAND_QOS),
            ("policy/chunk", ActionChunk, COMMAND_QOS),
            ("supervisor/state", SupervisorState, LATCHED_QOS),
            ("task/state", TaskState, EVERY_MESSAGE_QOS),
        ]  # stage markers of a simulated task, when there is one
        if p.source == "synced":
            subscriptions.append(("observations", MultiViewRGBD, EVERY_SET_QOS))
        else:
            depth_info = f"{p.depth_topic.rsplit('/', 1)[0]}/camera_info" if "/" in p.depth_topic else "camera_info"
            for cam in cameras:
                subscriptions += [
                    (f"{cam}/color/image_raw", Image, EVERY_SET_QOS),
                    (f"{cam}/{p.depth_topic}", Image, EVERY_SET_QOS),
                    (f"{cam}/color/camera_info", CameraInfo, EVERY_MESSAGE_QOS),
                    (f"{cam}/{depth_info}", CameraInfo, EVERY_MESSAGE_QOS),
                ]
        # fully qualified, as `ros2 bag record` stores them (`ros2 bag play --topics /joint_states`)
        topics = {self.resolve_topic_name(topic): _bag_type(msg_type) for topic, msg_type, _ in subscriptions}
        metadata = {
            "robot": robot.name,
            "source": p.source,
            "cameras": cameras,
            "joint_names": robot.joint_names,
            "sim": bool(self.get_parameter("use_sim_time").value),
            "calibration": {
                cam.name: {"parent": cam.parent, "xyz": list(cam.pose.xyz), "rpy": list(cam.pose.rpy)}
                for cam in robot.cameras
            },
        }
        self.recorder = Recorder(config, topics, metadata, on_event=self._on_recorder_event)
        for (topic, msg_type, qos), stored in zip(subscriptions, topics):
            self.create_subscription(msg_type, topic, self._writer_for(stored), qos, raw=True)
        self.create_subscription(String, "recorder/command", self._on_command, COMMAND_QOS)
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        self.create_service(SetBool, "~/stop_episode", self._srv_stop)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"recording {p.source} streams to {directory} ({len(topics)} topics)")
        if p.autostart_episode:
            self._autostart = self.create_timer(0.1, self._start_when_clock_runs)

    def _start_when_clock_runs(self) -> None:
        # under use_sim_time the clock reads 0 until /clock arrives; an episode starts on real stamps
        if self._now_ns() > 0:
            self._autostart.cancel()
            self._start()

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _writer_for(self, topic: str):
        def on_message(data: bytes) -> None:
            self.recorder.submit(topic, self._now_ns(), data)

        return on_message

    def _on_recorder_event(self, kind: str, info: dict) -> None:
        # writer thread: rclpy loggers are thread-safe
        if kind == "started":
            self.get_logger().info(
                f"episode {info['name']} started: {info['task']!r} ({info['teleop'] or 'no teleop'})"
            )
        elif kind == "stopped":
            dropped = sum(m["dropped"] for m in info.get("messages", {}).values())
            self.get_logger().info(
                f"episode {info['name']} ended: {info['outcome']}, {info['bytes'] / 2**20:.1f} MB, {dropped} dropped"
            )
        elif kind == "dropped":
            self.get_logger().warn(f"dropped a message on {info['topic']}: {info['error']}", throttle_duration_sec=1.0)
        elif kind == "failed":
            self.get_logger().error(f"{info['error']}: the episode ends there, readable up to the failure")
        elif kind == "unsaved":  # the record exists only here: log all of it
            self.get_logger().error(
                f"{info['path']}: its record could not be written ({info['error']}); "
                f"kept in memory until there is room: {json.dumps(info['episode'], sort_keys=True)}"
            )
        elif kind == "saved":
            self.get_logger().info(f"episode {info['name']}: its record is written now")

    def _start(self) -> tuple[bool, str]:
        try:
            path = self.recorder.start_episode(
                self._now_ns(),
                self.get_parameter("instruction").value,
                self.get_parameter("teleop").value,
                self._offered_qos(),
            )
        except RecorderError as exc:
            self.get_logger().error(f"cannot start an episode: {exc}")
            return False, str(exc)
        return True, str(path)

    def _offered_qos(self) -> dict[str, list[dict]]:
        """Each recorded topic's publishers' QoS now (none yet: an empty list, as rosbag2 stores it)."""
        return {
            topic: [bag_profile(info.qos_profile) for info in self.get_publishers_info_by_topic(topic)]
            for topic in self.recorder.topics
        }

    def _stop(self, outcome: str) -> tuple[bool, str]:
        try:
            episode = self.recorder.stop_episode(self._now_ns(), outcome)
        except RecorderError as exc:
            self.get_logger().warn(f"cannot stop: {exc}")
            return False, str(exc)
        return True, f"{episode.get('name')}: {episode.get('outcome')}"

    def _on_command(self, msg: String) -> None:
        command = msg.data.strip().lower()
        if command not in COMMANDS:
            self.get_logger().warn(f"recorder/command: unknown {msg.data!r}; expected one of {', '.join(COMMANDS)}")
        elif command == "start" or (command == "toggle" and not self.recorder.recording):
            self._start()
        else:
            self._stop({"success": "success", "toggle": "success", "failure": "failure", "stop": "partial"}[command])

    def _srv_start(self, request, response):
        response.success, response.message = self._start()
        return response

    def _srv_stop(self, request, response):
        response.success, response.message = self._stop("success" if request.data else "failure")
        return response

    def _publish_diagnostics(self) -> None:
        status = self.recorder.status()
        level = diag.WARN if status["dropped"] else diag.OK
        message = f"recording {status['episode']}" if status["recording"] else "idle"
        if status["error"] or status["unsaved"]:  # a failed write ended an episode
            level = diag.ERROR
            if status["error"]:
                message += f"; last episode: {status['error']}"
            if status["unsaved"]:
                message += f"; records not written yet (kept in memory): {', '.join(status['unsaved'])}"
            free = "unknown" if status["free_mb"] is None else f"{status['free_mb']} MB"
            message += f"; {free} free in {self.recorder.config.directory}"
        self.diag_pub.publish(
            diag.array_msg(
                to_time(self._now_ns() * 1e-9),
                [diag.status(f"{self.get_fully_qualified_name()}: recorder", "recorder", level, message, status)],
            )
        )

    def destroy_node(self) -> None:
        # Ctrl-C / SIGTERM: whatever was recorded is kept; an open episode ends marked partial
        self.recorder.close(self._now_ns())
        super().destroy_node()


NODE_CLASS = RecorderNode


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)
