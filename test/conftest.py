"""Test-session environment: an isolated DDS domain on localhost, large-data transport, EGL.

Set before any test imports rclpy, and inherited by the processes that tests start, so that
concurrent test runs (or a bring-up left running by a developer) never see each other.
"""

import os
import random

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randrange(100, 200)))
# The session's bring-up (fixture below) owns ROS_DOMAIN_ID; tests that start their own
# simulator (which refuses a second /clock) use these instead.
SPARE_DOMAIN_IDS = tuple(int(os.environ["ROS_DOMAIN_ID"]) + k for k in (1, 2))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("MUJOCO_GL", "egl")


import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402


@dataclass
class RunningBringup:
    """A `wam-ros bringup` process and a probe node (own rclpy context) to observe it."""

    process: subprocess.Popen
    arguments: dict[str, str]
    probe: object
    executor: object

    @property
    def namespace(self) -> str:
        return self.arguments["namespace"]

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.process.poll() is None, f"bringup exited with {self.process.returncode}"
            self.executor.spin_once(timeout_sec=0.05)


@pytest.fixture(scope="session")
def bringup():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    arguments = {"robot": "franka", "motion": "scripted", "namespace": "lab"}
    process = subprocess.Popen([sys.executable, "-m", "wam_ros.cli", "bringup",
                                *(f"{k}:={v}" for k, v in arguments.items())])
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("test_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    running = RunningBringup(process, arguments, probe, executor)
    try:
        deadline = time.monotonic() + 60.0
        expected = {("sim", "/lab"), ("scripted_motion", "/lab"), ("supervisor", "/lab")}
        while not expected <= set(probe.get_node_names_and_namespaces()):
            assert time.monotonic() < deadline, f"bringup's nodes {expected} never appeared on the graph"
            running.spin_for(0.2)
        yield running
        # Ctrl-C ends the bring-up cleanly
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
