"""policy_node in its own process over DDS: chunks, value, gate, 4D clouds and markers from observations
this test publishes; resampling, also with an inference in flight; degraded, stale, NaN and malformed
inputs skipped with a diagnostic."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import CAMERA_NAMES, load_robot_config
from wam_ros.msg import ActionChunk, GateState, MultiViewRGBD, SupervisorState, ValueEstimate
from wam_ros.ros.conversions import camera_info_msg, image_msg, pointcloud_from_msg, to_time
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, IMAGE_QOS, JOINT_STATE_QOS, LATCHED_QOS
from wam_ros.srv import Resample

pytestmark = pytest.mark.ros

ROBOT = load_robot_config("agilex")
HOME = ROBOT.home_positions()
W, H = 64, 48
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def checkpoint(briefly_trained) -> Path:
    """The session's briefly trained tiny model (agilex's 14 joints)."""
    return briefly_trained[3]


class Robot(ProbeNode):
    """Joint states and observation sets around the policy node."""

    def __init__(self, domain: int):
        super().__init__("policy_test", domain)
        n = self.node
        self.joint_pub = n.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
        self.obs_pub = n.create_publisher(MultiViewRGBD, "observations", IMAGE_QOS)
        self.chunks: list[ActionChunk] = []
        self.values: list[ValueEstimate] = []
        self.gates: list[GateState] = []
        self.clouds: dict[str, list[PointCloud2]] = {"predicted": [], "live": []}
        self.markers: list[MarkerArray] = []
        self.diagnostics: dict[str, str] = {}
        n.create_subscription(ActionChunk, "policy/chunk", self.chunks.append, COMMAND_QOS)
        n.create_subscription(ValueEstimate, "policy/value", self.values.append, COMMAND_QOS)
        n.create_subscription(GateState, "policy/gate", self.gates.append, COMMAND_QOS)
        for kind in self.clouds:
            n.create_subscription(PointCloud2, f"policy/{kind}_cloud", self.clouds[kind].append, COMMAND_QOS)
        n.create_subscription(MarkerArray, "policy/markers", self.markers.append, COMMAND_QOS)
        n.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.update(
                {v.key: v.value for s in m.status if s.name.endswith("policy") for v in s.values}
            ),
            DIAGNOSTICS_QOS,
        )
        self.resample = n.create_client(Resample, "policy/resample")
        self.supervisor_pub = n.create_publisher(SupervisorState, "supervisor/state", LATCHED_QOS)
        self.joints = dict(HOME)
        self.degraded = False
        self.age = 0.0
        self.cameras = list(CAMERA_NAMES)
        self.tamper: Callable[[MultiViewRGBD], None] | None = None  # breaks each set before it is sent
        n.create_timer(0.01, self._publish_joints)
        n.create_timer(1 / 15, self._publish_observation)

    def _publish_joints(self) -> None:
        self.joint_pub.publish(JointState(name=list(self.joints), position=list(self.joints.values())))

    def _publish_observation(self) -> None:
        stamp = to_time(self.node.get_clock().now().nanoseconds * 1e-9 - self.age)
        msg = MultiViewRGBD(
            camera_names=list(self.cameras),
            degraded=self.degraded,
            status="missing ['head']" if self.degraded else "ok",
        )
        msg.header.stamp = stamp
        for i, cam in enumerate(self.cameras):
            color = np.full((H, W, 3), 40 + 60 * i, np.uint8)
            depth = np.full((H, W), 800 + 100 * i, np.uint16)
            frame = f"{cam}_color_optical_frame"
            msg.color.append(image_msg(color, "rgb8", stamp, frame))
            msg.depth.append(image_msg(depth, "16UC1", stamp, frame))
            msg.color_info.append(camera_info_msg(K, W, H, stamp, frame))
            msg.depth_info.append(camera_info_msg(K, W, H, stamp, frame))
            msg.stamps.append(stamp)
        if self.tamper is not None:
            self.tamper(msg)
        self.obs_pub.publish(msg)


@pytest.fixture(scope="module")
def robot_and_policy(checkpoint):
    """One policy node for the module (its start-up, torch import included, takes seconds); each
    test leaves the inputs healthy."""
    domain = SPARE_DOMAIN_IDS[0]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "policy_node"),
            "--ros-args",
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            "robot:=agilex",
            "-p",
            "seed:=3",
            "-p",
            "max_observation_age:=0.5",
            "-p",
            "live_cloud_stride:=2",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    robot = Robot(domain)
    try:
        yield robot, process
    finally:
        robot.close()
        stop_process(process)


def test_the_policy_publishes_chunks_values_gates_clouds_and_markers(robot_and_policy):
    robot, _ = robot_and_policy
    assert robot.spin_until(lambda: len(robot.chunks) >= 3 and robot.clouds["predicted"] and robot.markers, 60.0), (
        f"{len(robot.chunks)} chunks, diagnostics {robot.diagnostics}"
    )
    chunk = robot.chunks[-1]
    arm = [n for n in ROBOT.joint_names if not n.endswith("_gripper")]
    assert chunk.action_space == ActionChunk.ACTION_SPACE_JOINT_POSITION and list(chunk.joint_names) == arm
    positions = np.array(chunk.positions).reshape(chunk.horizon, len(arm))
    assert np.isfinite(positions).all() and 1 <= chunk.horizon <= 8  # K = 8 actions, minus the steps already due
    assert list(chunk.gripper_names) == ["left_gripper", "right_gripper"]
    assert all(0.0 <= g <= 1.0 for g in chunk.gripper)
    assert chunk.dt == pytest.approx(1 / 15) and chunk.expert == GateState.EXPERT_PREDICTIVE
    assert chunk.inference_latency > 0 and chunk.inference_delay_steps >= 1
    ids = [c.chunk_id for c in robot.chunks]
    assert ids == sorted(set(ids))
    assert {v.chunk_id for v in robot.values} >= set(ids[:-1]) and {g.chunk_id for g in robot.gates} >= set(ids[:-1])
    assert all(0.0 <= v.value <= 1.0 and v.peak >= v.value for v in robot.values)
    predicted = pointcloud_from_msg(robot.clouds["predicted"][-1])
    assert len(predicted) > 100 and set(np.unique(predicted.frames)) <= {0, 1}  # H = 2 predicted frames
    assert robot.spin_until(lambda: bool(robot.clouds["live"]), 10.0)
    live = pointcloud_from_msg(robot.clouds["live"][-1])
    assert len(live) > 100 and (live.frames == 0).all()
    kinds = [m.type for m in robot.markers[-1].markers]
    assert kinds.count(Marker.LINE_STRIP) == 2 and Marker.TEXT_VIEW_FACING in kinds
    assert robot.spin_until(lambda: "actions_latency_p50_ms" in robot.diagnostics, 5.0)
    assert robot.diagnostics["chunking"] == "rtc" and int(robot.diagnostics["inference_errors"]) == 0


def test_resample_discards_pending_chunks_and_answers_with_the_next_id(robot_and_policy):
    robot, _ = robot_and_policy
    assert robot.spin_until(lambda: len(robot.chunks) >= 2, 60.0)
    arm = [n for n in ROBOT.joint_names if not n.endswith("_gripper")]
    restored = [HOME[n] + 0.05 for n in arm]
    reply = robot.call_service(
        robot.resample,
        Resample.Request(discarded_chunk_id=robot.chunks[-1].chunk_id, joint_names=arm, positions=restored),
        5.0,
    )
    assert reply.accepted, reply.message
    assert robot.spin_until(lambda: any(c.chunk_id == reply.chunk_id for c in robot.chunks), 20.0)
    # a restored state naming a joint the checkpoint does not know is refused
    bad = robot.resample.call_async(Resample.Request(joint_names=["elbow"], positions=[0.1]))
    assert robot.spin_until(bad.done, 5.0)
    assert not bad.result().accepted and "unknown joints ['elbow']" in bad.result().message


def test_a_refused_chunk_drops_its_plan_and_chunks_keep_coming(robot_and_policy):
    """The supervisor's state names a refused chunk: if the policy is still executing that chunk's plan
    (the next inference would be inpainted towards it), the plan is dropped and counted; a refusal of
    a chunk it has already replaced changes nothing."""
    robot, _ = robot_and_policy
    assert robot.spin_until(lambda: len(robot.chunks) >= 2 and "plans_dropped_after_refusal" in robot.diagnostics, 60.0)
    stale = SupervisorState(
        state=SupervisorState.RUNNING,
        state_name="RUNNING",
        last_rejected_chunk_id=1,
        last_rejection="an old chunk",
        chunks_rejected=1,
    )
    robot.supervisor_pub.publish(stale)  # chunk 1 was replaced long ago
    for attempt in range(20):  # the newest chunk is executing until the next one is published
        newest = robot.chunks[-1].chunk_id
        robot.supervisor_pub.publish(
            SupervisorState(
                state=SupervisorState.RUNNING,
                state_name="RUNNING",
                last_rejected_chunk_id=newest,
                chunks_rejected=2 + attempt,
                last_rejection="left_joint6: first target 0.89 is 0.634 rad away",
            )
        )
        if robot.spin_until(lambda: robot.diagnostics.get("plans_dropped_after_refusal") == "1", 2.5):
            break
    assert robot.diagnostics["plans_dropped_after_refusal"] == "1", robot.diagnostics
    count = len(robot.chunks)
    assert robot.spin_until(lambda: len(robot.chunks) >= count + 2, 20.0)  # sampled afresh, still acting
    assert int(robot.diagnostics["inference_errors"]) == 0


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("degraded", "skipped: observation degraded"),
        ("stale", "skipped: observation stale"),
        ("nan", "skipped: joint state missing, NaN or out of range"),
        ("cameras", "skipped: observation rejected"),
        ("glitch", "skipped: joint state missing, NaN or out of range"),
    ],
)
def test_unusable_inputs_give_no_chunk_and_a_diagnostic(robot_and_policy, fault, reason):
    robot, process = robot_and_policy
    if fault == "degraded":
        robot.degraded = True
    elif fault == "stale":
        robot.age = 2.0
    elif fault == "cameras":
        robot.cameras = ["head", "left_wrist"]  # a set without a view the checkpoint needs
    elif fault == "glitch":
        robot.joints["left_joint3"] = 1e38  # finite, but no encoder reads that; clipped, it would look plausible
    else:
        robot.joints["left_joint3"] = math.nan
    assert robot.spin_until(lambda: reason in robot.diagnostics, 30.0), robot.diagnostics
    count = len(robot.chunks)
    robot.spin_for(1.5)
    assert len(robot.chunks) == count and process.poll() is None  # nothing acted on, still running
    assert robot.diagnostics["inference_errors"] == "0"  # refused before the model
    robot.degraded, robot.age, robot.joints["left_joint3"] = False, 0.0, HOME["left_joint3"]
    robot.cameras = list(CAMERA_NAMES)
    assert robot.spin_until(lambda: len(robot.chunks) > count, 30.0)  # and it recovers


def _no_views(msg: MultiViewRGBD) -> None:
    msg.color, msg.depth, msg.color_info, msg.depth_info = [], [], [], []


def _no_pixels(msg: MultiViewRGBD) -> None:
    msg.color = [Image(encoding="rgb8") for _ in msg.camera_names]
    msg.depth = [Image(encoding="16UC1") for _ in msg.camera_names]
    msg.color_info = [CameraInfo() for _ in msg.camera_names]


def _short_step(msg: MultiViewRGBD) -> None:
    color = msg.color[1]
    color.step = W * 3 - 3  # rows shorter than width x 3 bytes, data consistent with that step
    color.data = color.data[: color.step * H]


def _huge_width(msg: MultiViewRGBD) -> None:
    color, info = msg.color[0], msg.color_info[0]
    color.width, color.height, color.step, color.data = 100000, 1, 3, color.data[:3]
    info.width, info.height = 100000, 1


def _nan_intrinsics(msg: MultiViewRGBD) -> None:
    msg.color_info[2].k[0] = math.nan


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (_no_views, "do not index the views"),
        (_no_pixels, "has no pixels"),
        (_short_step, "left_wrist/color: image 64x48 rgb8: step 189 is less"),
        (_huge_width, "head/color: image 100000x1 rgb8: step 3 is less"),
        (_nan_intrinsics, "right_wrist/color_info: CameraInfo K [nan"),
    ],
    ids=["camera names without views", "0x0 images", "step < width x 3", "width 100000 with 3 bytes", "NaN in K"],
)
def test_malformed_sets_are_rejected_with_their_reason_and_the_node_keeps_working(robot_and_policy, tamper, reason):
    robot, process = robot_and_policy
    assert robot.spin_until(lambda: "chunks" in robot.diagnostics, 30.0)
    before = int(robot.diagnostics.get("skipped: observation malformed", 0))
    robot.tamper = tamper
    try:
        assert robot.spin_until(
            lambda: (
                int(robot.diagnostics.get("skipped: observation malformed", 0)) > before
                and reason in robot.diagnostics.get("last_skip", "")
            ),
            30.0,
        ), robot.diagnostics
        robot.spin_for(1.0)  # an inference started on a good set before may still publish
        count = len(robot.chunks)
        robot.spin_for(1.5)
        assert len(robot.chunks) == count and process.poll() is None  # nothing acted on, still running
        assert robot.diagnostics["inference_errors"] == "0"  # refused before the model
    finally:
        robot.tamper = None
    assert robot.spin_until(lambda: len(robot.chunks) > count, 30.0)  # and it works on the next good set


# policy_node with a predict that blocks, for one chunk, until the resample service has run; it
# prints which chunk the scheduler executes as each inference starts
BLOCKING_POLICY_NODE = """
import sys, threading
from wam_ros.model.deploy import DeployedPolicy
from wam_ros.model.policy import WorldActionPolicy
from wam_ros.ros.nodes import policy_node

