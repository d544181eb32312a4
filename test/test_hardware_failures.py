"""Hardware that cannot be reached: the checks name the fix, and bring-up stops (exit code 3) or,
with on_hardware_failure:=stay, stays up NOT OPERATIONAL in /diagnostics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.robots.agilex import PiperBackend, can_interface_problem
from wam_ros.robots.bridge import BridgeError
from wam_ros.robots.franka import FrankaBackend, FrankaSettings, is_realtime_kernel
from wam_ros.ros.qos import DIAGNOSTICS_QOS

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent


def fake_interface(net: Path, name: str, kind: int, flags: int) -> None:
    (net / name).mkdir(parents=True)
    (net / name / "type").write_text(f"{kind}\n")
    (net / name / "flags").write_text(f"0x{flags:x}\n")


def test_can_interface_problems_name_the_fix(tmp_path):
    # this machine's own interfaces: no CAN port at all, and a port that is not CAN
    problem, fix = can_interface_problem("can_left")
    assert "can_left does not exist" in problem and "sudo ip link set can_left up type can bitrate 1000000" in fix
    assert can_interface_problem("lo") == ("lo is not a CAN interface", "set agilex.can_ports to the Pipers' CAN ports")
    with pytest.raises(BridgeError, match="left Piper: CAN interface can_left does not exist"):
        PiperBackend("left", "can_left").connect()
    # the states a real adapter can be in, as sysfs and `ip -details -json` describe them
    net = tmp_path / "net"
    fake_interface(net, "can_down", 280, 0x0)
    fake_interface(net, "can_slow", 280, 0x1)
    fake_interface(net, "can_ok", 280, 0x41)
    assert can_interface_problem("can_down", net, {}) == (
        "CAN interface can_down is down",
        "`sudo ip link set can_down up type can bitrate 1000000`",
    )
    slow = {"linkinfo": {"info_kind": "can", "info_data": {"bittiming": {"bitrate": 500000}}}}
    assert "runs at 500000 bit/s, the Piper at 1000000" in can_interface_problem("can_slow", net, slow)[0]
    ok = {"linkinfo": {"info_kind": "can", "info_data": {"bittiming": {"bitrate": 1000000}}}}
    assert can_interface_problem("can_ok", net, ok) == ("", "")
    assert "CAN interfaces here: can_down, can_ok, can_slow" in can_interface_problem("can_left", net, {})[0]


@pytest.mark.skipif(is_realtime_kernel(), reason="this machine runs a real-time kernel")
def test_a_franka_bridge_on_a_kernel_without_realtime_says_what_to_do():
    with pytest.raises(BridgeError, match="is not real-time; boot a PREEMPT_RT kernel .* franka.realtime:=false"):
        FrankaBackend("left", "172.16.0.2", FrankaSettings(realtime=True)).connect()


def test_bringup_stops_with_the_fix_when_the_arms_cannot_be_reached():
    start = time.monotonic()
    result = subprocess.run(
        [str(BIN / "wam-ros"), "bringup", "sim:=false", "cameras:=external", "robot:=agilex"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[0])},
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert (
        "/arm_bridge: NOT OPERATIONAL: configure failed: left Piper: CAN interface can_left does not exist"
        in result.stderr
        and "sudo ip link set can_left up type can bitrate 1000000" in result.stderr
    )
    assert time.monotonic() - start < 60  # no waiting on hardware that is not there


def test_bringup_can_stay_up_not_operational():
    domain = SPARE_DOMAIN_IDS[1]
    process = subprocess.Popen(
        [
            str(BIN / "wam-ros"),
            "bringup",
            "sim:=false",
            "cameras:=external",
            "robot:=agilex",
            "on_hardware_failure:=stay",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = ProbeNode("failure_probe", domain)
    reports = []
    try:
        probe.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: reports.extend(s for s in m.status if "arm bridge" in s.name),
            DIAGNOSTICS_QOS,
        )
        assert probe.spin_until(
            lambda: any(s.message.startswith("NOT OPERATIONAL: configure failed: left Piper") for s in reports), 60.0
        ), [s.message for s in reports[-2:]]
        assert reports[-1].level == b"\x02" and process.poll() is None
    finally:
        try:
            stop_process(process)
        finally:
            probe.close()
    assert "(staying up: exit_on_failure is false)" in process.stderr.read()


def test_missing_cameras_never_starve_the_arms_and_bringup_ends_promptly(tmp_path):
    """cameras:=realsense with no camera attached, on emulated Pipers (virtual CAN): the cameras
    say so within a second and keep retrying; joint states keep their rate; Ctrl-C ends it."""
    from sensor_msgs.msg import JointState

    from wam_ros.ros.qos import JOINT_STATE_QOS

    site = tmp_path / "emulated.yaml"
    site.write_text("arm_bridge:\n  ros__parameters:\n    agilex: {emulate: true, can_interface: virtual}\n")
    domain = SPARE_DOMAIN_IDS[0]
    process = subprocess.Popen(
        [str(BIN / "wam-ros"), "bringup", "sim:=false", "cameras:=realsense", "robot:=agilex", f"params_file:={site}"],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = ProbeNode("camera_failure_probe", domain)
    states, cameras = [], {}
    try:
        probe.node.create_subscription(
            JointState, "/joint_states", lambda m: states.append(time.monotonic()), JOINT_STATE_QOS
        )
        probe.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: cameras.update({s.name: s for s in m.status if "realsense camera" in s.name}),
            DIAGNOSTICS_QOS,
        )
        assert probe.spin_until(lambda: len(states) > 10, 60.0), "no joint states from the emulated arms"
        assert probe.spin_until(
            lambda: (
                len(cameras) == 3
                and all("not connected; connected RealSense cameras: none" in s.message for s in cameras.values())
            ),
            10.0,
        ), {k: s.message for k, s in cameras.items()}
        states.clear()
        probe.spin_until(lambda: False, 3.0)
        rate = (len(states) - 1) / (states[-1] - states[0])
        assert rate > 50.0, f"joint states at {rate:.1f} Hz while the cameras retry (100 Hz expected)"
        attempts = [int({v.key: v.value for v in s.values}["reconnect_attempts"]) for s in cameras.values()]
        assert min(attempts) >= 2  # retried, each attempt answered at once
    finally:
        try:
            process.send_signal(2)  # Ctrl-C
            start = time.monotonic()
            process.wait(timeout=15)
            ended = time.monotonic() - start
        finally:
            if process.poll() is None:
                stop_process(process)
            probe.close()
    assert process.returncode == 0 and ended < 10.0, (process.returncode, ended, process.stderr.read()[-2000:])
