"""`wam-ros doctor` against what stands in for hardware here: franky-sim's FCI servers, Pipers
emulated on python-can's virtual bus (through the real piper_sdk), librealsense software devices."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wam_ros.doctor import (
    FAIL,
    OK,
    WARN,
    CameraDevice,
    check_cameras,
    check_dds,
    check_pipers,
    fci_handshake,
    format_table,
    run_checks,
)
from wam_ros.ros.system import SystemOptions

BIN = Path(sys.executable).parent


def test_fci_is_recognised_by_its_handshake_not_by_an_open_port(tmp_path):
    pytest.importorskip("franky")
    from wam_ros.robots.franka_sim import franky_sim_servers

    site = tmp_path / "site.yaml"
    site.write_text("arm_bridge:\n  ros__parameters:\n    franka: {hosts: [127.0.0.2, 127.0.0.3], realtime: false}\n")
    opts = SystemOptions.from_arguments(
        {"robot": "franka", "sim": "false", "cameras": "external", "params_file": str(site)}
    )
    with franky_sim_servers(("127.0.0.2", "127.0.0.3")):
        deadline = time.monotonic() + 60
        while True:
            try:
                fci_handshake("127.0.0.3")
                break
            except OSError:
                assert time.monotonic() < deadline, "franky-sim never answered"
                time.sleep(0.5)
        checks = {c.name: c for c in run_checks(opts)}
    assert (
        checks["left FR3 FCI 127.0.0.2"].status == OK and "protocol version" in checks["left FR3 FCI 127.0.0.2"].detail
    )
    assert checks["right FR3 FCI 127.0.0.3"].status == OK
    assert "real-time kernel" not in checks  # franka.realtime:=false
    # nothing listening; and something else that accepts the connection (a web server, a proxy)
    (refused,) = [c for c in run_checks(opts) if c.name == "left FR3 FCI 127.0.0.2"]
    assert refused.status == FAIL and "Connection refused" in refused.detail and "franka.hosts" in refused.fix
    with socket.create_server(("127.0.0.4", 1337)) as server:

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(64)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(OSError, match="not an FCI server .answered 'HTTP/1.1 400 Bad Request'"):
            fci_handshake("127.0.0.4")
        thread.join()


def test_pipers_answering_on_the_emulated_can_bus_and_missing_ones():
    from wam_ros.config import load_robot_config
    from wam_ros.robots.piper_emulator import PiperEmulator

    robot = load_robot_config("agilex")
    emulators = [PiperEmulator.at_home(robot, side, f"doctor_{side}") for side in ("left", "right")]
    for emulator in emulators:
        emulator.start()
    try:
        checks = check_pipers(["doctor_left", "doctor_right"], "virtual")
    finally:
        for emulator in emulators:
            emulator.stop()
    assert [c.status for c in checks] == [OK, OK] and checks[0].detail.startswith("answers: joints")
    (silent,) = check_pipers(["doctor_nobody"], "virtual", answer_timeout=0.3)
    assert silent.status == FAIL and "no joint feedback" in silent.detail
    (missing,) = check_pipers(["can_left"], "socketcan")  # this machine has no CAN interface
    assert missing.status == FAIL and "sudo ip link set can_left up type can bitrate 1000000" in missing.fix


def test_cameras_are_compared_with_the_configured_serials():
    rs = pytest.importorskip("pyrealsense2")
    from support.realsense_software import SERIAL, SoftwareCamera
    from wam_ros.cameras.realsense import device_info

    camera = SoftwareCamera()
    try:
        info = device_info(camera.device)  # what librealsense reports for a (software) device
    finally:
        camera.close()
    assert rs is not None and info["serial_number"] == SERIAL
    connected = [
        CameraDevice("realsense", info["serial_number"], info["name"], info["firmware_version"], "3.2"),
        CameraDevice("realsense", "111", "D405", "5.16.0.1", "2.1"),
    ]
    checks = {
        c.name: c
        for c in check_cameras("realsense", {"head": SERIAL, "left_wrist": "111", "right_wrist": "999"}, connected)
    }
    assert checks["head camera"].status == OK and "USB 3.2" in checks["head camera"].detail
    assert checks["left_wrist camera"].status == WARN and "USB 3" in checks["left_wrist camera"].fix
    assert checks["right_wrist camera"].status == FAIL and f"{SERIAL}, 111" in checks["right_wrist camera"].fix
    unnamed = {
        c.name: c for c in check_cameras("realsense", {"head": "", "left_wrist": "", "right_wrist": ""}, connected)
    }
    assert unnamed["camera serials"].status == FAIL  # three views, two cameras
    assert check_cameras("realsense", {"head": ""}, [])[0].status == FAIL


def test_dds_settings_are_checked():
    statuses = {c.name: c.status for c in check_dds({"ROS_DOMAIN_ID": "200"})}
    assert statuses["ROS_DOMAIN_ID"] == FAIL and statuses["shared memory /dev/shm"] in (OK, FAIL)
    missing = {c.name: c for c in check_dds({"FASTRTPS_DEFAULT_PROFILES_FILE": "/nonexistent.xml"})}
    assert missing["Fast DDS profile"].status == FAIL


def test_doctor_command_prints_the_table_and_fails_on_a_fail():
    result = subprocess.run(
        [str(BIN / "wam-ros"), "doctor", "robot:=agilex", "sim:=false", "cameras:=realsense"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ROS_DOMAIN_ID": "7"},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAIL  left CAN can_left" in result.stdout and "fix: plug in the USB-CAN adapter" in result.stdout
    assert "FAIL  realsense cameras" in result.stdout and "checks:" in result.stdout.splitlines()[-1]
    table = format_table(run_checks(SystemOptions.from_arguments({})))  # the simulated setup
    assert "FAIL" not in table.replace("0 FAIL", "")
