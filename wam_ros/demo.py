"""`make demo` / `wam-ros demo`: the simulated AgileX does the pick-and-place task with a World
Action Model under the safety supervisor, through the node graph over DDS: a Clean episode, then
one where the cube slips from the gripper, the predicted value drops, the supervisor rolls back to
the last high-value checkpoint and the policy tries again. A monitor node watches each episode and
writes, per episode, an MP4 of the head camera (supervisor state, expert in use, value curve,
slip and rollbacks marked), a contact sheet and the predicted 4D cloud beside the real images, and
summary.json for all of them.

The policy is the one shipped in models/agilex_pick_place/ (made by `wam-ros benchmark`; its
provenance.json says how); `--train` (make demo TRAIN=1) records and trains it here instead.
`--source scripted` drives the arms with the scripted motion, on any robot.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
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
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.bringup import apply_environment
from wam_ros.ros.conversions import from_time, image_array, pointcloud_from_msg, trajectory_arrays
from wam_ros.ros.qos import (
    CAMERA_INFO_QOS,
    CLOCK_QOS,
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    EVERY_SET_QOS,
    IMAGE_QOS,
    JOINT_STATE_QOS,
    LATCHED_QOS,
)
from wam_ros.ros.system import SystemOptions, describe_system, with_parameters
from wam_ros.sim.world import SimConfig

if TYPE_CHECKING:  # matplotlib and torch are imported only when needed
    from wam_ros.benchmark.run import BenchmarkConfig
    from wam_ros.render_prediction import PredictionScene

# policy/markers' namespace of the predicted TCP paths (policy_node._markers)
TCP_PATH_NAMESPACE = "predicted_tcp_path"
CAMERA_TOPICS = (
    "color/image_raw",
    "color/camera_info",
    "aligned_depth_to_color/image_raw",
    "aligned_depth_to_color/camera_info",
)


@dataclass(frozen=True)
class DdsPrediction:
    """One prediction as the policy node published it, with what the monitor saw around it."""

    stamp: float  # the observation's time (sim), the cloud's header stamp
    cloud: PointCloud2
    joints: dict[str, float]  # the joint state nearest that time
    images: dict[str, np.ndarray]  # camera -> the newest colour image when the cloud arrived
    tcp_paths: dict[str, np.ndarray] = field(default_factory=dict)  # side -> (K, 3) from policy/markers


class DemoMonitor(Node):
    """Counts every topic by header stamp (sim time) and measures joint tracking error."""

    def __init__(
        self, robot: str, snapshot_time: float = 0.5, film_camera: str = "head", prediction_after: float = 0.0
    ):
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
        self.inference_latencies: list[float] = []  # seconds, per chunk (ActionChunk.inference_latency)
        self.create_subscription(ActionChunk, "policy/chunk", self._on_chunk, COMMAND_QOS)
        # the run's timeline (sim time), for its video
        self.film_camera = film_camera
        self.film: list[tuple[float, np.ndarray]] = []  # (stamp, colour image) of film_camera
        self.values: list[tuple[float, float, float]] = []  # (observation stamp, value, peak)
        self.experts: list[tuple[float, int]] = []  # (observation stamp, GateState.active_expert)
        self.states: list[tuple[float, str]] = []  # (sim time, supervisor state) at each change
        self.stages: list[tuple[float, str]] = []  # (sim time, task stage) at each change
        self.rollbacks: list[float] = []  # sim times of rollback events
        self.perturbed_at: float | None = None  # sim time the task's perturbation was first seen
        self.succeeded_at: float | None = None
        self.create_subscription(
            ValueEstimate,
            "policy/value",
            lambda m: self.values.append((from_time(m.header.stamp), float(m.value), float(m.peak))),
            COMMAND_QOS,
        )
        self.create_subscription(
            GateState,
            "policy/gate",
            lambda m: self.experts.append((from_time(m.header.stamp), int(m.active_expert))),
            COMMAND_QOS,
        )
        self.create_subscription(
            RollbackEvent, "supervisor/rollback", lambda m: self.rollbacks.append(self.sim_time), LATCHED_QOS
        )
        self.create_subscription(TaskState, "task/state", self._on_task, LATCHED_QOS)
        # every distinct error a node reports (a bridge that latched a fault holds the arms: an
        # episode can fail for that alone), with the sim time it was first seen
        self.faults: dict[tuple[str, str], float] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, DIAGNOSTICS_QOS)
        # the first prediction of an observation at or after prediction_after (the newest until
        # then) with its TCP paths (they arrive after the cloud, with its stamp), the joint state at
        # its observation time and the camera images when it arrived
        self.prediction_after = prediction_after
        self.prediction: DdsPrediction | None = None
        self._pending: DdsPrediction | None = None
        self._joint_history: deque[tuple[float, dict[str, float]]] = deque(maxlen=300)  # 3 s at 100 Hz
        self.create_subscription(PointCloud2, "policy/predicted_cloud", self._on_cloud, COMMAND_QOS)
        self.create_subscription(MarkerArray, "policy/markers", self._on_markers, COMMAND_QOS)
        for cam in CAMERA_NAMES:
            for topic in CAMERA_TOPICS:
                full = f"{cam}/{topic}"
                msg_type, qos = (CameraInfo, CAMERA_INFO_QOS) if topic.endswith("info") else (Image, IMAGE_QOS)
                if full == f"{film_camera}/color/image_raw":
                    qos = EVERY_SET_QOS  # every frame of the video, while inference holds the executor
                self.create_subscription(msg_type, full, lambda m, t=full: self._on_camera(t, m), qos)

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._record("policy/chunk", msg.header.stamp)
        self.inference_latencies.append(float(msg.inference_latency))

    def _record(self, topic: str, stamp) -> None:
        self.stamps.setdefault(topic, []).append(from_time(stamp))

    def _on_supervisor(self, msg: SupervisorState) -> None:
        self.supervisor = msg
        if not self.states or self.states[-1][1] != msg.state_name:
            self.states.append((self.sim_time, msg.state_name))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.level == diag.ERROR:
                self.faults.setdefault((status.name, status.message), self.sim_time)

    def _on_task(self, msg: TaskState) -> None:
        stage = msg.stage_name or "start"  # no stage reached yet
        if not self.stages or self.stages[-1][1] != stage:
            self.stages.append((self.sim_time, stage))
        if msg.perturbed and self.perturbed_at is None:
            self.perturbed_at = self.sim_time
        if msg.success and self.succeeded_at is None:
            self.succeeded_at = self.sim_time

    def timeline(self, title: str) -> EpisodeTimeline:
        return EpisodeTimeline(
            title=title,
            frames=self.film,
            values=self.values,
            experts=self.experts,
            states=self.states,
            stages=self.stages,
            rollbacks=self.rollbacks,
            slip=self.perturbed_at,
            success=self.succeeded_at,
        )

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._record("policy/predicted_cloud", msg.header.stamp)
        stamp = from_time(msg.header.stamp)
        if not self._joint_history or (self.prediction is not None and self.prediction.stamp >= self.prediction_after):
            return
        joints = min(self._joint_history, key=lambda entry: abs(entry[0] - stamp))[1]
        self._pending = DdsPrediction(
            stamp, msg, joints, {c: f["color"].copy() for c, f in self.latest_frames.items() if "color" in f}
        )

    def _on_markers(self, msg: MarkerArray) -> None:
        # the node numbers its paths in SIDES order (DeployedPolicy.tcp_paths)
        paths = {
            SIDES[m.id]: np.array([[p.x, p.y, p.z] for p in m.points])
            for m in msg.markers
            if m.ns == TCP_PATH_NAMESPACE
        }
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
            topics[topic] = {
                "messages": len(stamps),
                "rate_hz_sim_time": round((len(stamps) - 1) / span, 2) if span > 0 else 0.0,
            }
        err = np.array(self.tracking_errors) if self.tracking_errors else np.array([np.nan])
        wall = time.monotonic() - self._first_clock[0] if self._first_clock else float("nan")
        sim = self.sim_time - self._first_clock[1] if self._first_clock else float("nan")
        return {
            "robot": self.robot.name,
            "sim_time_s": round(self.sim_time, 3),
            "real_time_factor": round(sim / wall, 3) if wall > 0 else None,
            "topics": topics,
            "supervisor": None
            if self.supervisor is None
            else {
                "state": self.supervisor.state_name,
                "reason": self.supervisor.reason,
                "chunks_forwarded": self.supervisor.chunks_forwarded,
                "chunks_rejected": self.supervisor.chunks_rejected,
                "last_rejection": self.supervisor.last_rejection,
            },
            "joint_tracking_error_rad": {
                "mean": float(np.nanmean(err)),
                "p95": float(np.nanpercentile(err, 95)),
                "max": float(np.nanmax(err)),
                "samples": int(np.isfinite(err).sum()),
            },
            "inference_latency_ms": _percentiles(self.inference_latencies, scale=1000.0),
            # the predicted progress per chunk, [observation stamp (s, sim time), value], to plot or compare
            "value_curve": [[round(t, 3), round(v, 4)] for t, v, _ in self.values],
            "faults": [
                {"sim_time_s": round(t, 2), "node": name, "message": message}
                for (name, message), t in sorted(self.faults.items(), key=lambda item: item[1])
            ],
        }


def _percentiles(samples: list[float], scale: float = 1.0) -> dict | None:
    if not samples:
        return None
    values = np.asarray(samples) * scale
    return {
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": round(float(values.max()), 1),
        "samples": len(values),
    }


def contact_sheet(snapshots: dict[str, dict[str, dict[str, np.ndarray]]], path: Path) -> None:
    """One column per camera; per snapshot (e.g. start, end) a color row and a colorized depth row."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

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


