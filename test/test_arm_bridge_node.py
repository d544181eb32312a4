"""arm_bridge_node as a process, driven over Fast DDS: the AgileX pair on virtual CAN with
emulated Pipers (piper_sdk in the loop), and TienKung against a peer process. No supervisor
runs here, so these bridges run without the command watchdog (command_timeout:=0); its tests
are in test_bridge_faults_live.py. Also the message parser the bridges share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import load_robot_config
from wam_ros.ros.conversions import trajectory_arrays
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, JOINT_STATE_QOS

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
TIENKUNG_PEER = Path(__file__).parent / "support" / "tienkung_peer.py"  # the robot side, as a process


class Probe(ProbeNode):
    def __init__(self, domain: int):
        super().__init__("bridge_probe", domain)
        self.states: list[JointState] = []
        self.puppet: list[JointState] = []
        self.diagnostics: list = []
        self.node.create_subscription(JointState, "joint_states", self.states.append, JOINT_STATE_QOS)
        self.node.create_subscription(JointState, "/puppet/joint_left", self.puppet.append, JOINT_STATE_QOS)
        self.master: list[JointState] = []
        self.node.create_subscription(JointState, "/master/joint_left", self.master.append, JOINT_STATE_QOS)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if "arm bridge" in s.name),
            DIAGNOSTICS_QOS,
        )
        self.trajectory_pub = self.node.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS)

    def q(self, name: str) -> float:
        last = self.states[-1]
        return last.position[list(last.name).index(name)]

    def send(self, names: list[str], positions: list[float], after: float = 1.0) -> None:
        point = JointTrajectoryPoint(
            positions=positions, time_from_start=DurationMsg(sec=int(after), nanosec=int(after % 1 * 1e9))
        )
        self.trajectory_pub.publish(JointTrajectory(joint_names=names, points=[point]))


def _trajectory(*offsets_ns: int, stamp: float = 0.0) -> JointTrajectory:
    points = [
        JointTrajectoryPoint(
            positions=[0.0], time_from_start=DurationMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        )
        for ns in offsets_ns
    ]
    msg = JointTrajectory(joint_names=["left_joint1"], points=points)
    msg.header.stamp = TimeMsg(sec=int(stamp))
    return msg


@pytest.mark.parametrize(
    "offsets_ns, reason",
    [
        ((-1_000_000,), "time_from_start must be >= 0"),
        ((61_000_000_000,), r"time_from_start 61.0 s is beyond the 60 s horizon"),
        ((0, 500_000), r"time_from_start of points 0 and 1 are 0.500 ms apart \(they must increase by at least 1 ms\)"),
        ((2_000_000, 1_000_000), "points 0 and 1 are -1.000 ms apart"),
    ],
)
def test_trajectory_messages_with_absurd_timing_are_refused(offsets_ns, reason):
    with pytest.raises(ValueError, match=reason):
        trajectory_arrays(_trajectory(*offsets_ns), now=100.0)


def test_trajectory_times_are_exact_at_the_smallest_spacing():
    names, times, positions = trajectory_arrays(_trajectory(0, 1_000_000, 2_000_000, stamp=1_700_000_000), now=5.0)
    assert names == ["left_joint1"] and positions.shape == (3, 1)
    np.testing.assert_allclose(times - 1_700_000_000, [0.0, 0.001, 0.002], atol=1e-6)
    assert trajectory_arrays(_trajectory(0), now=5.0)[1][0] == 5.0  # a zero stamp: now


def _start(args: list[str], domain: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "arm_bridge_node"), "--ros-args", *args], env={**os.environ, "ROS_DOMAIN_ID": str(domain)}
    )


def test_agilex_bridge_on_virtual_can_follows_trajectories_and_refuses_bad_ones():
    domain = SPARE_DOMAIN_IDS[0]
    process = _start(
        [
            "-p",
            "robot:=agilex",
            "-p",
            "command_timeout:=0.0",
            "-p",
            "agilex.can_interface:=virtual",
            "-p",
            "agilex.emulate:=true",
            "-p",
            "agilex.can_ports:=[vcan_test_left, vcan_test_right]",
            "-p",
            "agilex.leader_can_ports:=[vcan_test_master_left, vcan_test_master_right]",
        ],
        domain,
    )
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: len(probe.states) > 20, 30.0), "no joint_states from the bridge"
        home = load_robot_config("agilex").home_positions()
        assert probe.q("left_joint1") == pytest.approx(home["left_joint1"], abs=1e-4)
        assert len(probe.puppet[-1].position) == 7  # Cobot Magic: 6 joints + gripper
        assert probe.spin_until(lambda: bool(probe.master), 3.0), "no /master/joint_left from the leader arm"
        assert probe.master[-1].position[0] == pytest.approx(home["left_joint1"], abs=1e-4)
        start = probe.q("left_joint1")
        probe.send(["left_joint1", "left_gripper"], [start + 0.25, 0.01], after=1.0)
        assert probe.spin_until(lambda: abs(probe.q("left_joint1") - (start + 0.25)) < 2e-3, 5.0)
        assert probe.spin_until(lambda: abs(probe.q("left_gripper") - 0.01) < 5e-4, 3.0)
        # bad commands: beyond the limit, and a jump; the arm stays where it is
        probe.send(["left_joint2"], [3.6])
        probe.send(["left_joint1"], [start + 1.5])
        probe.spin_until(lambda: False, 1.0)
        assert probe.q("left_joint1") == pytest.approx(start + 0.25, abs=2e-3)
        assert probe.spin_until(
            lambda: any(
                "rejected" in {v.key for v in s.values} and int({v.key: v.value for v in s.values}["rejected"]) >= 2
                for s in probe.diagnostics
            ),
            3.0,
        )
    finally:
        stop_process(process)
        probe.close()


def test_tienkung_bridge_follows_commands_and_errors_when_the_robot_goes_silent(tmp_path):
    domain = SPARE_DOMAIN_IDS[1]
    pause = tmp_path / "pause"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    peer = subprocess.Popen([sys.executable, str(TIENKUNG_PEER), str(pause)], env=env)
    process = _start(["-p", "robot:=tienkung", "-p", "command_timeout:=0.0"], domain)
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: len(probe.states) > 20, 30.0), "no joint_states from the bridge"
        start = probe.q("right_joint4")
        probe.send(["right_joint4"], [start + 0.2], after=0.5)
        assert probe.spin_until(lambda: abs(probe.q("right_joint4") - (start + 0.2)) < 0.02, 5.0)
        pause.touch()  # the robot's status stream stops
        assert probe.spin_until(
            lambda: any(s.level == b"\x02" and "no state" in s.message for s in probe.diagnostics), 5.0
        )
        pause.unlink()
        recover = probe.node.create_client(Trigger, "/arm_bridge/recover")
        reply = probe.call_service(recover, Trigger.Request())
        assert reply.success, reply.message
        probe.send(["right_joint4"], [start], after=0.5)
        assert probe.spin_until(lambda: abs(probe.q("right_joint4") - start) < 0.02, 5.0)
    finally:
        stop_process(process)
        peer.send_signal(signal.SIGINT)
        peer.wait(timeout=10)
        probe.close()
