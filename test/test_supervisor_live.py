"""Fault injection into a running supervisor_node process over Fast DDS.

This test process plays the rest of the system: the arm (joint_states that follow the
supervisor's joint_trajectory), the cameras (observations), and the policy (chunks, values, the
resample service).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import load_robot_config
from wam_ros.control.limits import robot_joint_limits
from wam_ros.control.trajectory import TimedTrajectory
from wam_ros.msg import ActionChunk, MultiViewRGBD, RollbackEvent, SupervisorState, ValueEstimate
from wam_ros.robots.actions import EE_AXES, EE_DELTA
from wam_ros.ros.conversions import to_time, trajectory_arrays
from wam_ros.ros.qos import (
    CLOCK_QOS,
    COMMAND_QOS,
    HEARTBEAT_QOS,
    HEARTBEAT_TOPIC,
    IMAGE_QOS,
    JOINT_STATE_QOS,
    LATCHED_QOS,
)
from wam_ros.srv import Resample

pytestmark = pytest.mark.ros

ROBOT = load_robot_config("agilex")
NAMES = ROBOT.joint_names
ARM = [n for n in NAMES if not n.endswith("_gripper")]
HOME = ROBOT.home_positions()
DT = 1 / 15
MAX_ROLLBACKS = 2
LIMITS = robot_joint_limits(ROBOT)
LOWER = np.array([LIMITS[n].min_position if n in LIMITS else 0.0 for n in NAMES])
UPPER = np.array([LIMITS[n].max_position if n in LIMITS else ROBOT.arm.gripper.stroke for n in NAMES])
SUPERVISOR = str(Path(sys.executable).parent / "supervisor_node")


class World(ProbeNode):
    """Arm, cameras and policy around the supervisor, in one rclpy context of this process."""

    def __init__(self, domain_id: int, sim_clock: bool = False):
        super().__init__("fault_injector", domain_id)
        self.q = np.array([HOME[n] for n in NAMES])
        self.trajectory: tuple[list[int], TimedTrajectory] | None = None
        self.trajectories: list[tuple[float, JointTrajectory]] = []
        self.states: list[SupervisorState] = []
        self.rollbacks: list[tuple[float, RollbackEvent]] = []
        self.resample_requests: list[Resample.Request] = []
        self.publish_joint_states = True
        self.publish_observations = True
        self.next_chunk_id = 1
        self.heartbeats: list[float] = []
        self.publish_clock = sim_clock
        self.sim_time = 2000.0
        n = self.node
        self.joint_pub = n.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
        self.obs_pub = n.create_publisher(MultiViewRGBD, "observations", IMAGE_QOS)
        self.chunk_pub = n.create_publisher(ActionChunk, "policy/chunk", COMMAND_QOS)
        self.value_pub = n.create_publisher(ValueEstimate, "policy/value", COMMAND_QOS)
        self.estop_pub = n.create_publisher(Bool, "estop", LATCHED_QOS)
        n.create_subscription(JointTrajectory, "joint_trajectory", self._on_trajectory, COMMAND_QOS)
        n.create_subscription(SupervisorState, "supervisor/state", self.states.append, LATCHED_QOS)
        n.create_subscription(
            RollbackEvent, "supervisor/rollback", lambda m: self.rollbacks.append((time.monotonic(), m)), LATCHED_QOS
        )
        n.create_subscription(
            Header, HEARTBEAT_TOPIC, lambda m: self.heartbeats.append(time.monotonic()), HEARTBEAT_QOS
        )
        n.create_service(Resample, "policy/resample", self._on_resample)
        if sim_clock:  # the simulator's /clock, advancing in real time unless told otherwise
            self.clock_pub = n.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
            n.create_timer(0.01, self._publish_clock)
        n.create_timer(0.01, self._publish_joint_states)
        n.create_timer(1 / 15, self._publish_observation)
        self.clients = {
            name: n.create_client(Trigger, f"supervisor/{name}") for name in ("estop", "reset", "start_episode")
        }

    # the arm follows the newest trajectory exactly (a perfect position-controlled bridge)
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = time.monotonic()
        self.trajectories.append((now, msg))
        ros_now = self.node.get_clock().now().nanoseconds * 1e-9
        names, times, points = trajectory_arrays(msg, ros_now)
        columns = [NAMES.index(name) for name in names]
        # ROS (system) time -> the monotonic clock this arm runs on
        self.trajectory = (columns, TimedTrajectory(times + now - ros_now, points, now, self.q[columns]))

    def _publish_joint_states(self) -> None:
        if self.trajectory is not None:
            columns, trajectory = self.trajectory
            self.q[columns] = trajectory.sample(time.monotonic())
        if self.publish_joint_states:
            msg = JointState(name=NAMES, position=self.q.tolist())
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.joint_pub.publish(msg)

    def _publish_observation(self) -> None:
        if self.publish_observations:
            msg = MultiViewRGBD(camera_names=["head", "left_wrist", "right_wrist"])
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.obs_pub.publish(msg)

    def _publish_clock(self) -> None:
        if self.publish_clock:
            self.sim_time += 0.01
            self.clock_pub.publish(ClockMsg(clock=to_time(self.sim_time)))

    def _on_resample(self, request, response):
        self.resample_requests.append(request)
        response.accepted, response.chunk_id, response.message = True, self.next_chunk_id, "ok"
        return response

    # --- helpers used by the tests ---------------------------------------------------------
    @property
    def state(self) -> SupervisorState:
        return self.states[-1]

    def arm_q(self) -> np.ndarray:
        return self.q[[NAMES.index(n) for n in ARM]]

    def send_chunk(
        self,
        positions: np.ndarray | None = None,
        chunk_id: int | None = None,
        dt: float = DT,
        value: float = math.nan,
        names: list[str] = ARM,
        action_space: int = 0,
    ) -> int:
        positions = np.tile(self.arm_q(), (15, 1)) if positions is None else positions
        chunk_id = self.next_chunk_id if chunk_id is None else chunk_id
        self.next_chunk_id = chunk_id + 1
        msg = ActionChunk(
            chunk_id=chunk_id,
            joint_names=names,
            horizon=len(positions),
            dt=dt,
            positions=positions.ravel().tolist(),
            value=value,
            action_space=action_space,
        )
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.chunk_pub.publish(msg)
        return chunk_id

    def send_value(self, value: float, chunk_id: int | None = None) -> None:
        # one estimate per chunk (the supervisor counts a chunk's value once): each stands for a new one
        if chunk_id is None:
            self.value_chunk_id = chunk_id = max(getattr(self, "value_chunk_id", 0), 100_000) + 1
        msg = ValueEstimate(chunk_id=chunk_id, value=value, delta=0.2)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.value_pub.publish(msg)

    def call(self, name: str) -> Trigger.Response:
        return self.call_service(self.clients[name], Trigger.Request())

    def until_state(self, name: str, timeout: float = 3.0) -> SupervisorState:
        assert self.spin_until(lambda: self.states and self.state.state_name == name, timeout), (
            f"supervisor in {self.state.state_name} ({self.state.reason}; last rejection: {self.state.last_rejection}), expected {name}"
        )
        return self.state

    def running(self) -> None:
        """Fresh streams, new episode, RUNNING."""
        self.publish_joint_states = self.publish_observations = True
        self.spin_for(0.3)
        if self.state.state_name in ("ESTOP", "HOLD"):
            self.call("reset")
        self.call("start_episode")
        before = len(self.trajectories)
        self.send_chunk()
        self.until_state("RUNNING")
        assert self.spin_until(lambda: len(self.trajectories) > before)


def _supervised_world(domain: int, *parameters: str, sim_clock: bool = False):
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    process = subprocess.Popen(
        [
            SUPERVISOR,
            "--ros-args",
            "-p",
            "robot:=agilex",
            "-p",
            "rollback.cooldown:=0.0",
            "-p",
            f"rollback.max_rollbacks:={MAX_ROLLBACKS}",
            "-p",
            "timeouts.value:=0.0",
            "-p",
            "timeouts.chunks:=0.0",
            *parameters,
        ],
        env=env,
    )
    w = World(domain, sim_clock)
    w.process = process
    try:
        assert w.spin_until(lambda: bool(w.states), timeout=30.0), "supervisor never published its state"
        yield w
        assert process.poll() is None, f"the supervisor died (exit code {process.returncode})"
    finally:
        try:
            stop_process(process)
        finally:
            w.close()


@pytest.fixture(scope="module")
def world():
    yield from _supervised_world(SPARE_DOMAIN_IDS[0], "-p", "rollback.consecutive:=1")


@pytest.fixture(scope="module")
def sim_world():
    """A supervisor on sim time (/clock from the test) that needs two consecutive low values."""
    yield from _supervised_world(
        SPARE_DOMAIN_IDS[1], "-p", "use_sim_time:=true", "-p", "rollback.consecutive:=2", sim_clock=True
    )


def test_bad_chunks_are_rejected_and_the_arm_holds_its_trajectory(world):
    world.running()
    forwarded = len(world.trajectories)
    q = world.arm_q()
    nan_chunk = np.tile(q, (15, 1))
    nan_chunk[4, 2] = math.nan
    bad_id = world.send_chunk(nan_chunk)
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == bad_id)
    assert "non-finite target for left_joint3 at step 4" in world.state.last_rejection
    far = np.tile(q, (15, 1))
    far[:, 1] = 3.5  # above left_joint2's 3.14
    bad_id = world.send_chunk(far)
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == bad_id)
    assert "outside" in world.state.last_rejection or "max_start_deviation" in world.state.last_rejection
    world.spin_for(0.3)
    assert len(world.trajectories) == forwarded, "a rejected chunk reached the arm"
    assert world.state.state_name == "RUNNING"
    np.testing.assert_allclose(world.arm_q(), q, atol=1e-9)


def _move(world, offset: float) -> None:
    """A valid chunk that moves every arm joint by `offset` rad over one second."""
    q = world.arm_q()
    world.send_chunk(q + np.linspace(0.0, offset, 15)[:, None])
    world.spin_for(15 * DT + 0.2)


def test_value_drop_rolls_back_to_the_peak_checkpoint_and_resamples_once(world):
    world.running()
    for value, offset in ((0.3, 0.05), (0.6, 0.05), (0.8, 0.0)):
        world.send_value(value)
        world.spin_for(0.1)
        _move(world, offset)
    peak_pose = world.arm_q().copy()
    world.send_value(0.8)  # checkpoint at the peak pose
    world.spin_for(0.1)
    _move(world, 0.1)
    _move(world, 0.1)
    assert np.abs(world.arm_q() - peak_pose).max() > 0.15
    world.send_value(0.7)  # not low enough: 0.7 >= 0.8 - 0.2
    world.spin_for(0.3)
    assert not world.rollbacks
    requests_before = len(world.resample_requests)
    sent = time.monotonic()
    world.send_value(0.55)
    assert world.spin_until(lambda: world.rollbacks, timeout=2.0), "no RollbackEvent"
    received, event = world.rollbacks[-1]
    assert event.value == pytest.approx(0.55) and event.peak == pytest.approx(0.8) and event.rollback_index == 1
    np.testing.assert_allclose(event.restored_positions, peak_pose, atol=1e-6)
    assert world.spin_until(lambda: any(t >= sent for t, _ in world.trajectories), timeout=2.0)
    first_command = next(t for t, _ in world.trajectories if t >= sent)
    print(f"low value -> first rollback command: {1e3 * (first_command - sent):.1f} ms")
    assert first_command - sent < 0.5
    world.until_state("ROLLING_BACK", 1.0)
    world.until_state("RESAMPLING", 10.0)
    np.testing.assert_allclose(world.arm_q(), peak_pose, atol=0.05)
    world.spin_for(0.5)
    assert len(world.resample_requests) == requests_before + 1, "resample must be requested exactly once"
    np.testing.assert_allclose(world.resample_requests[-1].positions, peak_pose, atol=0.05)
    world.send_chunk()  # the resampled chunk, with the id the service promised
    world.until_state("RUNNING")


def test_stale_joint_states_hold_within_one_timeout_and_recover_with_a_new_chunk(world):
    world.running()
    world.publish_joint_states = False
    stopped = time.monotonic()
    state = world.until_state("HOLD", 2.0)
    assert "joint_states" in state.reason
    assert time.monotonic() - stopped < 0.2 + 0.25  # timeout + tick + DDS
    world.publish_joint_states = True
    world.spin_for(0.5)
    assert world.state.state_name == "HOLD"  # fresh again, but waits for a new chunk
    world.send_chunk()
    world.until_state("RUNNING")


def test_stale_observations_hold(world):
    world.running()
    world.publish_observations = False
    assert "observations" in world.until_state("HOLD", 2.0).reason
    world.publish_observations = True
    world.spin_for(0.3)
    world.send_chunk()
    world.until_state("RUNNING")


def test_estop_latches_until_reset(world):
    world.running()
    assert world.call("estop").success
    world.until_state("ESTOP")
    chunk_id = world.send_chunk()
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == chunk_id)
    assert "e-stop is latched" in world.state.last_rejection
    world.spin_for(0.5)
    assert world.state.state_name == "ESTOP"
    assert world.call("reset").success
    world.until_state("HOLD")
    world.send_chunk()
    world.until_state("RUNNING")
    world.estop_pub.publish(Bool(data=True))  # the topic latches it too
    world.until_state("ESTOP")
    world.call("reset")


def test_rollback_budget_exhausted_holds_for_the_operator(world):
    world.running()
    for k in range(MAX_ROLLBACKS + 1):
        world.send_value(0.9)
        world.spin_for(0.2)
        world.send_value(0.5)
        if k < MAX_ROLLBACKS:
            world.until_state("RESAMPLING", 10.0)
            world.send_chunk()
            world.until_state("RUNNING")
    state = world.until_state("HOLD", 2.0)
    assert f"rollback budget of {MAX_ROLLBACKS} exhausted" in state.reason
    chunk_id = world.send_chunk()
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == chunk_id)
    assert "held for the operator" in world.state.last_rejection


# --- the fault catalogue of the issue "Safety chain" (README, Safety) -----------------------------
def _trajectory_points(world: World, since: int) -> np.ndarray:
    rows = []
    for _, msg in world.trajectories[since:]:
        columns = [NAMES.index(n) for n in msg.joint_names]
        for point in msg.points:
            row = np.full(len(NAMES), np.nan)
            row[columns] = point.positions
            rows.append(row)
    return np.array(rows).reshape(-1, len(NAMES))


def _assert_inside_limits(world: World, since: int) -> None:
    points = _trajectory_points(world, since)
    known = ~np.isnan(points)
    assert (np.where(known, points, LOWER) >= LOWER).all() and (np.where(known, points, UPPER) <= UPPER).all(), (
        "a forwarded point lies outside the joint limits"
    )


def test_a_hold_at_a_reading_just_outside_a_limit_is_sent_inside_it(world):
    world.running()
    world.trajectory = None  # the arm stands still, its encoder reads 0.5 mrad beyond the limit
    joint = NAMES.index("left_joint2")
    world.q[joint] = UPPER[joint] + 5e-4
    world.spin_for(0.1)
    since = len(world.trajectories)
    world.publish_joint_states = False
    world.until_state("HOLD", 2.0)
    assert world.spin_until(lambda: len(world.trajectories) > since)
    hold = world.trajectories[since][1]
    assert len(hold.points) == 1
    assert hold.points[0].positions[hold.joint_names.index("left_joint2")] == pytest.approx(UPPER[joint])
    _assert_inside_limits(world, since)
    world.q[joint] = UPPER[joint] - 0.1


@pytest.mark.parametrize("dt", [2.0**32, 3e9, 1e-10, 5e-324])
def test_a_chunk_with_an_absurd_time_step_is_rejected_and_counted(world, dt):
    world.running()
    since, rejected = len(world.trajectories), world.state.chunks_rejected
    chunk_id = world.send_chunk(world.arm_q() + np.linspace(0.0, 0.5, 15)[:, None], dt=dt)
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == chunk_id)
    assert "dt" in world.state.last_rejection and world.state.chunks_rejected == rejected + 1
    world.spin_for(0.2)
    assert len(world.trajectories) == since, "a chunk with an absurd dt reached the arm"


def test_a_rollback_to_a_checkpoint_read_outside_a_limit_stays_inside_the_limits(world):
    world.running()
    world.trajectory = None
    joint = NAMES.index("left_joint3")
    world.q[joint] = LOWER[joint] - 0.02  # the reading at the peak lies outside the limit
    world.spin_for(0.1)
    world.send_value(0.9)
    world.spin_for(0.2)
    world.q[joint] = LOWER[joint] + 0.2
    world.send_chunk()
    world.spin_for(0.2)
    since, rollbacks = len(world.trajectories), len(world.rollbacks)
    world.send_value(0.4)
    assert world.spin_until(lambda: len(world.rollbacks) > rollbacks, 2.0), world.state.reason
    assert world.spin_until(lambda: len(world.trajectories) > since)
    _assert_inside_limits(world, since)
    world.until_state("RESAMPLING", 10.0)  # the clipped checkpoint counts as reached


@pytest.mark.parametrize("bad", [math.inf, 1e300])
def test_an_absurd_end_effector_chunk_is_rejected_and_the_supervisor_lives(world, bad):
    world.running()
    rows = np.zeros((15, 12))
    rows[5:, 0] = bad
    chunk_id = world.send_chunk(
        rows, names=[f"{s}_{a}" for s in ("left", "right") for a in EE_AXES], action_space=EE_DELTA
    )
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == chunk_id)
    assert ("non-finite" if math.isinf(bad) else "end-effector delta") in world.state.last_rejection
    assert world.process.poll() is None
    beats = len(world.heartbeats)
    world.spin_for(0.5)
    assert len(world.heartbeats) - beats >= 10, "the heartbeat to the bridges stopped"


def test_malformed_chunks_and_joint_states_are_rejected_with_their_cause(world):
    world.running()
    rejected = world.state.chunks_rejected
    msg = ActionChunk(chunk_id=4242, joint_names=ARM, horizon=15, dt=DT, positions=[0.0] * 7)
    world.chunk_pub.publish(msg)
    assert world.spin_until(lambda: world.state.last_rejected_chunk_id == 4242)
    assert "7 values do not fill horizon 15 x 12 joints" in world.state.last_rejection
    assert world.state.chunks_rejected == rejected + 1
    short = JointState(name=NAMES, position=[0.0] * 5)  # fewer positions than names
    for _ in range(5):
        world.joint_pub.publish(short)
    world.spin_for(0.3)
    assert world.process.poll() is None
    world.send_chunk()
    world.until_state("RUNNING")


@pytest.mark.parametrize("value", [1e30, 1.5, -0.5])
def test_values_outside_zero_to_one_are_rejected_and_trigger_nothing(world, value):
    world.running()
    world.send_value(0.5)
    world.spin_for(0.1)
    rollbacks = len(world.rollbacks)
    world.send_value(value)
    world.spin_for(0.2)
    world.send_value(0.45)  # a dip below an absurd peak would roll back; below 0.5 - 0.2 it does not
    world.spin_for(0.3)
    assert len(world.rollbacks) == rollbacks and world.state.peak == pytest.approx(0.5)
    assert world.state.state_name == "RUNNING"


def test_random_messages_never_put_a_point_outside_the_limits_or_end_the_supervisor(world):
    rng = np.random.default_rng(7)
    world.running()
    since = len(world.trajectories)
    for _ in range(150):
        kind = rng.integers(5)
        if kind == 0:
            rows = world.arm_q() + rng.normal(0.0, rng.choice([0.01, 0.1, 1.0]), (15, 12)).cumsum(axis=0)
            if rng.random() < 0.2:
                rows[rng.integers(15), rng.integers(12)] = rng.choice([np.nan, np.inf, 1e300, -1e30])
            world.send_chunk(rows, dt=float(rng.choice([DT, DT, 2.0**32, 1e-10, -1.0, 0.02])))
        elif kind == 1:
            world.send_value(float(rng.choice([rng.random(), 1e30, -1.0, np.nan, np.inf])))
        elif kind == 2:
            q = world.q.copy()
            q[rng.integers(len(q))] += rng.choice([0.0005, 0.3, -0.3, np.inf])
            world.joint_pub.publish(JointState(name=NAMES, position=q[: rng.integers(1, len(q) + 1)].tolist()))
        elif kind == 3:
            world.send_chunk(
                rng.normal(0.0, 0.05, (15, 12)) * rng.choice([1.0, 1e6]),
                names=[f"{s}_{a}" for s in ("left", "right") for a in EE_AXES],
                action_space=EE_DELTA,
            )
        else:
            world.spin_for(0.05)
        world.spin_for(0.01)
    world.spin_for(0.5)
    assert world.process.poll() is None
    _assert_inside_limits(world, since)
    world.running()  # and it still works


def _sim_running(world: World) -> None:
    world.publish_clock = world.publish_joint_states = world.publish_observations = True
    world.spin_for(0.5)
    if world.state.state_name != "RUNNING":
        world.call("reset")
    world.call("start_episode")
    world.send_chunk()
    world.until_state("RUNNING")


def test_a_clock_jumping_back_holds(sim_world):
    _sim_running(sim_world)
    sim_world.sim_time -= 990.0  # the simulator restarted or rewound
    state = sim_world.until_state("HOLD", 2.0)
    assert "clock jumped back" in state.reason
    _sim_running(sim_world)


def test_a_clock_that_stops_never_makes_streams_look_fresh(sim_world):
    _sim_running(sim_world)
    sim_world.publish_clock = sim_world.publish_joint_states = False  # the simulator hung
    state = sim_world.until_state("HOLD", 3.0)
    assert "ROS time has not advanced" in state.reason or "stale" in state.reason
    since = len(sim_world.trajectories)
    sim_world.spin_for(1.5)
    chunk_id = sim_world.send_chunk()
    assert sim_world.spin_until(lambda: sim_world.state.last_rejected_chunk_id == chunk_id, 3.0)
    hold = [m for _, m in sim_world.trajectories[since:] if len(m.points) > 1]
    assert not hold, "a chunk was forwarded while the clock stood still"
    _sim_running(sim_world)


def test_a_chunks_value_heard_twice_is_one_dip_not_two(sim_world):
    _sim_running(sim_world)
    for value in (0.9, 0.4):  # each chunk's value in the ActionChunk and in its ValueEstimate
        chunk_id = sim_world.send_chunk(value=value)
        sim_world.send_value(value, chunk_id)
        sim_world.spin_for(0.6)
    assert not sim_world.rollbacks, "consecutive:=2 fired on a single low chunk"
    chunk_id = sim_world.send_chunk(value=0.4)
    sim_world.send_value(0.4, chunk_id)
    assert sim_world.spin_until(lambda: bool(sim_world.rollbacks), 2.0), "the second low chunk must roll back"


BAD_CONFIGURATIONS = [
    ("binary.yaml", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", [], "not a text (UTF-8) YAML file"),
    ("list.yaml", b"- left_joint1\n- 2.0\n", [], "expected 'joint_limits:' mapping joint names"),
    (
        "string.yaml",
        b"joint_limits:\n  left_joint1: {max_velocity: fast}\n",
        [],
        "max_velocity: expected a number, got 'fast'",
    ),
    ("field.yaml", b"joint_limits:\n  left_joint1: {max_speed: 1.0}\n", [], "unknown field(s) ['max_speed']"),
    (
        None,
        None,
        ["-p", "workspace.enabled:=true", "-p", "workspace.min:=[0.0, 1.0]"],
        "workspace.min: expected 3 finite numbers",
    ),
    (None, None, ["-p", "rollback.value_range:=[1.0, 0.0]"], "rollback.value_range"),
]


@pytest.mark.parametrize(
    "name, content, extra, message", BAD_CONFIGURATIONS, ids=[c[3].split(":")[0][:30] for c in BAD_CONFIGURATIONS]
)
def test_a_rejected_configuration_ends_the_process_with_exit_code_2_and_names_the_field(
    tmp_path, name, content, extra, message
):
    if name is not None:
        (tmp_path / name).write_bytes(content)
        extra = ["-p", f"joint_limits_file:={tmp_path / name}"]
    process = subprocess.run(
        [str(Path(sys.executable).parent / "supervisor_node"), "--ros-args", *extra],
        env={**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2, process.stderr
    assert message in process.stderr


def test_without_autostart_a_rejected_configuration_leaves_the_node_unconfigured(tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from wam_ros.ros.nodes.supervisor_node import SupervisorNode

    limits = tmp_path / "limits.yaml"
    limits.write_text("joint_limits:\n  left_joint1: {max_speed: 1.0}\n")
    rclpy.init(domain_id=SPARE_DOMAIN_IDS[1])
    try:
        node = SupervisorNode(
            parameter_overrides=[Parameter("joint_limits_file", value=str(limits)), Parameter("autostart", value=False)]
        )
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.core is None  # nothing is forwarded; a lifecycle manager sees the failure
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