DEMO_TASK = "pick_place"
# The simulated world runs at a quarter of real time in the policy demo: on 2 CPU cores shared by
# every node the policy needs about 1 s per chunk, 4 frames of sim time at this rate, about what
# a GPU workstation takes in real time.
DEMO_REAL_TIME_FACTOR = 0.25


@dataclass(frozen=True)
class DemoEpisode:
    """One episode of the demo: a Clean scene of the task (evaluation seed), perturbed or not."""

    name: str
    seed: int
    perturbation: str = "none"


# Evaluation scenes (seeds >= 10000, never a demonstration's) of the shipped AgileX policy
DEMO_EPISODES = (DemoEpisode("clean", 10_000), DemoEpisode("slip", 10_001, "slip"))


def parse_episodes(text: str) -> tuple[DemoEpisode, ...]:
    """ "clean:10000,slip:10001:slip" -> episodes; a malformed item is named in the error."""
    from wam_ros.config import ConfigError, check_choice
    from wam_ros.sim.tasks import PERTURBATIONS

    episodes = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
            raise ConfigError(f"episode {item!r}: expected NAME:SEED or NAME:SEED:PERTURBATION (e.g. slip:10001:slip)")
        perturbation = parts[2] if len(parts) == 3 else "none"
        check_choice("perturbation", perturbation, PERTURBATIONS)
        episodes.append(DemoEpisode(parts[0], int(parts[1]), perturbation))
    if len({e.name for e in episodes}) != len(episodes):
        raise ConfigError(f"episodes {text!r}: names must differ (they name the output files)")
    return tuple(episodes)


