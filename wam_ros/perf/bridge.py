"""`wam-ros bench bridge`: the robot bridge under a 15 Hz chunk stream, on franky-sim and on the simulator."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from wam_ros.perf.children import command


def stream_chunks(
    bridge,
    clock,
    advance,
    duration: float = 4.0,
    driver_rate: float = 100.0,
    chunk_rate: float = 15.0,
    amplitude: float = 0.15,
    period: float = 2.0,
) -> dict:
    """A 15 Hz stream of 15-step chunks (sinusoid on joint 1 of each arm) through a bridge.

    `clock()` is the bridge's time, `advance(dt)` lets that time pass (sleep, or step a simulator).
    Returns the command-to-motion latency of a step command and the tracking error of the stream.
    """
    from wam_ros.robots.bridge import BridgeError

    names = bridge.joint_names
    arm1 = [names.index(n) for n in names if n.endswith("_joint1")]
    dt = 1.0 / driver_rate
    # command-to-motion: a 0.05 rad step, until the measured position has moved 1 mrad
    start = bridge.measured.copy()
    goal = bridge.commanded.copy()
    goal[arm1] += 0.05
    t0 = clock()
    bridge.set_trajectory(names, np.array([t0]), goal[None, :], t0)
    while np.abs(bridge.measured[arm1] - start[arm1]).max() < 1e-3 and clock() - t0 < 2.0:
        bridge.step(clock(), dt)
        advance(dt)
    latency = clock() - t0
    base = goal.copy()
    for _ in range(int(1.0 / dt)):  # settle
        bridge.step(clock(), dt)
        advance(dt)

    def desired(t: float, t_start: float) -> np.ndarray:
        q = base.copy()
        q[arm1] += amplitude * np.sin(2 * np.pi * (t - t_start) / period)
        return q

    t_start, next_chunk, faults = clock(), clock(), []
    sampled_at, measured = [], []  # after the first second
    while clock() - t_start < duration:
        now = clock()
        try:
            if now >= next_chunk:
                times = now + np.arange(15) / chunk_rate
                bridge.set_trajectory(names, times, np.array([desired(t, t_start) for t in times]), now)
                next_chunk += 1.0 / chunk_rate
            bridge.step(now, dt)
        except BridgeError as exc:  # counted and recovered, as an operator would
            faults.append(str(exc))
            bridge.recover(clock())
            bridge.activate(clock())
        if now - t_start > 1.0:
            sampled_at.append(now)
            measured.append(bridge.measured[arm1])
        advance(dt)

    def errors(lag: float) -> np.ndarray:
        """Per sample, the worst joint's distance from where the stream was `lag` seconds earlier."""
        return np.array([np.abs(q - desired(t - lag, t_start)[arm1]).max() for t, q in zip(sampled_at, measured)])

    # a driver behind the stream (franky-sim slower than real time on a loaded machine) shows as a
    # lag: the error after the best lag says whether the arm follows the stream's shape
    lags = np.arange(0.0, 0.5 + 1e-9, 0.01)
    best = float(lags[int(np.argmin([np.median(errors(lag)) for lag in lags]))])
    raw = errors(0.0)
    return {
        "command_to_motion_latency_ms": latency * 1e3,
        "tracking_error_median_rad": float(np.median(raw)),
        "tracking_error_p95_rad": float(np.percentile(raw, 95)),
        "tracking_lag_ms": best * 1e3,
        "tracking_error_p95_after_lag_rad": float(np.percentile(errors(best), 95)),
        "chunks": int(duration * chunk_rate),
        "driver_faults": faults,
    }


def _bench_sim_bridge(duration: float) -> dict:
    from wam_ros.config import load_robot_config
    from wam_ros.robots.bridge import Bridge, BridgeLimits
    from wam_ros.robots.sim import SimBackend
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimConfig, SimWorld

    robot = load_robot_config("franka")
    world = SimWorld(robot, generate_urdf(robot), SimConfig())
    bridge = Bridge(
        [SimBackend(world)],
        BridgeLimits.for_robot(robot, world.joint_names),
        world.joint_names,
        state_timeout=float("inf"),
    )
    bridge.configure(world.time)
    bridge.activate(world.time)
    return stream_chunks(bridge, lambda: world.time, world.step, duration)


def bench_bridge(robot: str = "franka", duration: float = 4.0) -> dict:
    """Franka FR3 pair: the bridge on franky-sim (franky-control over FCI, wall clock) next to the
    same bridge core on the MuJoCo simulator (sim time), for the same 15 Hz chunk stream."""
    if robot != "franka":
        raise ValueError("bench bridge compares franky-sim with the simulator: robot must be franka")
    result = {
        "robot": "franka",
        "stream": "15 Hz chunks of 15 steps, 0.15 rad sinusoid on joint 1, 100 Hz driver",
        "sim_bridge": _bench_sim_bridge(duration),
    }
    # franky puts its thread on SCHED_FIFO: its own process
    run = subprocess.run(command("franky_bridge", "--duration", duration), capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"franky-sim benchmark failed: {run.stderr[-2000:]}")
    result["franky_sim_bridge"] = json.loads(run.stdout.strip().splitlines()[-1])
    return result
