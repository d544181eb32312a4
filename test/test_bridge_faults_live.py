"""Faults of the arm bridge as a running system: arm_bridge_node as a process with emulated Pipers
on virtual CAN (piper_sdk in the loop), driven over Fast DDS by a probe that stands in for the
supervisor (trajectories and heartbeats); and sim_node's watchdog in sim time. Every fault must end
with the arms held, its reason in /diagnostics, and the node alive.

The emulators live in the node's process (python-can's virtual bus is in-process), so the node runs
here with one addition: a topic on which the test sets an emulator's faults (injectable_bridge.py).
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
from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import load_robot_config
from wam_ros.ros.conversions import from_time
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, HEARTBEAT_QOS, HEARTBEAT_TOPIC, JOINT_STATE_QOS

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
PORTS = {"left": "vcan_faults_left", "right": "vcan_faults_right"}
COMMAND_TIMEOUT = 0.5
STROKE = load_robot_config("agilex").arm.gripper.stroke

HERE = Path(__file__).parent
INJECTABLE_BRIDGE = HERE / "support" / "injectable_bridge.py"  # the node with ~/emulator_fault
HEARTBEAT = HERE / "support" / "heartbeat_standin.py"  # the supervisor's heartbeat alone, as a process that can die


class Probe(ProbeNode):
    def __init__(self, domain: int, diagnostics_of: str = "arm bridge"):
        super().__init__("faults_probe", domain)
        self.states: list[tuple[float, JointState]] = []  # (arrival, message)
        self.diagnostics: list = []
        self.beats_seen = 0
        self.beating = False  # publish the heartbeat from here (the supervisor's rate)
        node = self.node
        node.create_subscription(
            JointState, "joint_states", lambda m: self.states.append((self.now(), m)), JOINT_STATE_QOS
        )
        node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if diagnostics_of in s.name),
            DIAGNOSTICS_QOS,
        )
        node.create_subscription(
            Header, HEARTBEAT_TOPIC, lambda m: setattr(self, "beats_seen", self.beats_seen + 1), HEARTBEAT_QOS
        )
        self.trajectory_pub = node.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS)
        self.heartbeat_pub = node.create_publisher(Header, HEARTBEAT_TOPIC, HEARTBEAT_QOS)
        self.fault_pub = node.create_publisher(String, "/arm_bridge/emulator_fault", 10)
        self.recover_client = node.create_client(Trigger, "/arm_bridge/recover")
        node.create_timer(0.02, self._beat)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _beat(self) -> None:
        if self.beating:
            self.heartbeat_pub.publish(Header(stamp=self.node.get_clock().now().to_msg()))

    def q(self, name: str, since: float = -np.inf) -> np.ndarray:
        """Readings of one joint (arrived after `since`)."""
        return np.array([m.position[list(m.name).index(name)] for t, m in self.states if t > since])

    def send(self, names: list[str], points: list[list[float]], offsets: list[float]) -> None:
        msg = JointTrajectory(joint_names=names)
        for positions, t in zip(points, offsets):
            msg.points.append(
                JointTrajectoryPoint(
                    positions=positions, time_from_start=DurationMsg(sec=int(t), nanosec=int(t % 1 * 1e9))
                )
            )
        self.trajectory_pub.publish(msg)

    def move_joint1(self, distance: float, duration: float) -> float:
        """A long left_joint1 trajectory (points 0.1 s apart) from where it is; returns the start."""
        start = self.q("left_joint1")[-1]
        offsets = list(np.arange(1, round(duration / 0.1) + 1) * 0.1)
        self.send(["left_joint1"], [[start + distance * t / duration] for t in offsets], offsets)
        return start

    def inject(self, side: str, **faults) -> None:
        self.fault_pub.publish(String(data=json.dumps({"port": PORTS[side], **faults})))

    def last_diagnostic(self) -> dict[str, str]:
        status = self.diagnostics[-1]
        return {"level": status.level, "message": status.message, **{v.key: v.value for v in status.values}}

    def diagnostic_until(self, condition, timeout: float = 5.0) -> dict[str, str]:
        """The first /diagnostics of the bridge (published at 1 Hz) that satisfies `condition`."""
        start = len(self.diagnostics)
        found = self.spin_until(lambda: any(condition(self._values(s)) for s in self.diagnostics[start:]), timeout)
        assert found, f"no such /diagnostics within {timeout} s; last: {self.last_diagnostic()}"
        return next(self._values(s) for s in self.diagnostics[start:] if condition(self._values(s)))

    @staticmethod
    def _values(status) -> dict[str, str]:
        return {"level": status.level, "message": status.message, **{v.key: v.value for v in status.values}}

    def recover(self) -> Trigger.Response:
        return self.call_service(self.recover_client, Trigger.Request())


def _python(program: Path, args: list[str], domain: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(program), *args], env={**os.environ, "ROS_DOMAIN_ID": str(domain)})


@pytest.fixture(scope="module")
def system():
    """The node (command_timeout 0.5 s) and the probe; each test leaves the arms active and sane."""
    domain = SPARE_DOMAIN_IDS[0]
    process = _python(
        INJECTABLE_BRIDGE,
        [
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
        ],
        domain,
    )
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: len(probe.states) > 20, 60.0), "no joint_states from the bridge"
        assert probe.spin_until(lambda: probe.fault_pub.get_subscription_count() > 0, 10.0)
        yield probe
        assert process.poll() is None, "the bridge process died"
    finally:
        stop_process(process)
        probe.close()


def test_the_arms_hold_when_the_supervisor_heartbeat_stops(system):
    probe = system
    heartbeat = _python(HEARTBEAT, [], SPARE_DOMAIN_IDS[0])
    try:
        assert probe.spin_until(lambda: probe.beats_seen > 10, 30.0), "no heartbeat from the stand-in"
        probe.spin_for(0.5)  # the bridge hears it too
        start = probe.move_joint1(0.8, 4.0)
        probe.spin_for(1.2)
        moved = probe.q("left_joint1")[-1] - start
        assert moved > 0.1, "the trajectory did not run with heartbeats"
        heartbeat.send_signal(signal.SIGKILL)  # the supervisor dies without a word
        killed = probe.now()
        probe.spin_for(COMMAND_TIMEOUT + 1.0)  # the timeout, braking, and DDS / a loaded machine
        settled = probe.q("left_joint1")[-1]
        probe.spin_for(2.0)
        after = probe.q("left_joint1", since=probe.now() - 0.5)
        assert np.abs(after - settled).max() < 0.005, "the arm kept moving after the heartbeat stopped"
        # it went on for at most the timeout (at 0.2 rad/s) plus margin for delivery, far from the goal
        assert settled - (start + moved) < 0.2 and start + 0.8 - settled > 0.3
        # alive: still publishing (100 Hz nominal; a loaded 2-core machine delivers far fewer)
        assert len(probe.q("left_joint1", since=killed + 2.0)) > 20, "joint_states stopped: the node is not alive"
    finally:
        heartbeat.kill()
        heartbeat.wait(timeout=10)
    diag = probe.diagnostic_until(lambda d: d["watchdog"].startswith("no supervisor heartbeat for"))
    assert diag["level"] == b"\x01" and diag["message"] == diag["watchdog"] and diag["watchdog"].endswith(": holding")
    assert int(diag["watchdog_stops"]) >= 1 and diag["command_timeout_s"] == str(COMMAND_TIMEOUT)
    assert diag["mode"] == "active"


@pytest.mark.parametrize(
    "bad, cause",
    [
        ("ragged", "every point needs 2 positions, one per joint name"),
        ("horizon", "time_from_start 100.0 s is beyond the 60 s horizon"),
        ("too fast", "left_joint1: 10.000 rad/s between points 0 and 1 exceeds max_velocity 3.142"),
    ],
)
def test_a_rejected_trajectory_stops_the_running_one_with_its_cause_in_diagnostics(system, bad, cause):
    probe = system
    probe.beating = True
    try:
        before = int(probe.last_diagnostic()["rejected"])
        start = probe.move_joint1(0.8, 4.0)
        probe.spin_for(1.0)
        q = probe.q("left_joint1")[-1]
        if bad == "ragged":
            probe.send(["left_joint1", "left_joint2"], [[q]], [0.1])
        elif bad == "horizon":
            probe.send(["left_joint1"], [[q]], [100.0])
        else:
            probe.send(["left_joint1"], [[q], [q + 0.5]], [0.1, 0.15])
        rejected_at = probe.q("left_joint1")[-1]
        probe.spin_for(1.0)
        settled = probe.q("left_joint1")[-1]
        probe.spin_for(1.0)
        assert abs(probe.q("left_joint1")[-1] - settled) < 0.002, "the rejected trajectory's predecessor ran on"
        assert settled - rejected_at < 0.1 and start + 0.8 - settled > 0.3
        diag = probe.diagnostic_until(lambda d: int(d["rejected"]) > before)
        assert diag["last_rejection"] == cause and diag["mode"] == "active"
    finally:
        probe.beating = False


def test_a_hold_a_hair_outside_the_gripper_travel_is_clipped_and_one_further_out_rejected(system):
    probe = system
    probe.beating = True
    try:
        before = int(probe.last_diagnostic()["rejected"])
        probe.send(["left_gripper"], [[STROKE + 0.0005]], [0.0])  # a hold built from a reading at the limit
        probe.spin_for(1.0)
        assert probe.q("left_gripper")[-1] == pytest.approx(STROKE, abs=2e-4)
        probe.send(["left_gripper"], [[STROKE + 0.003]], [0.0])
        diag = probe.diagnostic_until(lambda d: int(d["rejected"]) > before)
        assert int(diag["rejected"]) == before + 1
        assert diag["last_rejection"].startswith(f"left_gripper={STROKE + 0.003:.4f} at point 0 outside")
    finally:
        probe.beating = False


def test_an_implausible_reading_holds_the_arm_and_recovery_waits_for_sane_readings(system):
    probe = system
    probe.beating = True
    try:
        start = probe.move_joint1(-0.6, 3.0)
        probe.spin_for(1.0)
        glitched = probe.now()
        probe.inject("left", reading_offset=[1.0, 0, 0, 0, 0, 0])  # joint 1's feedback frame turns to garbage
        diag = probe.diagnostic_until(lambda d: d["mode"] == "error")
        # the first reading is a jump; the lasting ones are steady but not where the arm was held
        assert diag["level"] == b"\x02" and "implausible reading, left_joint1 " in diag["message"]
        # joint_states kept the last plausible reading: the glitch never left the node
        published = probe.q("left_joint1", since=glitched)
        assert published.max() < start + 0.05 and len(published) > 20, "the node stopped publishing"
        refused = probe.recover()
        assert not refused.success and "where it was held" in refused.message
        probe.inject("left", reading_offset=[0.0] * 6)
        probe.spin_for(0.5)
        held = probe.q("left_joint1")[-1]  # sane again: where the arm really is
        assert start - 0.6 + 0.2 < held < start, "the arm went on, or towards the glitch"
        response = probe.recover()
        assert response.success, response.message
        probe.spin_for(1.0)
        np.testing.assert_allclose(probe.q("left_joint1", since=probe.now() - 0.8), held, atol=2e-3)
        assert probe.diagnostic_until(lambda d: d["mode"] == "active")["error"] == ""
    finally:
        probe.beating = False


@pytest.mark.parametrize(
    "fault, cause",
    [
        ({"arm_status": 0x0B}, "arm in teach mode (0x0B teach record): leave teach mode on the arm, then ~/recover"),
        ({"err_code": 0x0100}, "err_code 0x0100: joint 1 beyond its angle limit"),
    ],
)
def test_piper_faults_are_named_and_hold_until_cleared(system, fault, cause):
    probe = system
    probe.inject("right", **fault)
    diag = probe.diagnostic_until(lambda d: d["mode"] == "error")
    assert diag["level"] == b"\x02" and cause in diag["error"]
    refused = probe.recover()
    assert not refused.success and cause in refused.message
    probe.inject("right", **{name: 0 for name in fault})
    probe.spin_for(0.3)
    response = probe.recover()
    assert response.success, response.message
    assert probe.diagnostic_until(lambda d: d["mode"] == "active")["error"] == ""


def test_the_simulator_holds_when_heartbeats_stop_counting_sim_time():
    domain = SPARE_DOMAIN_IDS[1]
    process = subprocess.Popen(
        [
            str(BIN / "sim_node"),
            "--ros-args",
            "-p",
            "cameras_enabled:=false",
            "-p",
            "startup_clock_check_s:=0.0",
            "-p",
            f"command_timeout:={COMMAND_TIMEOUT}",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    probe = Probe(domain, diagnostics_of="simulator")

    def sim_time() -> float:
        return from_time(probe.states[-1][1].header.stamp)

    try:
        assert probe.spin_until(lambda: len(probe.states) > 20, 60.0), "no joint_states from the simulator"
        probe.beating = True
        probe.spin_for(0.5)
        start = probe.move_joint1(0.8, 4.0)
        begun = sim_time()
        assert probe.spin_until(lambda: sim_time() > begun + 1.0, 30.0)
        probe.beating = False
        silent = sim_time()
        assert probe.q("left_joint1")[-1] - start > 0.1, "the trajectory did not run with heartbeats"
        # the timeout, braking and the servo settling, in sim time (the simulator may run slower than real time)
        assert probe.spin_until(lambda: sim_time() > silent + COMMAND_TIMEOUT + 1.0, 30.0)
        settled = probe.q("left_joint1")[-1]
        assert probe.spin_until(lambda: sim_time() > silent + COMMAND_TIMEOUT + 3.0, 30.0)
        np.testing.assert_allclose(probe.q("left_joint1")[-50:], settled, atol=0.005)
        assert start + 0.8 - settled > 0.3
        diag = probe.diagnostic_until(lambda d: d["watchdog"].startswith("no supervisor heartbeat for"))
        assert diag["level"] == b"\x01" and int(diag["watchdog_stops"]) == 1 and diag["message"] == diag["watchdog"]
    finally:
        stop_process(process)
        probe.close()
