"""viewer:=web in a real headless Chromium: viewer_node fed over DDS (the robot's joint states, a
predicted cloud, values), the page loaded and screenshot; the robot, the cloud and the value curve
must be drawn (pixels, not the DOM)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import Header
from websockets.sync.client import connect

from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from wam_ros.config import load_robot_config
from wam_ros.geometry.lifting import CLOUD_DTYPE, PointCloud
from wam_ros.msg import ValueEstimate
from wam_ros.ros.conversions import pointcloud_msg, to_time
from wam_ros.ros.qos import COMMAND_QOS, IMAGE_QOS, JOINT_STATE_QOS
from wam_ros.viewer import ROBOT_COLOR, VALUE_COLOR

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(image.astype(int) - np.asarray(rgb)).max(axis=2) <= tolerance).sum())


class Chromium:
    """Headless Chromium on its DevTools protocol (a websocket): navigate, screenshot."""

    def __init__(self, executable: str, profile: Path):
        self.executable, self.profile = executable, profile

    def __enter__(self) -> "Chromium":
        port = free_port()
        self.process = subprocess.Popen(
            [
                self.executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--window-size=1400,900",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.profile / 'chromium'}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60.0
        while True:
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                assert time.monotonic() < deadline, "chromium's DevTools never answered"
                time.sleep(0.5)
        self.socket = connect(url, max_size=2**26)
        self._id = 0
        return self

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self) -> np.ndarray:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def __exit__(self, *exc) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=20)


def test_the_web_viewer_draws_the_robot_the_cloud_and_the_value_in_a_browser(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium (make test installs Debian's chromium)")
    domain, port = SPARE_DOMAIN_IDS[0], free_port()
    process = subprocess.Popen(
        [
            str(BIN / "viewer_node"),
            "--ros-args",
            "-p",
            "robot:=agilex",
            "-p",
            "host:=127.0.0.1",
            "-p",
            f"port:={port}",
            "-p",
            "rate:=50.0",
        ],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
    )
    probe = ProbeNode("viewer_probe", domain)
    try:
        robot = load_robot_config("agilex")
        home = robot.home_positions()
        joints = probe.node.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
        clouds = probe.node.create_publisher(PointCloud2, "policy/predicted_cloud", IMAGE_QOS)
        values = probe.node.create_publisher(ValueEstimate, "policy/value", COMMAND_QOS)
        assert probe.spin_until(
            lambda: (
                joints.get_subscription_count() and clouds.get_subscription_count() and values.get_subscription_count()
            ),
            30.0,
        ), "viewer_node never subscribed"
        rng = np.random.default_rng(0)
        points = np.zeros(3000, CLOUD_DTYPE)
        points["x"], points["y"], points["z"] = (
            rng.uniform(0.2, 0.5, 3000),
            rng.uniform(-0.2, 0.2, 3000),
            rng.uniform(0.0, 0.1, 3000),
        )
        points["rgb"] = 0xFF0000  # red
        for k in range(40):
            joints.publish(JointState(name=list(home), position=list(home.values())))
            clouds.publish(pointcloud_msg(PointCloud(points), to_time(k * 0.1), "base"))
            values.publish(
                ValueEstimate(header=Header(stamp=to_time(k * 0.1)), chunk_id=k, value=float(0.5 + 0.4 * np.sin(k / 6)))
            )
            probe.spin_for(0.05)
        # a real headless Chromium driven over its DevTools protocol: the page is loaded once and
        # screenshots are taken in real time until the scene has arrived and faded in (a one-shot
        # --screenshot waits in virtual time and, on a loaded machine, caught the fade-in)
        magenta = tuple(int(VALUE_COLOR[i : i + 2], 16) for i in (1, 3, 5))
        with Chromium(browser, tmp_path) as page:
            page.navigate(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 90.0
            while True:
                probe.spin_for(1.0)
                image = page.screenshot()
                drawn = {
                    "point cloud": pixels_near(image, (255, 0, 0), 60) > 2000,
                    "robot": pixels_near(image, ROBOT_COLOR, 25) > 500,
                    "value curve": pixels_near(image, magenta, 50) > 100,
                }
                if all(drawn.values()) or time.monotonic() > deadline:
                    break
        shot = tmp_path / "viewer.png"
        Image.fromarray(image).save(shot)
    finally:
        try:
            stop_process(process)
        finally:
            probe.close()
    assert all(drawn.values()), f"not drawn in {shot}: {[k for k, ok in drawn.items() if not ok]}"