BLOCKED_CHUNK = int(sys.argv.pop(1))
resampled, current = threading.Event(), {}
serve, infer, predict = policy_node.PolicyNode._srv_resample, DeployedPolicy.infer, WorldActionPolicy.predict

def srv_resample(self, request, response):
    response = serve(self, request, response)
    resampled.set()
    return response

def logged_infer(self, obs, obs_time, clock, on_chunk, chunk_id, *args, **kwargs):
    executing = self.scheduler.executing
    print(f"chunk {chunk_id} starts; executing: {executing and executing.chunk_id}", flush=True)
    current["chunk"] = chunk_id
    return infer(self, obs, obs_time, clock, on_chunk, chunk_id, *args, **kwargs)

def blocking_predict(self, *args, **kwargs):
    if current.get("chunk") == BLOCKED_CHUNK:
        print(f"chunk {BLOCKED_CHUNK} waits for the resample", flush=True)
        resampled.wait(60.0)
    return predict(self, *args, **kwargs)

policy_node.PolicyNode._srv_resample = srv_resample
DeployedPolicy.infer, WorldActionPolicy.predict = logged_infer, blocking_predict
sys.exit(policy_node.main())
"""


def test_an_inference_in_flight_during_a_resample_neither_publishes_nor_guides_the_next_chunk(checkpoint, tmp_path):
    """Chunk 3's predict is still running when the supervisor's resample arrives: its chunk is
    neither published nor accepted by the chunk scheduler, so chunk 4, sampled from the restored
    state, starts afresh instead of being guided towards the discarded plan."""
    domain, log = SPARE_DOMAIN_IDS[1], tmp_path / "policy.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BLOCKING_POLICY_NODE,
                "3",
                "--ros-args",
                "-p",
                f"checkpoint:={checkpoint}",
                "-p",
                "robot:=agilex",
                "-p",
                "seed:=3",
            ],
            env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
            stdout=out,
        )
    robot = Robot(domain)
    try:
        assert robot.spin_until(lambda: "chunk 3 waits" in log.read_text(), 60.0), (log.read_text(), robot.diagnostics)
        assert robot.spin_until(lambda: {1, 2} <= {c.chunk_id for c in robot.chunks}, 10.0)
        arm = [n for n in ROBOT.joint_names if not n.endswith("_gripper")]
        reply = robot.call_service(
            robot.resample, Resample.Request(discarded_chunk_id=2, joint_names=arm, positions=[HOME[n] for n in arm])
        )
        assert reply.accepted and reply.chunk_id == 4
        assert robot.spin_until(lambda: any(c.chunk_id == 4 for c in robot.chunks), 60.0), log.read_text()
        assert 3 not in {c.chunk_id for c in robot.chunks}  # the discarded inference published nothing
        assert "chunk 4 starts; executing: None" in log.read_text(), log.read_text()
        assert process.poll() is None
    finally:
        robot.close()
        stop_process(process)


def test_a_diverged_checkpoint_publishes_nothing_and_the_node_keeps_serving(checkpoint, tmp_path):
    """NaN weights (a training run that diverged) make every chunk non-finite: none is published,
    each inference counts as failed in /diagnostics, and the node stays up."""
    import torch

    data = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for name in [k for k in data["model"] if k.startswith("action_head.")]:
        data["model"][name] = torch.full_like(data["model"][name], math.nan)
    diverged = tmp_path / "diverged.pt"
    torch.save(data, diverged)
    domain = SPARE_DOMAIN_IDS[1]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "policy_node"),
            "--ros-args",
            "-p",
            f"checkpoint:={diverged}",
            "-p",
            "robot:=agilex",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    robot = Robot(domain)
    try:
        assert robot.spin_until(lambda: int(robot.diagnostics.get("inference_errors", 0)) >= 2, 60.0), robot.diagnostics
        assert int(robot.diagnostics["skipped: inference failed"]) >= 2
        assert not robot.chunks and not robot.values and process.poll() is None
    finally:
        robot.close()
        stop_process(process)


def test_a_checkpoint_for_another_robot_is_refused_at_start(checkpoint):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "policy_node"),
            "--ros-args",
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            "robot:=franka",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])},
    )
    assert result.returncode == 2
    assert "checkpoint does not match the robot" in result.stderr and "state joints" in result.stderr
    unknown = subprocess.run(
        [
            str(Path(sys.executable).parent / "policy_node"),
            "--ros-args",
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            "instruction:=fold the towel",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])},
    )
    assert unknown.returncode == 2 and "fold the towel" in unknown.stderr


def test_policy_and_lift_benchmarks_run_in_short_form(checkpoint):
    from wam_ros.perf.lift import bench_lift
    from wam_ros.perf.policy import bench_policy

    result = bench_policy(duration=2.0, repeats=1, checkpoint=str(checkpoint))
    for mode in ("rtc", "blend", "naive"):
        assert result[mode]["chunks"] >= 2 and not result[mode]["errors"], result[mode]
        assert result[mode]["control_ticks"] > 0
    assert result["observation_to_first_action_ms_p50"] and result["ans_speedup"] > 0
    lift = bench_lift(repeats=2, frames=2)
    assert lift["points"] == 3 * 2 * 256 * 320 and 0 < lift["points_with_depth"] < lift["points"]
    assert lift["median_ms"]["lift_and_pack"] > 0
