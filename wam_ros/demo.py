"""`make demo` / `wam-ros demo`: the simulated dual-arm robot driven by a World Action Model (or,
with --source scripted, by a scripted motion), watched over DDS by a monitor node; writes
summary.json, a contact sheet, an MP4 of the head camera with the supervisor state, the expert in
use and the predicted value written over it, and, with the policy, the rendered 4D prediction.

The policy is trained here on first use: demonstrations recorded in the simulator, then
`wam-ros train --config demo` (about 4 minutes on 2 cores); the checkpoint is reused
while it matches the `demo` config."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from wam_ros.config import CAMERA_NAMES, SIDES, load_robot_config
from wam_ros.data.images import colorize_depth
from wam_ros.episode_video import EpisodeTimeline, write_video
from wam_ros.msg import ActionChunk, GateState, RollbackEvent, SupervisorState, TaskState, ValueEstimate
from wam_ros.ros.bringup import apply_environment, create_nodes
from wam_ros.ros.conversions import from_time, image_array, pointcloud_from_msg, trajectory_arrays
from wam_ros.ros.node_main import make_executor
from wam_ros.ros.system import SystemOptions, describe_system, with_parameters
from wam_ros.ros.qos import CAMERA_INFO_QOS, CLOCK_QOS, COMMAND_QOS, IMAGE_QOS, JOINT_STATE_QOS, LATCHED_QOS

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from wam_ros.render_prediction import PredictionScene

# policy/markers' namespace of the predicted TCP paths (policy_node._markers)
TCP_PATH_NAMESPACE = "predicted_tcp_path"
CAMERA_TOPICS = ("color/image_raw", "color/camera_info", "aligned_depth_to_color/image_raw",
                 "aligned_depth_to_color/camera_info")


@dataclass(frozen=True)
class DdsPrediction:
    """One prediction as the policy node published it, with what the monitor saw around it."""

    stamp: float                        # the observation's time (sim), the cloud's header stamp
    cloud: PointCloud2
    joints: dict[str, float]            # the joint state nearest that time
    images: dict[str, np.ndarray]       # camera -> the newest colour image when the cloud arrived
    tcp_paths: dict[str, np.ndarray] = field(default_factory=dict)  # side -> (K, 3) from policy/markers


class DemoMonitor(Node):
    """Counts every topic by header stamp (sim time) and measures joint tracking error."""

    def __init__(self, robot: str, snapshot_time: float = 0.5, film_camera: str = "head"):
        super().__init__("demo_monitor", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.robot = load_robot_config(robot)
        self.arm_joints = [n for n in self.robot.joint_names if not n.endswith("_gripper")]
        self.stamps: dict[str, list[float]] = {}
        self.sim_time = 0.0
        # frames near the start (arms at home, after the first camera frames) and the newest ones
        self.snapshot_time = snapshot_time
        self.start_frames: dict[str, dict[str, np.ndarray]] = {c: {} for c in CAMERA_NAMES}
        self.latest_frames: dict[str, dict[str, np.ndarray]] = {c: {} for c in CAMERA_NAMES}
        self._trajectory: tuple[np.ndarray, list[str], np.ndarray] | None = None  # (times, names, points)
        self._first_clock: tuple[float, float] | None = None  # (wall, sim) at the first /clock
        self.tracking_errors: list[float] = []
        self.create_subscription(ClockMsg, "/clock", self._on_clock, CLOCK_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, JOINT_STATE_QOS)
        self.create_subscription(JointTrajectory, "joint_trajectory", self._on_trajectory, COMMAND_QOS)
        self.supervisor: SupervisorState | None = None
        self.create_subscription(SupervisorState, "supervisor/state", self._on_supervisor, LATCHED_QOS)
        self.create_subscription(ActionChunk, "policy/chunk", lambda m: self._record("policy/chunk", m.header.stamp),
                                 COMMAND_QOS)
        # the run's timeline (sim time), for its video
        self.film_camera = film_camera
        self.film: list[tuple[float, np.ndarray]] = []          # (stamp, colour image) of film_camera
        self.values: list[tuple[float, float, float]] = []      # (observation stamp, value, peak)
        self.experts: list[tuple[float, int]] = []              # (observation stamp, GateState.active_expert)
        self.states: list[tuple[float, str]] = []               # (sim time, supervisor state) at each change
        self.stages: list[tuple[float, str]] = []               # (sim time, task stage) at each change
        self.rollbacks: list[float] = []                        # sim times of rollback events
        self.perturbed_at: float | None = None                  # sim time the task's perturbation was first seen
        self.succeeded_at: float | None = None
        self.create_subscription(ValueEstimate, "policy/value", lambda m: self.values.append(
            (from_time(m.header.stamp), float(m.value), float(m.peak))), COMMAND_QOS)
        self.create_subscription(GateState, "policy/gate", lambda m: self.experts.append(
            (from_time(m.header.stamp), int(m.active_expert))), COMMAND_QOS)
        self.create_subscription(RollbackEvent, "supervisor/rollback", lambda m: self.rollbacks.append(
            self.sim_time), LATCHED_QOS)
        self.create_subscription(TaskState, "task/state", self._on_task, LATCHED_QOS)
        # the newest prediction with its TCP paths (they arrive after the cloud, with its stamp), the
        # joint state at its observation time and the camera images when it arrived
        self.prediction: DdsPrediction | None = None
        self._pending: DdsPrediction | None = None
        self._joint_history: deque[tuple[float, dict[str, float]]] = deque(maxlen=300)  # 3 s at 100 Hz
        self.create_subscription(PointCloud2, "policy/predicted_cloud", self._on_cloud, COMMAND_QOS)
        self.create_subscription(MarkerArray, "policy/markers", self._on_markers, COMMAND_QOS)
        for cam in CAMERA_NAMES:
            for topic in CAMERA_TOPICS:
                full = f"{cam}/{topic}"
                msg_type, qos = (CameraInfo, CAMERA_INFO_QOS) if topic.endswith("info") else (Image, IMAGE_QOS)
                self.create_subscription(msg_type, full, lambda m, t=full: self._on_camera(t, m), qos)

    def _record(self, topic: str, stamp) -> None:
        self.stamps.setdefault(topic, []).append(from_time(stamp))

    def _on_supervisor(self, msg: SupervisorState) -> None:
        self.supervisor = msg
        if not self.states or self.states[-1][1] != msg.state_name:
            self.states.append((self.sim_time, msg.state_name))

    def _on_task(self, msg: TaskState) -> None:
        stage = msg.stage_name or "start"  # no stage reached yet
        if not self.stages or self.stages[-1][1] != stage:
            self.stages.append((self.sim_time, stage))
        if msg.perturbed and self.perturbed_at is None:
            self.perturbed_at = self.sim_time
        if msg.success and self.succeeded_at is None:
            self.succeeded_at = self.sim_time

    def timeline(self, title: str) -> EpisodeTimeline:
        return EpisodeTimeline(title=title, frames=self.film, values=self.values, experts=self.experts,
                               states=self.states, stages=self.stages, rollbacks=self.rollbacks,
                               slip=self.perturbed_at, success=self.succeeded_at)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._record("policy/predicted_cloud", msg.header.stamp)
        stamp = from_time(msg.header.stamp)
        if not self._joint_history:
            return
        joints = min(self._joint_history, key=lambda entry: abs(entry[0] - stamp))[1]
        self._pending = DdsPrediction(stamp, msg, joints, {c: f["color"].copy() for c, f in self.latest_frames.items()
                                                           if "color" in f})

    def _on_markers(self, msg: MarkerArray) -> None:
        # the node numbers its paths in SIDES order (DeployedPolicy.tcp_paths)
        paths = {SIDES[m.id]: np.array([[p.x, p.y, p.z] for p in m.points]) for m in msg.markers
                 if m.ns == TCP_PATH_NAMESPACE}
        pending = self._pending
        if paths and pending is not None and any(from_time(m.header.stamp) == pending.stamp for m in msg.markers):
            self.prediction = replace(pending, tcp_paths=paths)
            self._pending = None

    def _on_clock(self, msg: ClockMsg) -> None:
        self.sim_time = from_time(msg.clock)
        if self._first_clock is None:
            self._first_clock = (time.monotonic(), self.sim_time)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self._record("joint_trajectory", msg.header.stamp)
        names, times, points = trajectory_arrays(msg, self.sim_time)
        self._trajectory = (times, names, points)

    def _on_joint_states(self, msg: JointState) -> None:
        self._record("joint_states", msg.header.stamp)
        t = from_time(msg.header.stamp)
        q = dict(zip(msg.name, msg.position))
        self._joint_history.append((t, q))
        if self._trajectory is None:
            return
        times, names, points = self._trajectory
        if len(times) < 2 or not times[0] <= t <= times[-1]:
            return  # compare only inside a commanded segment
        for column, name in enumerate(names):
            if name in self.arm_joints:
                self.tracking_errors.append(abs(q[name] - np.interp(t, times, points[:, column])))

    def _on_camera(self, topic: str, msg) -> None:
        self._record(topic, msg.header.stamp)
        if isinstance(msg, Image):
            cam, kind = topic.split("/", 1)
            kind = "depth" if "depth" in kind else "color"
            frame = image_array(msg).copy()
            self.latest_frames[cam][kind] = frame
            if cam == self.film_camera and kind == "color":
                self.film.append((from_time(msg.header.stamp), frame))
            if from_time(msg.header.stamp) <= self.snapshot_time or kind not in self.start_frames[cam]:
                self.start_frames[cam][kind] = frame

    def summary(self) -> dict:
        topics = {}
        for topic, stamps in sorted(self.stamps.items()):
            span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
            topics[topic] = {"messages": len(stamps),
                             "rate_hz_sim_time": round((len(stamps) - 1) / span, 2) if span > 0 else 0.0}
        err = np.array(self.tracking_errors) if self.tracking_errors else np.array([np.nan])
        wall = time.monotonic() - self._first_clock[0] if self._first_clock else float("nan")
        sim = self.sim_time - self._first_clock[1] if self._first_clock else float("nan")
        return {
            "robot": self.robot.name,
            "sim_time_s": round(self.sim_time, 3),
            "real_time_factor": round(sim / wall, 3) if wall > 0 else None,
            "topics": topics,
            "supervisor": None if self.supervisor is None else {
                "state": self.supervisor.state_name, "reason": self.supervisor.reason,
                "chunks_forwarded": self.supervisor.chunks_forwarded,
                "chunks_rejected": self.supervisor.chunks_rejected, "last_rejection": self.supervisor.last_rejection},
            "joint_tracking_error_rad": {"mean": float(np.nanmean(err)), "p95": float(np.nanpercentile(err, 95)),
                                          "max": float(np.nanmax(err)), "samples": int(np.isfinite(err).sum())},
        }


def contact_sheet(snapshots: dict[str, dict[str, dict[str, np.ndarray]]], path: Path) -> None:
    """One column per camera; per snapshot (e.g. start, end) a color row and a colorized depth row."""
    from PIL import Image as PILImage, ImageDraw

    rows = []
    for label, frames in snapshots.items():
        for kind in ("color", "depth"):
            tiles = []
            for cam in CAMERA_NAMES:
                image = frames[cam].get(kind)
                if image is None:
                    raise RuntimeError(f"no {kind} frame received from camera {cam}")
                tile = PILImage.fromarray(image if kind == "color" else colorize_depth(image))
                ImageDraw.Draw(tile).text((6, 4), f"{cam} {kind} ({label})", fill=(255, 255, 255))
                tiles.append(np.asarray(tile))
            rows.append(np.concatenate(tiles, axis=1))
    PILImage.fromarray(np.concatenate(rows, axis=0)).save(path)


@dataclass(frozen=True)
class DemoTraining:
    """The demo policy's data and training (short forms for tests)."""

    demos: int = 8
    from_home: int = 3
    seconds: float = 10.0
    video_steps: int = 200
    joint_steps: int = 2400


