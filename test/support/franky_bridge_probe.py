"""Run by test_bridge_franka.py in its own process (franky sets SCHED_FIFO on its thread):
two FR3s, each served by its own `franky-sim` process on a loopback address, driven through the
bridge core with franky-control; prints JSON."""

import json
import time

import numpy as np

from wam_ros.robots.bridge import BridgeError, CommandRejected
from wam_ros.robots.franka_sim import franky_sim_bridge

report = {}
with franky_sim_bridge(dynamics_factor=0.5) as bridge:
    names = bridge.joint_names
    clock = time.monotonic
    report["hosts"] = [backend.host for backend in bridge.backends]
    start = bridge.measured.copy()
    report["start"] = start.tolist()
    goal = start.copy()
    goal[names.index("left_joint1")] += 0.3
    goal[names.index("right_joint4")] += 0.2
    goal[names.index("left_gripper")] = 0.01
    now = clock()
    # a rejected trajectory stops whatever runs (never "keep going"), so it is sent first
    try:
        bridge.set_trajectory(["left_joint1"], np.array([now + 1.0]), np.array([[float("nan")]]), now)
    except CommandRejected as exc:
        report["rejected"] = str(exc)
    bridge.set_trajectory(names, np.array([now + 1.0]), goal[None, :], now)
    errors = []
    end = now + 2.5
    report["faults"] = []
    while clock() < end:
        try:
            bridge.step(clock(), 0.02)
        except BridgeError as exc:  # franky-sim on a loaded machine: recorded, recovered, reported
            report["faults"].append(str(exc))
            bridge.recover(clock())
            bridge.activate(clock())
        errors.append(float(np.abs(bridge.measured[:7] - bridge.commanded[:7]).max()))
        time.sleep(0.02)
    report.update(
        final=bridge.measured.tolist(),
        goal=goal.tolist(),
        latency=bridge.status.latency,
        tracking_error_p95=float(np.percentile(errors, 95)),
        mode=bridge.status.mode.value,
    )
print(json.dumps(report))
