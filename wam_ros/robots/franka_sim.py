"""franky-sim servers for dry runs, tests and benchmarks: one `franky-sim -s mujoco` process per
arm, each on its own loopback address (the protocol of a real FR3 on 127.0.0.x)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Sequence

DEFAULT_HOSTS = ("127.0.0.2", "127.0.0.3")


@contextlib.contextmanager
def franky_sim_servers(hosts: Sequence[str] = DEFAULT_HOSTS) -> Iterator[list[str]]:
    executable = Path(sys.executable).parent / "franky-sim"
    if not executable.exists():
        found = shutil.which("franky-sim")
        if found is None:
            raise FileNotFoundError("franky-sim is not installed (pip install franky-sim)")
        executable = Path(found)
    servers = [subprocess.Popen([str(executable), "-s", "mujoco", "--hostname", host],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for host in hosts]
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


def configure_when_ready(bridge, timeout: float = 60.0) -> None:
    """Configure a bridge whose franky-sim servers are still starting (a few seconds)."""
    import time

    from wam_ros.robots.bridge import BridgeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            bridge.configure(time.monotonic())
            return
        except BridgeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