def demo_policy(robot: str, out_dir: Path, training: DemoTraining) -> Path:
    """A `demo` checkpoint for the robot: reused if it exists and matches the config, else recorded
    and trained here with the train CLI."""
    from wam_ros.model.config import load_model_config
    from wam_ros.model.episodes import save_dataset
    from wam_ros.model.policy import CheckpointMismatch, load_policy
    from wam_ros.sim.demonstrations import DemoConfig, record_demonstrations

    config = load_model_config("demo")
    checkpoint = out_dir / f"policy_{robot}.pt"
    if checkpoint.is_file():
        try:
            load_policy(checkpoint, expect_config=config)
            print(f"[demo] reusing {checkpoint}", file=sys.stderr)
            return checkpoint
        except CheckpointMismatch as exc:
            print(f"[demo] retraining: {exc}", file=sys.stderr)
    print(f"[demo] recording {training.demos} demonstrations in the simulator", file=sys.stderr)
    meta, episodes = record_demonstrations(DemoConfig(robot=robot, episodes=training.demos, from_home=training.from_home,
                                                      seconds=training.seconds, image_size=tuple(config.image_size)))
    data = out_dir / f"data_{robot}"
    save_dataset(data, meta, episodes)
    command = [sys.executable, "-m", "wam_ros.cli", "train", "--data", str(data), "--config", "demo", "--robot", robot,
               "--out", str(checkpoint), "--video-steps", str(training.video_steps), "--joint-steps",
               str(training.joint_steps), "--threads", "2"]
    print(f"[demo] {' '.join(command[2:])}", file=sys.stderr)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return checkpoint


