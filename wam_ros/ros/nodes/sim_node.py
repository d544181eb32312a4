"""sim_node: the MuJoCo dual-arm robot as ROS topics.

Publishes /clock (sim time), joint_states, and per camera the official drivers' topics
(<cam>/color/image_raw, <cam>/color/camera_info, <cam>/aligned_depth_to_color/image_raw as
16UC1 millimetres, <cam>/aligned_depth_to_color/camera_info). Executes the supervisor's
trajectory_msgs/JointTrajectory on joint_trajectory (a new one replaces the running one, as in
ros2_control's trajectory controller) through the arm bridge core; a bad trajectory is logged,
counted and stops the running one. Like arm_bridge_node it holds when a trajectory runs and
neither the supervisor's heartbeat (supervisor/heartbeat) nor a new trajectory arrived for
command_timeout seconds of sim time.

With task:=<name> the scene is a benchmark episode (wam_ros.sim.tasks: layout, condition, seed,
perturbation) and its stage markers and success are published on task/state (wam_ros/TaskState).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from wam_ros.config import CAMERA_NAMES, ROBOTS, ConfigError, load_robot_config
from wam_ros.msg import TaskState
from wam_ros.robots.bridge import Bridge, BridgeError, BridgeLimits, CommandRejected
from wam_ros.robots.sim import SimBackend
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import camera_info_msg, depth_to_millimetres, image_msg, to_time, trajectory_arrays
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import (
    CAMERA_INFO_QOS,
    CLOCK_QOS,
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    HEARTBEAT_QOS,
    HEARTBEAT_TOPIC,
    IMAGE_QOS,
    JOINT_STATE_QOS,
    LATCHED_QOS,
)
from wam_ros.sim.tasks import CONDITIONS, PERTURBATIONS, TASKS, EpisodeSpec, TaskMonitor, setup_world
from wam_ros.sim.world import SimConfig, SimWorld


class ClockConflictError(ConfigError):
    """Another node already publishes /clock on this ROS domain."""


@dataclass(frozen=True)
class SimParams:
    robot: str = param("agilex", "Robot setup to simulate", choices=ROBOTS)
    cameras_enabled: bool = param(True, "Render and publish the three RGB-D cameras")
    width: int = param(320, "Camera image width (px)", range_=(16, 4096))
    height: int = param(256, "Camera image height (px)", range_=(16, 4096))
    camera_rate: float = param(15.0, "Camera frame rate in sim time (Hz)", range_=(0.5, 120.0))
    joint_state_rate: float = param(100.0, "Physics update and joint_states rate (Hz)", range_=(10.0, 1000.0))
    real_time_factor: float = param(
        1.0,
        "Sim seconds per wall second at most (below 1: a slower world, e.g. so that "
        "a CPU's inference takes as long in sim time as a GPU's)",
        range_=(0.01, 100.0),
    )
    startup_clock_check_s: float = param(
        1.0, "How long to watch for another /clock publisher before starting (s)", range_=(0.0, 30.0)
    )
    command_timeout: float = param(
        0.5,
        "Hold when a trajectory runs and neither a supervisor heartbeat nor a new "
        "trajectory arrived for this long (s of sim time; 0: off)",
        range_=(0.0, 10.0),
    )
    task: str = param("", "Benchmark task to set up (empty: the robot config's scene)", choices=("", *TASKS))
    condition: str = param(
        "clean",
        "Task condition: clean (demo range) or random (lighting, texture, colours, clutter, positions)",
        choices=CONDITIONS,
    )
    seed: int = param(0, "Episode seed: object positions and appearance", range_=(0, 2**31 - 1))
    perturbation: str = param("none", "Mid-episode perturbation of the task object", choices=PERTURBATIONS)


class SimNode(Node):
    def __init__(self, node_name: str = "sim", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, SimParams)
        self.robot = load_robot_config(p.robot)
        self.world = SimWorld(
            self.robot, generate_urdf(self.robot), SimConfig(width=p.width, height=p.height, camera_rate=p.camera_rate)
        )
        self.task_monitor: TaskMonitor | None = None
        if p.task:
            spec = EpisodeSpec(p.task, self.robot.name, p.condition, p.seed, p.perturbation)
            self.task_monitor = TaskMonitor(self.world, setup_world(self.world, spec))
        # Only the sim loop touches the world; the command callback hands parsed trajectories
        # over through a queue guarded by a lock that is never held for long.
        self._command_lock = threading.Lock()
        # every trajectory is validated in arrival order (a str: a message refused while parsing); the
        # newest valid one runs
        self._pending_trajectories: deque[tuple[list[str], np.ndarray, np.ndarray] | str] = deque(maxlen=16)
        self._heartbeat: float | None = None  # sim time of a heartbeat's arrival, until the sim loop takes it
        # the sim bridge: the same limited streaming as the hardware bridges, into the servos
        self.bridge = Bridge(
            [SimBackend(self.world)],
            BridgeLimits.for_robot(self.robot, self.world.joint_names),
            self.world.joint_names,
            state_timeout=math.inf,
            command_timeout=p.command_timeout,
        )
        self.bridge.configure(self.world.time)
        self.bridge.activate(self.world.time)
        self._camera_period = 1.0 / p.camera_rate
        self._next_camera_time = 0.0
        self._render_ms = 0.0
        self._failure = ""
        self._camera_meter = diag.RateMeter()
        self._wall_start = time.monotonic()

        self.clock_pub = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        self._refuse_second_clock(p.startup_clock_check_s)
        self.joint_pub = self.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
        self.task_pub = self.create_publisher(TaskState, "task/state", LATCHED_QOS) if self.task_monitor else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.camera_pubs = {}
        if self.params.cameras_enabled:
            for cam in CAMERA_NAMES:
                self.camera_pubs[cam] = (
                    self.create_publisher(Image, f"{cam}/color/image_raw", IMAGE_QOS),
                    self.create_publisher(CameraInfo, f"{cam}/color/camera_info", CAMERA_INFO_QOS),
                    self.create_publisher(Image, f"{cam}/aligned_depth_to_color/image_raw", IMAGE_QOS),
                    self.create_publisher(CameraInfo, f"{cam}/aligned_depth_to_color/camera_info", CAMERA_INFO_QOS),
                )
        self.create_subscription(
            JointTrajectory,
            "joint_trajectory",
            self._on_trajectory,
            COMMAND_QOS,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.create_subscription(
            Header, HEARTBEAT_TOPIC, self._on_heartbeat, HEARTBEAT_QOS, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(
            1.0,
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        # The simulator is the time source: its loop runs in its own thread, paced by the
        # steady wall clock, and owns the OpenGL renderers (which are bound to one thread).
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, name="sim_loop", daemon=True)
        self._loop.start()
        self.get_logger().info(
            f"simulating {self.robot.name} ({len(self.world.joint_names)} joints), "
            f"cameras {'on' if self.params.cameras_enabled else 'off'}"
        )

    def _other_clock_publishers(self) -> list[str]:
        own = self.get_fully_qualified_name()
        names = (
            "a node whose name is not discovered yet"
            if "_UNKNOWN_" in info.node_name
            else f"/{info.node_namespace.strip('/')}/{info.node_name}".replace("//", "/")
            for info in self.get_publishers_info_by_topic("/clock")
        )
        return sorted(name for name in names if name != own)

    def _refuse_second_clock(self, timeout_s: float) -> None:
        """Two clocks (another sim, a bag played with --clock) make every sim-time node jump."""
        deadline = time.monotonic() + timeout_s
        while not (others := self._other_clock_publishers()):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)
        # a remote node's name arrives shortly after its publisher is discovered
        name_deadline = time.monotonic() + 2.0
        while any("not discovered" in name for name in others) and time.monotonic() < name_deadline:
            time.sleep(0.05)
            others = self._other_clock_publishers() or others
        self.destroy_publisher(self.clock_pub)
        raise ClockConflictError(
            f"/clock is already published by {', '.join(others)} on ROS_DOMAIN_ID="
            f"{os.environ.get('ROS_DOMAIN_ID', '0')}; stop it or use another ROS_DOMAIN_ID"
        )

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        # Parse here, validate and execute in the sim loop: the executor never waits for a render.
        try:
            pending = trajectory_arrays(msg, self.world.time)
        except ValueError as exc:  # counted, and stopping the running trajectory, in the sim loop
            pending = str(exc)
        with self._command_lock:
            self._pending_trajectories.append(pending)

    def _on_heartbeat(self, msg: Header) -> None:
        # its arrival in sim time (the bridge's clock here), never its stamp
        with self._command_lock:
            self._heartbeat = self.world.time

    def _run(self) -> None:
        period = 1.0 / self.params.joint_state_rate / self.params.real_time_factor  # wall seconds per physics tick
        deadline = time.monotonic()
        try:
            while not self._stop.is_set() and self.context.ok():
                self._tick()
                deadline += period
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -period:
                    deadline = time.monotonic()  # fell behind (rendering): run slower than real time
        except Exception as exc:  # keep the node alive and visible in /diagnostics
            if not self.context.ok():
                return  # shutting down (Ctrl-C): publishers are gone
            self._failure = f"simulation loop stopped: {exc!r}"
            self.get_logger().error(self._failure)
        finally:
            self.world.close()

    def _tick(self) -> None:
        with self._command_lock:
            pending = list(self._pending_trajectories)
            self._pending_trajectories.clear()
            heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            self.bridge.heartbeat(heartbeat)
        for trajectory in pending:
            if isinstance(trajectory, str):  # a message refused while parsing
                self.bridge.reject(trajectory)
                self.get_logger().warn(f"rejected trajectory message: {trajectory}", throttle_duration_sec=1.0)
                continue
            try:
                self.bridge.set_trajectory(*trajectory, now=self.world.time)
            except CommandRejected as exc:
                self.get_logger().warn(f"rejected trajectory: {exc}", throttle_duration_sec=1.0)
        try:
            self.bridge.step(self.world.time, 1.0 / self.params.joint_state_rate)
        except BridgeError as exc:  # an implausible reading: the arms hold, the simulation goes on
            self.get_logger().error(f"bridge error, arms held: {exc}", throttle_duration_sec=2.0)
        self.world.step(1.0 / self.params.joint_state_rate)
        now = self.world.time
        q, dq, tau = self.world.joint_positions(), self.world.joint_velocities(), self.world.joint_efforts()
        frames = None
        stamp = to_time(now)
        if now + 1e-9 >= self._next_camera_time:
            self._next_camera_time += self._camera_period
            if self.params.cameras_enabled:
                t0 = time.perf_counter()
                frames = self.world.render_all()
                self._render_ms = (time.perf_counter() - t0) * 1e3
            if self.task_monitor is not None:
                self._publish_task_state(stamp)
        elif self.task_monitor is not None:
            self.task_monitor.update()  # stages and perturbations at the physics rate
        self.clock_pub.publish(ClockMsg(clock=stamp))
        js = JointState()
        js.header.stamp = stamp
        js.name = self.world.joint_names
        js.position, js.velocity, js.effort = q.tolist(), dq.tolist(), tau.tolist()
        self.joint_pub.publish(js)
        if frames is not None:
            self._camera_meter.tick(now)
            for frame in frames:
                color_pub, color_info_pub, depth_pub, depth_info_pub = self.camera_pubs[frame.name]
                h, w = frame.depth.shape
                info = camera_info_msg(frame.K, w, h, stamp, frame.frame_id)
                color_pub.publish(image_msg(frame.rgb, "rgb8", stamp, frame.frame_id))
                color_info_pub.publish(info)
                depth_pub.publish(image_msg(depth_to_millimetres(frame.depth), "16UC1", stamp, frame.frame_id))
                depth_info_pub.publish(info)

    def _publish_task_state(self, stamp) -> None:
        monitor = self.task_monitor
        status, spec = monitor.update(), monitor.setup.spec
        msg = TaskState(
            task=spec.task,
            condition=spec.condition,
            seed=spec.seed,
            perturbation=spec.perturbation,
            stage=status.stage,
            num_stages=monitor.num_stages,
            stage_name=status.stage_name,
            success=status.success,
            perturbed=status.perturbed,
            time_to_success=status.time_to_success,
        )
        msg.header.stamp = stamp
        self.task_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        sim_time = self.world.time  # a float read; the sim loop may be mid-step
        wall = time.monotonic() - self._wall_start
        other_clocks = self._other_clock_publishers()
        if other_clocks and not self._failure:
            self.get_logger().error(
                f"another node publishes /clock: {', '.join(other_clocks)}", throttle_duration_sec=10.0
            )
        bridge = self.bridge.status
        level = (
            diag.ERROR
            if self._failure or other_clocks or bridge.error
            else diag.WARN
            if bridge.rejected or bridge.watchdog
            else diag.OK
        )
        values = {
            "sim_time_s": f"{sim_time:.3f}",
            "real_time_factor": f"{sim_time / max(wall, 1e-9):.3f}",
            "camera_rate_hz": f"{self._camera_meter.rate(sim_time):.2f}",
            "render_ms": f"{self._render_ms:.1f}",
            "command_latency_ms": f"{bridge.latency * 1e3:.1f}",
            "rejected_commands": bridge.rejected,
            "last_rejection": bridge.last_rejection,
            "bridge_error": bridge.error,
            "command_timeout_s": self.bridge.command_timeout,
            "watchdog": bridge.watchdog,
            "watchdog_stops": bridge.watchdog_stops,
            "other_clock_publishers": ", ".join(other_clocks),
        }
        if self._failure:
            msg = self._failure
        elif other_clocks:
            msg = f"/clock also published by {', '.join(other_clocks)}"
        else:
            msg = (
                bridge.error
                or bridge.watchdog
                or ("running" if not bridge.rejected else f"{bridge.rejected} commands rejected")
            )
        self.diag_pub.publish(
            diag.array_msg(
                to_time(sim_time),
                [
                    diag.status(
                        f"{self.get_fully_qualified_name()}: simulator", f"sim_{self.robot.name}", level, msg, values
                    )
                ],
            )
        )

    def destroy_node(self) -> None:
        self._stop.set()
        self._loop.join(timeout=5.0)
        super().destroy_node()


NODE_CLASS = SimNode


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, args)