def release_dir(robot: str, task: str = DEMO_TASK) -> Path:
    """Where a shipped policy lives: models/<robot>_<task>/ (policy.pt, provenance.json)."""
    from wam_ros.paths import share_dir

    return share_dir() / "models" / f"{robot}_{task}"


def shipped_policy(robot: str) -> Path:
    path = release_dir(robot) / "policy.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped {DEMO_TASK} policy for {robot} ({path}); train one here with "
            f"`make demo TRAIN=1 ROBOT={robot}` (wam-ros demo --robot {robot} --train)"
        )
    return path


def demo_training(robot: str, out_dir: Path, **overrides) -> "BenchmarkConfig":
    """The shipped AgileX policy's benchmark settings (its provenance.json) for this robot, with
    its output under out_dir/train; overrides (demos, joint_steps, ...) shorten it for tests."""
    from wam_ros.benchmark.run import BenchmarkConfig

    settings = json.loads((release_dir("agilex") / "provenance.json").read_text())["benchmark_config"]
    settings = {
        **settings,
        "robot": robot,
        "out": out_dir / "train",
        "sim_size": tuple(settings["sim_size"]),
        **overrides,
    }
    return BenchmarkConfig(**settings)


def train_demo_policy(config: "BenchmarkConfig") -> Path:
    """`make demo TRAIN=1`: records the demonstrations and trains as the shipped policy was made
    (the benchmark's own steps, each reused when complete); returns the release's policy.pt."""
    from wam_ros.benchmark.run import demonstrations, release_policy, train_policy

    print(
        f"[demo] recording {config.demos} demonstrations (and {config.slip_demos} with a slip) and training "
        f"{config.model!r} in {config.out} (the shipped policy took about an hour on 2 cores)",
        file=sys.stderr,
        flush=True,
    )
    demonstrations(config, {})
    return release_policy(
        config, train_policy(config, {}), config.out / "release", command=" ".join(["wam-ros", *sys.argv[1:]])
    )


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
        robot=load_robot_config(robot),
        cloud=cloud,
        frame_times=frame_times(cfg.horizon, cfg.actions_per_frame, fps),
        joints=prediction.joints,
        title=(
            f"predicted 4D cloud received over DDS, observation at "
            f"t={prediction.stamp:.2f} s (sim), {len(cloud)} points"
        ),
        tcp_paths={f"{side} TCP": p for side, p in prediction.tcp_paths.items()},
        path_times=(np.arange(steps) + 1) / fps,
        images=prediction.images,
    )