def dds_scene(prediction: DdsPrediction, robot: str, checkpoint: Path) -> PredictionScene:
    """The 4D cloud received over DDS as a figure scene like `wam-ros render-prediction`'s (the
    predicted frames themselves are not published; the checkpoint gives the frames' times)."""
    from wam_ros.model.policy import load_policy
    from wam_ros.render_prediction import PredictionScene, frame_times

    policy = load_policy(checkpoint)
    cfg, fps = policy.cfg, policy.meta.fps
    cloud = pointcloud_from_msg(prediction.cloud)
    steps = max((len(p) for p in prediction.tcp_paths.values()), default=0)
    return PredictionScene(
        robot=load_robot_config(robot), cloud=cloud, frame_times=frame_times(cfg.horizon, cfg.actions_per_frame, fps),
        joints=prediction.joints, title=(f"predicted 4D cloud received over DDS, observation at "
                                         f"t={prediction.stamp:.2f} s (sim), {len(cloud)} points"),
        tcp_paths={f"{side} TCP": p for side, p in prediction.tcp_paths.items()},
        path_times=(np.arange(steps) + 1) / fps, images=prediction.images)


def run_demo(robot: str, duration: float, out_dir: Path, wall_timeout: float | None = None, source: str = "policy",
             training: DemoTraining | None = None) -> dict:
    """Bring up the system of `wam-ros bringup robot:=<robot> checkpoint:=<demo policy>` (or
    motion:=scripted) and watch it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    options, supervisor = SystemOptions(robot=robot, motion="scripted"), {}
    if source == "policy":
        options = SystemOptions(robot=robot, checkpoint=str(demo_policy(robot, out_dir, training or DemoTraining())))
        # The demo model is trained for minutes: the supervisor clamps its chunks into the limits
        # instead of rejecting them. Its task (follow the scripted motion) has no failure to recover
        # from, so value-guided rollback stays off: its value head has nothing meaningful to say.
        supervisor = {"clamp": True, "rollback.enabled": False}
    specs = with_parameters(describe_system(options), "supervisor_node", supervisor)
    apply_environment()
    rclpy.init(args=["wam-ros"])
    nodes, _ = create_nodes(specs)
    monitor = DemoMonitor(robot)
    executor = make_executor()
    for node in (*nodes, monitor):
        executor.add_node(node)
    deadline = time.monotonic() + (wall_timeout or 120.0 + 10.0 * duration)
    try:
        while monitor.sim_time < duration:
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulation reached only {monitor.sim_time:.1f} s of {duration} s")
            executor.spin_once(timeout_sec=0.1)
        summary = monitor.summary()
        summary["duration_s"] = duration
        contact_sheet({"start": monitor.start_frames, f"t={duration:g} s": monitor.latest_frames},
                      out_dir / "contact_sheet.png")
        video = out_dir / f"{source}.mp4"  # at the camera's rate in sim time: the video plays in sim time
        fps = summary["topics"][f"{monitor.film_camera}/color/image_raw"]["rate_hz_sim_time"]
        summary["video"] = {"path": str(video), "frames": write_video(monitor.timeline(f"{robot}, {source}"), video, fps)}
        if source == "policy":
            if monitor.prediction is None:
                raise RuntimeError("the policy published no predicted cloud with its TCP paths")
            summary["checkpoint"] = options.checkpoint
            from wam_ros.render_prediction import prediction_figure, save_figure

            save_figure(prediction_figure(dds_scene(monitor.prediction, robot, Path(options.checkpoint))),
                        out_dir / "prediction_4d.png")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        executor.shutdown()
        for node in (*nodes, monitor):
            node.destroy_node()
        rclpy.try_shutdown()
