"""The benchmarks' child processes, each a program: `python -m wam_ros.perf.children.NAME ARGS`.

Publishers print READY once their subscribers are matched, then wait for the common start time (a
line on stdin) and print how many messages they sent when done. The parent side's helpers are here.
"""

from __future__ import annotations

import subprocess
import sys
import time

READY = "ready"


def command(name: str, *arguments) -> list[str]:
    """The command line that runs child `name` with `arguments` in this interpreter."""
    return [sys.executable, "-m", f"{__name__}.{name}", *map(str, arguments)]


def start(name: str, *arguments, env: dict[str, str]) -> subprocess.Popen:
    """Child `name` started with `arguments`, its stdin and stdout pipes of text."""
    return subprocess.Popen(
        command(name, *arguments), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def wait_ready(processes: list[subprocess.Popen], failure: str) -> None:
    """Waits for each process's READY line; RuntimeError(`failure`) if one ends without it."""
    for process in processes:
        if process.stdout.readline().strip() != READY:
            raise RuntimeError(failure)


def start_at(processes: list[subprocess.Popen], t0: float) -> None:
    """Tells each ready process the common start time `t0` (wall clock)."""
    for process in processes:
        process.stdin.write(f"{t0}\n")
        process.stdin.flush()


def await_start() -> float:
    """In a child: announces READY and returns the start time the parent sends."""
    print(READY, flush=True)
    return float(sys.stdin.readline())


def sleep_until(t: float) -> None:
    """In a child: sleeps until wall time `t` (at once if it has passed)."""
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)
