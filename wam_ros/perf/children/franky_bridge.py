"""The bridge on franky-sim (franky-control over FCI, wall clock) under the bench's chunk stream;
prints the result as JSON. Its own process: franky puts its thread on SCHED_FIFO.

`python -m wam_ros.perf.children.franky_bridge --duration S`
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="franky_bridge")
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)

    from wam_ros.perf.bridge import stream_chunks
    from wam_ros.robots.franka_sim import franky_sim_bridge

    with franky_sim_bridge(dynamics_factor=1.0) as bridge:
        result = stream_chunks(bridge, time.monotonic, time.sleep, args.duration)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
