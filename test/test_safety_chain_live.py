"""The whole safety chain as running processes: supervisor_node -> joint_trajectory -> arm_bridge_node
-> piper_sdk -> emulated Pipers on virtual CAN, over Fast DDS. This test process plays the policy and
the cameras (chunks, observations) and watches what the arms do.

The per-node fault tests (test_supervisor_live.py, test_bridge_faults_live.py) stand in for the other
end of the chain; here both ends are the real nodes, so a fault has to be caught by the chain itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import load_robot_config
from wam_ros.control.limits import robot_joint_limits
from wam_ros.msg import ActionChunk, MultiViewRGBD, SupervisorState
from wam_ros.ros.conversions import trajectory_arrays
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, IMAGE_QOS, JOINT_STATE_QOS, LATCHED_QOS

pytestmark = pytest.mark.ros

ROBOT = load_robot_config("agilex")
NAMES = ROBOT.joint_names
ARM = [n for n in NAMES if not n.endswith("_gripper")]
LIMITS = robot_joint_limits(ROBOT)
LOWER = np.array([LIMITS[n].min_position for n in ARM])
UPPER = np.array([LIMITS[n].max_position for n in ARM])
DT = 1 / 15
PORTS = {"left": "vcan_chain_left", "right": "vcan_chain_right"}
# The nodes' timeouts are longer than their defaults (0.5 s, 0.5 s, 0.2 s, 0.5 s): on a loaded 2-core
# machine a process can stall for half a second, and a hold the test did not cause would hide the
# fault it injects
COMMAND_TIMEOUT = 1.0
OBSERVATION_TIMEOUT = 1.5
JOINT_STATE_TIMEOUT = 1.0
DRIVER_STATE_TIMEOUT = 2.0
SUPERVISOR = str(Path(sys.executable).parent / "supervisor_node")
INJECTABLE_BRIDGE = Path(__file__).parent / "support" / "injectable_bridge.py"


class Policy(ProbeNode):
    """Chunks and observations in; joint_states, trajectories and supervisor states out."""

    def __init__(self, domain: int):
        super().__init__("chain_probe", domain)
        self.states: list[tuple[float, JointState]] = []
        self.trajectories: list[JointTrajectory] = []
        self.supervisor: list[SupervisorState] = []
        self.observing = True
        self.next_chunk_id = 1
        n = self.node
        n.create_subscription(
            JointState, "joint_states", lambda m: self.states.append((self.now(), m)), JOINT_STATE_QOS
        )
        n.create_subscription(JointTrajectory, "joint_trajectory", self.trajectories.append, COMMAND_QOS)
        n.create_subscription(SupervisorState, "supervisor/state", self.supervisor.append, LATCHED_QOS)
        self.bridge_status = "no /diagnostics from the bridge yet"
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, DIAGNOSTICS_QOS)
        self.chunk_pub = n.create_publisher(ActionChunk, "policy/chunk", COMMAND_QOS)
        self.obs_pub = n.create_publisher(MultiViewRGBD, "observations", IMAGE_QOS)
        self.fault_pub = n.create_publisher(String, "/arm_bridge/emulator_fault", 10)
        self.clients = {name: n.create_client(Trigger, f"supervisor/{name}") for name in ("reset", "start_episode")}
        n.create_timer(DT, self._observe)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _observe(self) -> None:
        if self.observing:
            msg = MultiViewRGBD(camera_names=["head", "left_wrist", "right_wrist"])
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.obs_pub.publish(msg)

    def q(self, since: float = -np.inf) -> np.ndarray:
        """Arm readings (rows: messages after `since`, columns: ARM)."""
        return np.array([[m.position[list(m.name).index(n)] for n in ARM] for t, m in self.states if t > since])

    def send_chunk(self, positions: np.ndarray) -> None:
        msg = ActionChunk(
            chunk_id=self.next_chunk_id,
            joint_names=ARM,
            horizon=len(positions),
            dt=DT,
            positions=positions.ravel().tolist(),
            value=float("nan"),
        )
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.next_chunk_id += 1
        self.chunk_pub.publish(msg)

    def call(self, name: str) -> None:
        self.call_service(self.clients[name], Trigger.Request())

    def state(self) -> str:
        return self.supervisor[-1].state_name if self.supervisor else ""

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "arm bridge" in status.name:
                values = {v.key: v.value for v in status.values}
                self.bridge_status = f"{status.message} {values}"

    def why(self) -> str:
        last = self.supervisor[-1]
        return (
            f"supervisor {last.state_name}: {last.reason} / last rejection: {last.last_rejection}; "
            f"bridge: {self.bridge_status}"
        )

    def running(self) -> None:
        """Fresh observations, a new episode, RUNNING with a chunk that holds where the arms are."""
        self.observing = True
        self.spin_for(0.5)
        if self.state() in ("HOLD", "ESTOP"):
            self.call("reset")
        self.call("start_episode")
        for _ in range(10):  # at start-up the supervisor may not have heard the bridge yet
            self.send_chunk(np.tile(self.target_here(), (15, 1)))
            if self.spin_until(lambda: self.state() == "RUNNING", 1.0):
                break
        assert self.state() == "RUNNING", self.why()

    def target_here(self) -> np.ndarray:
        """Where the arms are, as a target: a reading a hair past a limit is not a target."""
        return np.clip(self.q()[-1], LOWER, UPPER)

    def move(self, joint: str, goal: float, duration: float) -> None:
        """A minimum-jerk chunk taking one joint from where it is to `goal` (the others stay)."""
        start = self.target_here()
        s = np.arange(1, round(duration / DT) + 1) * DT / duration
        blend = 10 * s**3 - 15 * s**4 + 6 * s**5
        positions = np.tile(start, (len(s), 1))
        k = ARM.index(joint)
        positions[:, k] = start[k] + (goal - start[k]) * blend
        self.send_chunk(positions)


def _process(args: list[str], domain: int) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, "ROS_DOMAIN_ID": str(domain)})


@pytest.fixture(scope="module")
def chain():
    domain = SPARE_DOMAIN_IDS[0]
    bridge = _process(
        [
            sys.executable,
            str(INJECTABLE_BRIDGE),
            "--ros-args",
            "-p",
            "robot:=agilex",
            "-p",
            "agilex.can_interface:=virtual",
            "-p",
            "agilex.emulate:=true",
            "-p",
            f"agilex.can_ports:=[{PORTS['left']}, {PORTS['right']}]",
            "-p",
            f"command_timeout:={COMMAND_TIMEOUT}",
            "-p",
            f"state_timeout:={DRIVER_STATE_TIMEOUT}",
        ],
        domain,
    )
    supervisor = _process(
        [
            SUPERVISOR,
            "--ros-args",
            "-p",
            "robot:=agilex",
            "-p",
            "timeouts.value:=0.0",
            "-p",
            "timeouts.chunks:=0.0",
            "-p",
            f"timeouts.observations:={OBSERVATION_TIMEOUT}",
            "-p",
            f"timeouts.joint_states:={JOINT_STATE_TIMEOUT}",
        ],
        domain,
    )
    policy = Policy(domain)
    policy.processes = {"bridge": bridge, "supervisor": supervisor}
    try:
        assert policy.spin_until(lambda: len(policy.states) > 20 and bool(policy.supervisor), 60.0), (
            "no joint_states from the bridge or no state from the supervisor"
        )
        yield policy
        for name, process in policy.processes.items():
            assert process.poll() is None, f"the {name} died"
    finally:
        for process in policy.processes.values():
            stop_process(process)
        policy.close()


def _assert_inside_limits(readings: np.ndarray, tolerance: float) -> None:
    worst = np.maximum(LOWER - readings, readings - UPPER).max(axis=0)
    assert (worst <= tolerance).all(), {n: w for n, w in zip(ARM, worst) if w > tolerance}


def test_a_hold_at_a_noisy_reading_on_a_limit_stops_the_arm(chain):
    """Case 1 through the chain: a joint at its limit reads 0.5 mrad past it; the hold built from
    that reading is executed (clipped), so the chunk running before the hold stops."""
    chain.running()
    chain.move("left_joint3", LIMITS["left_joint3"].max_position, duration=2.0)
    k3, k1 = ARM.index("left_joint3"), ARM.index("left_joint1")
    assert chain.spin_until(lambda: abs(chain.q()[-1][k3] - LIMITS["left_joint3"].max_position) < 2e-3, 8.0), (
        f"left_joint3 at {chain.q()[-1][k3]}; {chain.why()}"
    )
    chain.fault_pub.publish(String(data=json.dumps({"port": PORTS["left"], "reading_offset": [0, 0, 5e-4, 0, 0, 0]})))
    try:
        _hold_stops_joint1(chain, k3, k1)
    finally:
        chain.fault_pub.publish(String(data=json.dumps({"port": PORTS["left"], "reading_offset": [0] * 6})))
        chain.spin_for(0.2)
    chain.running()
    chain.move("left_joint3", -1.3, duration=2.0)
    assert chain.spin_until(lambda: abs(chain.q()[-1][k3] + 1.3) < 2e-3, 8.0), chain.why()


def _hold_stops_joint1(chain: Policy, k3: int, k1: int) -> None:
    assert chain.spin_until(lambda: chain.q()[-1][k3] > LIMITS["left_joint3"].max_position, 3.0)
    if chain.state() != "RUNNING":  # a loaded machine can starve the observations for 0.5 s
        chain.running()
    start = chain.q()[-1][k1]
    chain.move("left_joint1", start + 1.5, duration=8.0)
    assert chain.spin_until(lambda: chain.q()[-1][k1] > start + 0.05, 5.0), f"left_joint1 never moved; {chain.why()}"
    assert chain.state() == "RUNNING", chain.why()
    chain.observing = False  # the cameras stop: the supervisor holds after its observation timeout
    assert chain.spin_until(lambda: chain.state() == "HOLD", OBSERVATION_TIMEOUT + 2.0)
    held = chain.now()
    chain.spin_for(2.0)
    # the 8 s chunk had more than 1 rad to go; the hold brakes it within the follower's deceleration
    # (on a loaded machine the hold is where the supervisor last heard the arm, a little behind it,
    # so the arm may come back that far), and then the joint stays still
    after = chain.q(since=held)[:, k1]
    print(f"left_joint1 after HOLD: {np.ptp(after):.4f} rad")
    assert np.ptp(after) < 0.3, f"left_joint1 went on for {np.ptp(after):.3f} rad after the hold"
    assert np.ptp(chain.q(since=held + 1.5)[:, k1]) < 2e-3, "left_joint1 still moving 1.5 s after the hold"
    assert chain.processes["bridge"].poll() is None and chain.processes["supervisor"].poll() is None


def test_random_chunks_never_put_a_point_or_a_joint_outside_the_limits(chain):
    """Chunks of random targets (many far outside the limits, some absurd) through the real chain:
    every forwarded point and every joint on the CAN bus stays inside the limits."""
    chain.running()
    rng = np.random.default_rng(7)
    lower, upper = LOWER, UPPER
    since = chain.now()
    first_trajectory = len(chain.trajectories)
    for _ in range(12):
        start = chain.q()[-1]
        goal = start + rng.uniform(-0.6, 0.6, len(ARM))
        if rng.random() < 0.5:  # past a limit
            k = rng.integers(len(ARM))
            goal[k] = rng.choice([lower[k] - rng.uniform(1e-4, 0.5), upper[k] + rng.uniform(1e-4, 0.5)])
        s = np.arange(1, 31)[:, None] / 30
        positions = start + (goal - start) * (10 * s**3 - 15 * s**4 + 6 * s**5)
        if rng.random() < 0.2:
            positions[rng.integers(30), rng.integers(len(ARM))] = rng.choice([1e300, -1e30, np.inf])
        chain.send_chunk(positions)
        chain.spin_for(0.4)
        if chain.state() == "HOLD":
            chain.running()
    for msg in chain.trajectories[first_trajectory:]:
        names, _, points = trajectory_arrays(msg, now=0.0)
        columns = [ARM.index(n) for n in names if n in ARM]
        arm_points = points[:, [names.index(ARM[c]) for c in columns]]
        assert ((arm_points >= lower[columns]) & (arm_points <= upper[columns])).all()
    # the emulated joints (0.001 degree resolution on the bus)
    _assert_inside_limits(chain.q(since=since), tolerance=1e-4)
    assert chain.processes["supervisor"].poll() is None


def test_a_killed_supervisor_stops_the_running_chunk_within_the_command_timeout(chain):
    """Case 4: SIGKILL the supervisor while a long chunk runs; without its heartbeat the bridge holds."""
    chain.running()
    k1 = ARM.index("left_joint1")
    start = chain.q()[-1][k1]
    direction = -1.0 if start > 0 else 1.0  # toward the middle of the range, wherever the arm was left
    chain.move("left_joint1", start + 1.5 * direction, duration=10.0)
    assert chain.spin_until(lambda: (chain.q()[-1][k1] - start) * direction > 0.1, 5.0), (
        f"left_joint1 never moved; {chain.why()}"
    )
    # the chunk is running when the supervisor dies (not held already for some other reason)
    assert chain.state() == "RUNNING" and np.ptp(chain.q()[-10:, k1]) > 1e-3, chain.why()
    supervisor = chain.processes.pop("supervisor")
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait()
    killed = chain.now()
    chain.spin_for(2.5)
    # the 10 s chunk had more than 1 rad to go: the bridge holds after the command timeout, brakes,
    # and the joint stays still
    after = chain.q(since=killed)[:, k1]
    print(f"left_joint1 after the supervisor's SIGKILL: {np.ptp(after):.4f} rad")
    assert np.ptp(after) < 0.5, f"left_joint1 moved {np.ptp(after):.3f} rad after the kill"
    still = chain.q(since=killed + COMMAND_TIMEOUT + 1.0)[:, k1]
    assert len(still) > 10 and np.ptp(still) < 2e-3, f"left_joint1 still moving: {np.ptp(still):.4f} rad"
