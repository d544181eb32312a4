"""`wam-ros bench policy`: the shipped demo policy on the simulated AgileX in real time (chunking modes, ANS)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _sim_observation(deployed, world, names: list[str], instruction: str):
    """The policy's observation of the simulated robot now: its three cameras and joint positions."""
    frames = world.render_all()
    return deployed.observation(
        {f.name: f.rgb for f in frames},
        {f.name: f.depth for f in frames},
        dict(zip(names, world.joint_positions())),
        instruction,
    )


def _closed_loop(deployed, world, names: list[str], instruction: str, duration: float) -> dict:
    """The simulated robot executing a policy's chunks at the control rate in real time while the
    policy samples on a worker thread, as policy_node does: starvation and boundary jumps."""
    import threading

    scheduler = deployed.scheduler
    dt = scheduler.config.dt
    handovers, latencies, errors = [], [], []
    busy = threading.Event()
    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731

    def infer(obs, stamp: float, chunk_id: int) -> None:
        try:
            deployed.infer(
                obs,
                stamp,
                clock,
                lambda ready: (handovers.append(ready.handover), latencies.append(clock() - stamp)),
                chunk_id,
            )
        except Exception as exc:  # noqa: BLE001 — reported in the result
            errors.append(repr(exc))
        finally:
            busy.clear()

    starved = ticks = 0
    chunk_id = 0
    for k in range(int(duration / dt)):
        now = clock()
        if now < k * dt:
            time.sleep(k * dt - now)
            now = clock()
        executing = scheduler.executing
        if executing is not None:
            ticks += 1
            starved += now > executing.end + 1e-9  # nothing left to execute: the arm holds
            # no supervisor here: targets only kept inside the joint ranges
            world.set_targets(names, np.clip(executing.at(now), world.lower, world.upper))
        world.step(dt)
        if not busy.is_set() and scheduler.inference_due(now):
            obs = _sim_observation(deployed, world, names, instruction)
            chunk_id += 1
            busy.set()
            threading.Thread(target=infer, args=(obs, now, chunk_id), daemon=True).start()
    while busy.is_set():
        time.sleep(0.01)
    jumps = np.array([h.jump for h in handovers[1:]]) if len(handovers) > 1 else np.array([np.nan])
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {
        "chunks": len(handovers),
        "control_ticks": ticks,
        "starved_ticks": int(starved),
        "boundary_jump_rad": {"median": round(float(np.median(jumps)), 4), "max": round(float(np.max(jumps)), 4)},
        "observation_to_chunk_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
            "max": round(float(np.max(lat)), 1),
        },
        "delay_steps": scheduler.delay_steps,
        "errors": errors[:3],
    }


def bench_policy(duration: float = 60.0, repeats: int = 10, checkpoint: str = "") -> dict:
    """The shipped demo policy (models/agilex_pick_place, what `make demo` runs) on the simulated AgileX at its 15 Hz
    control rate, in real time: RTC vs naive switching vs blending (chunk boundary jumps, starvation)
    for `duration` s each, and observation-to-first-action latency with ANS vs synchronous sampling
    (interleaved repeats). Inference includes the video and depth, as in policy_node."""
    import torch

    from wam_ros.config import load_robot_config
    from wam_ros.control.chunking import MODES, ChunkScheduler, default_execution_horizon
    from wam_ros.demo import shipped_policy
    from wam_ros.memory import keep_freed_memory
    from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config, resolve_instruction
    from wam_ros.model.policy import load_policy
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    keep_freed_memory()
    torch.set_num_threads(2)
    path = Path(checkpoint) if checkpoint else shipped_policy("agilex")
    policy = load_policy(path)
    robot = load_robot_config("agilex")
    names = list(robot.joint_names)
    instruction = resolve_instruction(policy, "")
    horizon = policy.cfg.num_actions
    result: dict = {
        "checkpoint": str(path),
        "actions_per_chunk": horizon,
        "control_rate_hz": policy.meta.fps,
        "execution_horizon_steps": default_execution_horizon(horizon),
        "torch_threads": torch.get_num_threads(),
        "seconds_per_mode": duration,
    }
    home = None  # the observation at home, for the latency comparison below
    for mode in MODES:
        world = SimWorld(robot, generate_urdf(robot))
        try:
            world.reset()
            scheduler = ChunkScheduler(chunking_config(policy, mode))
            deployed = DeployedPolicy(policy, robot, scheduler, DeployConfig(video=True, depth=True))
            home = home or _sim_observation(deployed, world, names, instruction)
            result[mode] = _closed_loop(deployed, world, names, instruction, duration)
        finally:
            world.close()
    for stat in ("median", "max"):
        naive, rtc = result["naive"]["boundary_jump_rad"][stat], result["rtc"]["boundary_jump_rad"][stat]
        result[f"naive_over_rtc_{stat}_jump"] = round(naive / rtc, 2) if rtc > 0 else None
    # observation to first action: ANS (T_a of T_O passes) vs synchronous (all T_O for the actions)
    cfg = policy.cfg
    variants = {"ans": cfg.action_steps, "synchronous": cfg.video_steps}
    first_action: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, steps in variants.items():
            first_action[name].append(
                policy.predict(home, video=False, action_steps=steps, seed=i).timings["actions_ms"]
            )
    medians = {name: round(float(np.median(v)), 2) for name, v in first_action.items()}
    result["observation_to_first_action_ms_p50"] = {
        f"ans_Ta{cfg.action_steps}_TO{cfg.video_steps}": medians["ans"],
        f"synchronous_{cfg.video_steps}": medians["synchronous"],
    }
    result["ans_speedup"] = round(medians["synchronous"] / medians["ans"], 2)
    result["goal"] = (
        "zero starvation whenever inference latency <= execution horizon; max boundary jump "
        ">= 5x smaller with rtc than naive"
    )
    return result
