"""What the ROS tests share: a probe node in its own context, the spare DDS domains, stopping a
node process, and the session bring-up's handle (conftest.py's `bringup` fixture).

Import after conftest.py has set the session's environment (pytest loads it before any test
module): SPARE_DOMAIN_IDS follow the session's ROS_DOMAIN_ID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from wam_ros.ros.probe import ProbeNode

# The session's bring-up (conftest.py's fixture) owns ROS_DOMAIN_ID; tests that start their own
# simulator (which refuses a second /clock) use these instead.
SPARE_DOMAIN_IDS = tuple(int(os.environ["ROS_DOMAIN_ID"]) + k for k in (1, 2))

__all__ = ["SPARE_DOMAIN_IDS", "ProbeNode", "RunningBringup", "stop_process"]


def stop_process(process: subprocess.Popen) -> None:
    """Ctrl-C must end a node process cleanly (exit code 0); kill it if it does not."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()


class RunningBringup(ProbeNode):
    """A `wam-ros bringup` process and a probe node to observe it."""

    def __init__(self, process: subprocess.Popen, arguments: dict[str, str]):
        super().__init__("test_probe")
        self.process, self.arguments = process, arguments
        self.probe = self.node

    @property
    def namespace(self) -> str:
        return self.arguments["namespace"]

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.process.poll() is None, f"bringup exited with {self.process.returncode}"
            self.executor.spin_once(timeout_sec=0.05)
