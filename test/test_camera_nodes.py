"""realsense_node as a process playing an rs.recorder recording, observed over DDS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

pytest.importorskip("pyrealsense2")

from support.realsense_software import FIRMWARE, SERIAL, H, SoftwareCamera, W  # noqa: E402
from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process  # noqa: E402
from wam_ros.ros.conversions import from_time, image_array  # noqa: E402
from wam_ros.ros.qos import CAMERA_INFO_QOS, IMAGE_QOS  # noqa: E402

pytestmark = pytest.mark.ros


def record(path: Path, frames: int) -> None:
    cam = SoftwareCamera(0.0001, recording=str(path))  # 0.1 mm depth units, as on a D405
    for k in range(frames):
        depth = np.full((H, W), 7000, np.uint16)  # 0.7 m
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 1] = k
        cam.push(k, 2000.0 + k * 33.3, depth, rgb)
        try:
            cam.syncer.wait_for_frames(200)
        except RuntimeError:
            pass
        time.sleep(0.01)  # a camera's pace, not a burst
    cam.close()


def test_realsense_node_publishes_a_recording_on_the_driver_topics(tmp_path):
    path = tmp_path / "head.db3"
    record(path, 12)
    domain = SPARE_DOMAIN_IDS[0]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "realsense_node"),
            "--ros-args",
            "-r",
            "__ns:=/head",
            "-p",
            "camera_name:=head",
            "-p",
            f"rosbag_filename:={path}",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    probe = ProbeNode("camera_probe", domain)
    got = {"color": [], "depth": [], "info": []}
    try:
        probe.node.create_subscription(Image, "/head/color/image_raw", got["color"].append, IMAGE_QOS)
        probe.node.create_subscription(Image, "/head/depth/image_raw", got["depth"].append, IMAGE_QOS)
        probe.node.create_subscription(CameraInfo, "/head/color/camera_info", got["info"].append, CAMERA_INFO_QOS)
        assert probe.spin_until(lambda: len(got["color"]) >= 12 and len(got["depth"]) >= 12, 30.0), {
            k: len(v) for k, v in got.items()
        }
    finally:
        try:
            stop_process(process)
        finally:
            probe.close()
    color, depth, info = got["color"][-1], got["depth"][-1], got["info"][-1]
    assert color.header.frame_id == "head_color_optical_frame" and depth.header.frame_id == "head_depth_optical_frame"
    assert image_array(depth)[3, 3] == 700  # 7000 x 0.1 mm: the depth scale is honoured
    assert [image_array(m)[0, 0, 1] for m in got["color"]] == list(range(12))  # every frame, in order
    assert info.k[0] == pytest.approx(50.0) and info.distortion_model == "plumb_bob" and info.d[0] == pytest.approx(0.1)
    stamps = np.array([from_time(m.header.stamp) for m in got["color"]])
    assert np.diff(stamps) == pytest.approx(0.0333, abs=2e-4)  # recorded device clock, mapped to host time


def test_realsense_node_keeps_retrying_until_its_source_appears(tmp_path):
    """The reconnect loop: the source is missing at start (an unplugged camera), then appears."""
    from diagnostic_msgs.msg import DiagnosticArray

    from wam_ros.ros.qos import DIAGNOSTICS_QOS

    path = tmp_path / "late.db3"
    domain = SPARE_DOMAIN_IDS[1]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "realsense_node"),
            "--ros-args",
            "-r",
            "__ns:=/head",
            "-p",
            "camera_name:=head",
            "-p",
            f"rosbag_filename:={path}",
            "-p",
            "reconnect_period:=0.3",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    probe = ProbeNode("reconnect_probe", domain)
    statuses, images = [], []
    try:
        probe.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: statuses.extend(s for s in m.status if "realsense camera" in s.name),
            DIAGNOSTICS_QOS,
        )
        probe.node.create_subscription(Image, "/head/color/image_raw", images.append, IMAGE_QOS)
        assert probe.spin_until(lambda: any(s.level == b"\x02" and "late.db3" in s.message for s in statuses), 30.0)
        attempts = {v.key: v.value for v in statuses[-1].values}["reconnect_attempts"]
        assert int(attempts) >= 1
        staging = tmp_path / "staging.db3"
        record(staging, 6)
        staging.rename(path)  # the source appears whole, as a plugged-in camera does
        assert probe.spin_until(lambda: len(images) >= 6, 30.0), len(images)
        # the opened source names itself: serial as the hardware id, firmware among the values
        assert probe.spin_until(lambda: statuses[-1].hardware_id == SERIAL, 10.0), statuses[-1]
        assert {v.key: v.value for v in statuses[-1].values}["firmware_version"] == FIRMWARE
    finally:
        try:
            stop_process(process)
        finally:
            probe.close()