def run_demo(
    robot: str,
    out_dir: Path,
    source: str = "policy",
    duration: float = 20.0,
    checkpoint: Path | None = None,
    episodes: tuple[DemoEpisode, ...] = DEMO_EPISODES,
    max_seconds: float = 20.0,
    wall_timeout: float | None = None,
    real_time_factor: float = DEMO_REAL_TIME_FACTOR,
) -> dict:
    """Brings up the system of `wam-ros bringup` on the simulated robot and watches it over DDS.
    policy: one fresh system per episode of the pick-and-place task, driven by the checkpoint
    (default: the shipped one) under the supervisor with value-guided rollback; scripted: the
    scripted motion for `duration` sim seconds. Writes summary.json, videos and figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    apply_environment()
    rclpy.init(args=["wam-ros"])
    try:
        if source == "scripted":
            summary = _scripted_run(robot, duration, out_dir, wall_timeout or 120.0 + 10.0 * duration)
        else:
            checkpoint = Path(checkpoint or shipped_policy(robot))
            path = checkpoint.with_name("provenance.json")
            provenance = json.loads(path.read_text()) if path.is_file() else None
            # the cameras at the size the policy's demonstrations were recorded at
            camera_size = (
                tuple(provenance["benchmark_config"]["sim_size"]) if provenance else (SimConfig.height, SimConfig.width)
            )
            summary = {
                "robot": robot,
                "task": DEMO_TASK,
                "checkpoint": str(checkpoint),
                "provenance": provenance,
                "real_time_factor": real_time_factor,
                "episodes": [
                    _policy_episode(
                        robot,
                        checkpoint,
                        episode,
                        out_dir,
                        max_seconds,
                        wall_timeout or 120.0 + 10.0 * max_seconds / real_time_factor,
                        real_time_factor,
                        camera_size,
                    )
                    for episode in episodes
                ],
            }
            rows = summary["episodes"]
            summary["outcome"] = {
                "clean_success": [r["success"] for r in rows if r["perturbation"] == "none"],
                "perturbed_recovered": [r["recovered"] for r in rows if r["perturbation"] != "none"],
            }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        rclpy.try_shutdown()


def _scripted_run(robot: str, duration: float, out_dir: Path, wall_timeout: float) -> dict:
    from wam_ros.benchmark.graph import run_system

    monitor = DemoMonitor(robot)
    run_system(
        describe_system(SystemOptions(robot=robot, motion="scripted")),
        lambda m: m.sim_time >= duration,
        wall_timeout,
        watcher=monitor,
    )
    summary = {**monitor.summary(), "duration_s": duration}
    contact_sheet(
        {"start": monitor.start_frames, f"t={duration:g} s": monitor.latest_frames}, out_dir / "contact_sheet.png"
    )
    video = out_dir / "scripted.mp4"  # at the camera's rate in sim time: the video plays in sim time
    fps = summary["topics"][f"{monitor.film_camera}/color/image_raw"]["rate_hz_sim_time"]
    summary["video"] = {"path": str(video), "frames": write_video(monitor.timeline(f"{robot}, scripted"), video, fps)}
    return summary


def _policy_episode(
    robot: str,
    checkpoint: Path,
    episode: DemoEpisode,
    out_dir: Path,
    max_seconds: float,
    wall_timeout: float,
    real_time_factor: float,
    camera_size: tuple[int, int],
) -> dict:
    """One episode through the node graph until a second after success or max_seconds: its row
    of summary.json, its video, contact sheet and predicted 4D cloud. camera_size: (height, width)."""
    from wam_ros.benchmark.graph import run_system
    from wam_ros.render_prediction import prediction_figure, save_figure

    height, width = camera_size
    options = SystemOptions(
        robot=robot, checkpoint=str(checkpoint), task=DEMO_TASK, seed=episode.seed, perturbation=episode.perturbation
    )
    specs = with_parameters(
        describe_system(options), "sim_node", {"width": width, "height": height, "real_time_factor": real_time_factor}
    )
    # a policy trained in an hour on a CPU: the supervisor tracks its chunks within the limits
    # (clamp) instead of rejecting rough ones; value-guided rollback is on (its default)
    specs = with_parameters(specs, "supervisor_node", {"clamp": True})
    # every node shares this process and its 2 cores: with one torch thread the policy's actions
    # came in 475 ms instead of 886 ms (two threads spin against the simulator's rendering)
    specs = with_parameters(specs, "policy_node", {"threads": 1})
    # the prediction shown: the first one made after the arm has started towards the object
    monitor = DemoMonitor(robot, prediction_after=2.0)

    def done(m: DemoMonitor) -> bool:
        return m.sim_time >= max_seconds or (m.succeeded_at is not None and m.sim_time >= m.succeeded_at + 1.0)

    run_system(specs, done, wall_timeout, watcher=monitor)
    row = {
        "name": episode.name,
        "seed": episode.seed,
        "perturbation": episode.perturbation,
        "success": monitor.succeeded_at is not None,
        "time_to_success_s": None if monitor.succeeded_at is None else round(monitor.succeeded_at, 2),
        "perturbed_at_s": None if monitor.perturbed_at is None else round(monitor.perturbed_at, 2),
        "rollbacks": len(monitor.rollbacks),
        "rollback_times_s": [round(t, 2) for t in monitor.rollbacks],
    }
    row["recovered"] = row["success"] and row["perturbed_at_s"] is not None and row["rollbacks"] > 0
    row.update(monitor.summary())
    files = {
        "video": out_dir / f"{episode.name}.mp4",
        "contact_sheet": out_dir / f"{episode.name}_contact_sheet.png",
        "prediction_4d": out_dir / f"{episode.name}_prediction_4d.png",
    }
    fps = row["topics"][f"{monitor.film_camera}/color/image_raw"]["rate_hz_sim_time"]
    title = f"{robot} {DEMO_TASK}, {episode.name} (seed {episode.seed})"
    row["video_frames"] = write_video(monitor.timeline(title), files["video"], fps)
    contact_sheet(
        {"start": monitor.start_frames, f"t={monitor.sim_time:.1f} s": monitor.latest_frames}, files["contact_sheet"]
    )
    if monitor.prediction is None:
        raise RuntimeError(f"{episode.name}: the policy published no predicted cloud with its TCP paths")
    save_figure(prediction_figure(dds_scene(monitor.prediction, robot, checkpoint)), files["prediction_4d"])
    row["files"] = {k: str(v) for k, v in files.items()}
    print(f"[demo] {episode.name}: {episode_outcome(row)}", file=sys.stderr, flush=True)
    return row


def episode_outcome(row: dict) -> str:
    """ "succeeded" / "failed", with the rollbacks, of a summary.json episode row."""
    return (
        ("succeeded" if row["success"] else "failed")
        + (f" after {row['rollbacks']} rollback(s)" if row["rollbacks"] else "")
        + "".join(f"; {f['node']} reported at {f['sim_time_s']} s: {f['message']}" for f in row["faults"])
    )
