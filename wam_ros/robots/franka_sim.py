"""franky-sim servers for dry runs, tests and benchmarks: one `franky-sim -s mujoco` process per
arm, each on its own loopback address (the protocol of a real FR3 on 127.0.0.x)."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from wam_ros.robots.bridge import Bridge

DEFAULT_HOSTS = ("127.0.0.2", "127.0.0.3")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: end when the process that started it dies. A server that outlives a crashed
    caller (franky can take its process down with SIGSEGV) keeps the address, and the next bridge
    would talk to a stale arm."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def franky_sim_servers(hosts: Sequence[str] = DEFAULT_HOSTS) -> Iterator[list[str]]:
    executable = Path(sys.executable).parent / "franky-sim"
    if not executable.exists():
        found = shutil.which("franky-sim")
        if found is None:
            raise FileNotFoundError("franky-sim is not installed (pip install franky-sim)")
        executable = Path(found)
    servers = [
        subprocess.Popen(
            [str(executable), "-s", "mujoco", "--hostname", host],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for host in hosts
    ]
    try:
        yield list(hosts)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


@contextlib.contextmanager
def franky_sim_bridge(dynamics_factor: float = 0.5, timeout: float = 60.0) -> Iterator["Bridge"]:
    """A Franka FR3 pair served by franky-sim, behind an active bridge (franky, not real time).

    franky puts its thread on SCHED_FIFO: use this in a process of its own.
    """
    import time

    from wam_ros.config import load_robot_config
    from wam_ros.robots.bridge import Bridge, BridgeError, BridgeLimits
    from wam_ros.robots.franka import FrankaBackend, FrankaSettings

    robot = load_robot_config("franka")
    with franky_sim_servers() as hosts:
        settings = FrankaSettings(dynamics_factor=dynamics_factor, realtime=False)
        bridge = Bridge(
            [FrankaBackend(side, host, settings) for side, host in zip(("left", "right"), hosts)],
            BridgeLimits.for_robot(robot, robot.joint_names),
            robot.joint_names,
        )
        deadline = time.monotonic() + timeout
        while True:  # the servers take a few seconds to start
            try:
                bridge.configure(time.monotonic())
                break
            except BridgeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        bridge.activate(time.monotonic())
        try:
            yield bridge
        finally:
            bridge.deactivate()
            bridge.cleanup()
