"""policy_node: a World Action Model checkpoint driving the robot.

In:  observations (MultiViewRGBD from sync_node) or, with observation_transport:=compressed (the
     policy host of a split deployment), observations/compressed (CompressedMultiViewRGBD from the
     robot side's observation_encoder_node), joint_states, supervisor/state (a refusal of the
     executing chunk drops its plan: the next chunk is sampled afresh, not inpainted towards it).
Out: policy/observation_request (latched ObservationRequest: the cameras and image size the
     checkpoint reads, what the robot side of a split deployment sends), policy/chunk (ActionChunk, absolute joint targets from the step due now), policy/value
     (ValueEstimate), policy/gate (GateState), policy/predicted_cloud and policy/live_cloud
     (PointCloud2: x, y, z, rgb, frame), policy/markers (MarkerArray: predicted TCP paths, value
     and expert as text), /diagnostics.
Service: policy/resample (the supervisor after a rollback).

Inference runs on a worker thread, so the executor keeps taking observations and serving the
service while the model samples. The chunk is published as soon as its actions are final (ANS);
the video finishes afterwards for the 4D clouds. Chunk hand-over (RTC, blending or switching) and
the lifting live in the ROS-free core: wam_ros.model.deploy, wam_ros.control.chunking,
wam_ros.geometry.lifting.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from wam_ros.config import ROBOTS, ConfigError, load_robot_config
from wam_ros.control.chunking import MODES, ChunkScheduler
from wam_ros.data.images import ImageError
from wam_ros.geometry.lifting import PointCloud, fade, lift, voxel_downsample
from wam_ros.model.deploy import FUTURES, DeployConfig, DeployedPolicy, chunking_config, resolve_instruction
from wam_ros.model.model_config import SAMPLERS
from wam_ros.model.policy import EXPERT_CHOICES, CheckpointError, depth_metres, load_policy
from wam_ros.model.policy_loop import InferenceJob, PolicyLoop, Views
from wam_ros.msg import (
    ActionChunk,
    CompressedMultiViewRGBD,
    GateState,
    MultiViewRGBD,
    ObservationRequest,
    SupervisorState,
    ValueEstimate,
)
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import from_time, multiview_arrays, pointcloud_msg, to_time
from wam_ros.ros.link_conversions import compact_multiview_arrays
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, JOINT_STATE_QOS, LATCHED_QOS
from wam_ros.srv import Resample

# Only the newest observation matters to the policy: a deeper queue would only hold stale sets.
OBSERVATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
CLOUD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
# observation_transport -> (message type, topic, the views of a message)
TRANSPORTS = {
    "raw": (MultiViewRGBD, "observations", multiview_arrays),
    "compressed": (CompressedMultiViewRGBD, "observations/compressed", compact_multiview_arrays),
}
EXPERTS = {"predictive": GateState.EXPERT_PREDICTIVE, "reactive": GateState.EXPERT_REACTIVE}
PROBLEM_LOG_PERIOD = 10.0  # s between warnings of one cause; every case is counted in /diagnostics


@dataclass(frozen=True)
class PolicyParams:
    checkpoint: str = param("", "Policy checkpoint (wam-ros train)")
    robot: str = param("agilex", "Robot setup; must match the checkpoint's joints", choices=ROBOTS)
    instruction: str = param("", "Task instruction (empty: the checkpoint's only task)")
    device: str = param("auto", "Torch device: auto (cuda if present), cpu, cuda, cuda:N")
    threads: int = param(2, "Torch CPU threads", range_=(1, 256))
    control_rate: float = param(0.0, "Action rate (Hz; 0: the checkpoint's fps)", range_=(0.0, 1000.0))
    execution_horizon: int = param(
        0,
        "Steps after a chunk's observation at which the next inference starts (0: "
        "(H - 1) // 2, so that a latency of up to that many steps never starves)",
        range_=(0, 10000),
    )
    chunking: str = param(
        "rtc", "Chunk hand-over: rtc (real-time chunking), blend (weighted average), naive (switch)", choices=MODES
    )
    blend_new_weight: float = param(0.7, "blend: weight of the new chunk", range_=(0.01, 1.0))
    guidance_clip: float = param(5.0, "RTC guidance weight clip (beta)", range_=(0.0, 100.0))
    action_steps: int = param(0, "T_a denoising passes (0: checkpoint)", range_=(0, 1000))
    video_steps: int = param(0, "T_O denoising passes (0: checkpoint)", range_=(0, 1000))
    sampler: str = param(
        "", "Flow sampler of both streams: euler or unipc (empty: the checkpoint's config)", choices=("", *SAMPLERS)
    )
    predict_video: bool = param(True, "Finish the predicted video for the 4D cloud")
    predicted_future: str = param(
        "imagined",
        "What policy/predicted_cloud shows: imagined (the observed scene "
        "carried by the kinematics plus the model's change) or model (the model's own "
        "frames and depth)",
        choices=FUTURES,
    )
    depth: bool = param(True, "Run the depth branch (needed for the predicted cloud)")
    expert: str = param(
        "gated",
        "Whose actions execute: gated (the gate picks per chunk), or predictive / reactive forced (ablations)",
        choices=EXPERT_CHOICES,
    )
    observation_transport: str = param(
        "raw",
        "Observation sets: raw (MultiViewRGBD on observations, one host) or "
        "compressed (resized and compressed on observations/compressed, from the "
        "robot side of a split deployment)",
        choices=tuple(TRANSPORTS),
    )
    max_observation_age: float = param(0.5, "Observations older than this are not used (s)", range_=(0.001, 60.0))
    voxel_size: float = param(0.01, "Voxel size of the clouds (m; 0: all points)", range_=(0.0, 1.0))
    live_cloud_stride: int = param(4, "Every n-th pixel of the live cloud (0: off)", range_=(0, 64))
    frame_id: str = param("base", "Frame of clouds and markers")
    seed: int = param(
        -1, "Noise seed (-1: random; otherwise every chunk's noise is reproducible)", range_=(-1, 2**31 - 1)
    )


class PolicyNode(Node):
    def __init__(self, node_name: str = "policy", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, PolicyParams)
        self.deployed = self._load(p)  # sets self.instruction, the resolved task instruction
        self.loop = PolicyLoop(self.deployed, self.instruction, p.max_observation_age, p.seed, self._problem)
        observation_type, observation_topic, self._views_of = TRANSPORTS[p.observation_transport]
        self._busy = threading.Event()
        self._worker: threading.Thread | None = None
        self._peak = 0.0
        self._problems: dict[str, int] = {}
        self._problem_logged: dict[str, float] = {}  # cause -> monotonic time of its last warning
        self._last_problem = ""
        self._latencies: deque[dict[str, float]] = deque(maxlen=50)
        self._chunks = diag.RateMeter(window=5.0)
        self._jumps: deque[float] = deque(maxlen=50)
        self._starved = 0
        self._errors = 0

        self.chunk_pub = self.create_publisher(ActionChunk, "policy/chunk", COMMAND_QOS)
        self.value_pub = self.create_publisher(ValueEstimate, "policy/value", COMMAND_QOS)
        self.gate_pub = self.create_publisher(GateState, "policy/gate", COMMAND_QOS)
        self.predicted_pub = self.create_publisher(PointCloud2, "policy/predicted_cloud", CLOUD_QOS)
        self.live_pub = self.create_publisher(PointCloud2, "policy/live_cloud", CLOUD_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "policy/markers", CLOUD_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        cfg = self.deployed.policy.cfg
        self.create_publisher(ObservationRequest, "policy/observation_request", LATCHED_QOS).publish(
            ObservationRequest(camera_names=list(cfg.cameras), height=cfg.image_size[0], width=cfg.image_size[1])
        )
        self.create_subscription(observation_type, observation_topic, self._on_observation, OBSERVATION_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, JOINT_STATE_QOS)
        self.create_subscription(SupervisorState, "supervisor/state", self._on_supervisor_state, LATCHED_QOS)
        self.create_service(Resample, "policy/resample", self._srv_resample)
        self.create_timer(self.deployed.scheduler.config.dt, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"policy {p.checkpoint} on {self.deployed.policy.device}: "
            f"{self.deployed.policy.cfg.num_actions} actions at "
            f"{1 / self.deployed.scheduler.config.dt:.1f} Hz, chunking {p.chunking}"
        )

    # --- set-up ------------------------------------------------------------------------------
    def _load(self, p: PolicyParams) -> DeployedPolicy:
        if not p.checkpoint:
            raise ConfigError("checkpoint: no checkpoint given")
        device = p.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.set_num_threads(p.threads)
        robot = load_robot_config(p.robot)
        try:
            policy = load_policy(Path(p.checkpoint), device)
            policy.check_robot(state_names=robot.joint_names, action_names=robot.joint_names)
        except (FileNotFoundError, CheckpointError) as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.instruction = resolve_instruction(policy, p.instruction)
            with torch.no_grad():
                policy.model.text_features([self.instruction])  # an unknown instruction fails here, not per chunk
        except ValueError as exc:  # UnknownInstruction included
            raise ConfigError(str(exc)) from None
        try:
            chunking = chunking_config(policy, p.chunking, p.control_rate, p.execution_horizon, p.blend_new_weight)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        deploy = DeployConfig(
            action_steps=p.action_steps,
            video_steps=p.video_steps,
            video=p.predict_video,
            depth=p.depth,
            guidance_clip=p.guidance_clip,
            sampler=p.sampler,
            future=p.predicted_future,
            expert=p.expert,
        )
        return DeployedPolicy(policy, robot, ChunkScheduler(chunking), deploy)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _problem(self, cause: str, detail: str) -> None:
        self._problems[cause] = self._problems.get(cause, 0) + 1
        self._last_problem = f"{cause}: {detail}"
        now = time.monotonic()
        if now - self._problem_logged.get(cause, -math.inf) >= PROBLEM_LOG_PERIOD:
            self._problem_logged[cause] = now
            self.get_logger().warn(f"{cause}: {detail} ({self._problems[cause]} so far, all counted in /diagnostics)")

    # --- inputs ------------------------------------------------------------------------------
    def _on_observation(self, msg: MultiViewRGBD | CompressedMultiViewRGBD) -> None:
        """Checks the views of the newest set; a malformed or unfitting one leaves nothing to act on."""
        stamp = from_time(msg.header.stamp)
        if msg.degraded:  # its missing views are empty
            return self.loop.observe_degraded(stamp, msg.status)
        try:
            views = self._views_of(msg, self.deployed.policy.cfg.cameras)
        except ImageError as exc:
            return self.loop.reject_observation("observation malformed", str(exc))
        except ValueError as exc:  # well-formed, but not the views the checkpoint needs
            return self.loop.reject_observation("observation rejected", str(exc))
        self.loop.observe(stamp, views)

    def _on_joint_states(self, msg: JointState) -> None:
        self.loop.update_joints(list(msg.name), list(msg.position))

    def _on_supervisor_state(self, msg: SupervisorState) -> None:
        if self.loop.supervisor_state(msg.state_name, int(msg.last_rejected_chunk_id)):
            self.get_logger().warn(
                f"supervisor refused chunk {msg.last_rejected_chunk_id} ({msg.last_rejection}): "
                "its plan is dropped, the next chunk is sampled afresh",
                throttle_duration_sec=PROBLEM_LOG_PERIOD,
            )

    def _tick(self) -> None:
        """Start the next inference when it is due, on the newest usable observation."""
        if self._busy.is_set():
            return
        now = self._now()
        if not self.loop.due(now):
            return
        job = self.loop.job(now)
        if job is None:
            return
        self._busy.set()
        self._worker = threading.Thread(target=self._infer, args=(job,), daemon=True, name="policy-inference")
        self._worker.start()

    # --- the worker thread -------------------------------------------------------------------
    def _infer(self, job: InferenceJob) -> None:
        chunks = []
        try:

            def on_chunk(ready) -> None:  # only for a chunk of this epoch (no resample since the job)
                chunks.append(ready)
                self._publish_chunk(ready)

            prediction = self.loop.infer(job, self._now, on_chunk)
            self._latencies.append(prediction.timings)
            if chunks and self.loop.current(job):  # not of a plan discarded since
                self._publish_visuals(prediction, chunks[0], job.obs, job.views)
        except Exception as exc:  # noqa: BLE001 — the node keeps serving; the cause goes to diagnostics
            self._errors += 1
            self._problem("inference failed", f"{type(exc).__name__}: {exc}")
            self.get_logger().debug(traceback.format_exc())
        finally:
            self._busy.clear()

    def _publish_chunk(self, ready) -> None:
        handover = ready.handover
        self._chunks.tick(time.monotonic())
        self._jumps.append(handover.jump)
        self._starved += handover.starved_steps
        command = self.deployed.command(ready)
        pred = ready.prediction
        msg = ActionChunk(
            chunk_id=ready.chunk_id,
            action_space=ActionChunk.ACTION_SPACE_JOINT_POSITION,
            joint_names=command.joint_names,
            horizon=len(command.positions),
            dt=command.dt,
            positions=command.positions.ravel().tolist(),
            gripper_names=command.gripper_names,
            gripper=command.gripper.ravel().tolist(),
            execute_from=to_time(handover.chunk.start),
            expert=EXPERTS[pred.expert],
            value=pred.value,
            inference_latency=handover.latency,
            inference_delay_steps=self.deployed.scheduler.delay_steps,
        )
        msg.header.stamp, msg.header.frame_id = to_time(ready.obs_time), self.params.frame_id
        self.chunk_pub.publish(msg)
        self._peak = max(self._peak, pred.value)
        self.value_pub.publish(
            ValueEstimate(header=msg.header, chunk_id=ready.chunk_id, value=pred.value, peak=self._peak, delta=0.2)
        )
        self.gate_pub.publish(
            GateState(
                header=msg.header,
                chunk_id=ready.chunk_id,
                interaction_probability=pred.gate_probability,
                threshold=self.deployed.policy.cfg.gate_threshold,
                active_expert=EXPERTS[pred.expert],
            )
        )

    def _publish_visuals(self, prediction, ready, obs, views: Views) -> None:
        """Clouds and markers of one inference; views: the observation's (images, depths, intrinsics)."""
        header_stamp, frame_id = to_time(ready.obs_time), self.params.frame_id
        voxel = self.params.voxel_size
        absolute, intrinsics = ready.targets, views[2]
        if prediction.future_depth is not None:
            imagined = self.deployed.imagined_future(
                prediction, obs, absolute, self.deployed.model_intrinsics(intrinsics)
            )
            cloud = voxel_downsample(self.deployed.predicted_cloud(imagined, obs.state, absolute, intrinsics), voxel)
            cloud = fade(cloud, self.deployed.policy.cfg.horizon)
            self.predicted_pub.publish(pointcloud_msg(cloud, header_stamp, frame_id))
        stride = self.params.live_cloud_stride
        if stride:
            live = self._live_cloud(views, obs.state, stride)
            live = voxel_downsample(live, voxel)
            self.live_pub.publish(pointcloud_msg(live, header_stamp, frame_id))
        self.marker_pub.publish(self._markers(absolute, obs.state, ready, header_stamp, frame_id))

    def _live_cloud(self, views: Views, state: np.ndarray, stride: int) -> PointCloud:
        cams = list(self.deployed.policy.cfg.cameras)
        images, depths, intrinsics = views
        depth_m = [depth_metres(depths[c]) for c in cams]
        poses = self.deployed.camera_poses([self.deployed.joint_map(state)])
        return lift(
            np.stack(depth_m)[:, None],
            np.stack([images[c] for c in cams])[:, None],
            np.stack([intrinsics[c][0] for c in cams]),
            poses,
            stride=stride,
        )

    def _markers(self, absolute: np.ndarray, state: np.ndarray, ready, stamp, frame_id: str) -> MarkerArray:
        markers = MarkerArray()
        colors = {"left": ColorRGBA(r=0.1, g=0.6, b=1.0, a=1.0), "right": ColorRGBA(r=1.0, g=0.5, b=0.1, a=1.0)}
        for k, (side, path) in enumerate(self.deployed.tcp_paths(absolute, state).items()):
            m = Marker(ns="predicted_tcp_path", id=k, type=Marker.LINE_STRIP, action=Marker.ADD)
            m.header.stamp, m.header.frame_id = stamp, frame_id
            m.scale.x, m.color, m.pose.orientation.w = 0.005, colors.get(side, colors["left"]), 1.0
            m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in path]
            markers.markers.append(m)
        pred = ready.prediction
        text = Marker(ns="policy_status", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header.stamp, text.header.frame_id = stamp, frame_id
        text.pose.position.z, text.pose.orientation.w, text.scale.z = 0.9, 1.0, 0.05
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = (
            f"value {pred.value:.2f} (peak {self._peak:.2f})  {pred.expert} expert  "
            f"p(interaction) {pred.gate_probability:.2f}  chunk {ready.chunk_id}"
        )
        markers.markers.append(text)
        return markers

    # --- resample ----------------------------------------------------------------------------
    def _srv_resample(self, request: Resample.Request, response: Resample.Response) -> Resample.Response:
        reply = self.loop.resample(list(request.joint_names), list(request.positions))
        response.accepted, response.chunk_id, response.message = reply.accepted, reply.chunk_id, reply.message
        return response

    def destroy_node(self) -> None:
        """Lets an inference in flight finish first: a worker still publishing through a destroyed
        node (or torch still computing as the process exits) aborted the process."""
        self.deployed.scheduler.reset()  # whatever it produces now is not published
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        super().destroy_node()

    # --- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        values: dict[str, object] = {
            "chunks_per_s": f"{self._chunks.rate(time.monotonic()):.2f}",
            "chunks": self._chunks.count,
            "delay_steps": self.deployed.scheduler.delay_steps,
            "starved_steps": self._starved,
            "inference_errors": self._errors,
            "plans_dropped_after_refusal": self.loop.refusals,
            "chunking": self.params.chunking,
            "device": str(self.deployed.policy.device),
            "sampler": self.params.sampler or self.deployed.policy.cfg.sampler,
        }
        for phase in ("encode_ms", "actions_ms", "decode_ms", "total_ms"):
            samples = [t[phase] for t in self._latencies if phase in t]
            if samples:
                values[f"{phase[:-3]}_latency_p50_ms"] = f"{np.percentile(samples, 50):.1f}"
                values[f"{phase[:-3]}_latency_p95_ms"] = f"{np.percentile(samples, 95):.1f}"
        if self._jumps:
            values["boundary_jump_max_rad"] = f"{max(self._jumps):.4f}"
        for cause, count in self._problems.items():
            values[f"skipped: {cause}"] = count
        if self._last_problem:
            values["last_skip"] = self._last_problem
        level = diag.ERROR if self._errors else diag.WARN if self._problems or not self._chunks.count else diag.OK
        message = "acting" if self._chunks.rate(time.monotonic()) > 0 else "waiting for usable observations"
        self.diag_pub.publish(
            diag.array_msg(
                to_time(self._now()),
                [diag.status(f"{self.get_fully_qualified_name()}: policy", "policy", level, message, values)],
            )
        )


NODE_CLASS = PolicyNode


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args)
