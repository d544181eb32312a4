"""`wam-ros bench sim`: simulator and message-conversion costs, measured side by side."""

from __future__ import annotations

import time

import numpy as np


def _median_ms(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def bench_sim(robot: str, repeats: int = 30) -> dict:
    from wam_ros.config import load_robot_config
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.ros.conversions import image_msg, to_time
    from wam_ros.sim.world import SimWorld

    cfg = load_robot_config(robot)
    world = SimWorld(cfg, generate_urdf(cfg))
    try:
        frame = world.render("head")
        stamp = to_time(0.0)
        fast = _median_ms(lambda: image_msg(frame.rgb, "rgb8", stamp, "f"), repeats)
        naive = _median_ms(lambda: frame.rgb.ravel().tolist(), repeats)
        result = {
            "robot": robot,
            "image": f"{world.config.width}x{world.config.height}",
            "physics_step_10ms_ms": _median_ms(lambda: world.step(0.01), repeats),
            "render_3_cameras_rgbd_ms": _median_ms(world.render_all, repeats),
            "rgb_to_msg_fast_ms": fast,
            "rgb_to_msg_tolist_ms": naive,
            "tolist_over_fast": naive / fast,
        }
    finally:
        world.close()
    return result


def bench_supervisor(robot: str, repeats: int = 200) -> dict:
    """Cost of the chunk checks, and of reacting to a low value, in the supervisor core."""
    from wam_ros.config import load_robot_config
    from wam_ros.control.limits import WorkspaceBox
    from wam_ros.control.supervisor import Chunk, Command, RollbackConfig, Supervisor, SupervisorConfig
    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.robots.urdf import generate_urdf

    cfg = load_robot_config(robot)
    kinematics = Kinematics(generate_urdf(cfg))
    box = WorkspaceBox(("left_tcp", "right_tcp"), (-2.0, -2.0, -1.0), (2.0, 2.0, 2.0))
    home = cfg.home_positions()

    def running(workspace: WorkspaceBox | None) -> tuple[Supervisor, np.ndarray]:
        config = SupervisorConfig.for_robot(cfg, workspace=workspace, rollback=RollbackConfig(cooldown=0.0))
        sup = Supervisor(config, lambda q, frames: kinematics.frame_poses(q, list(frames)))
        q = np.array([home[n] for n in config.arm_joints])
        names = [*config.arm_joints, *config.gripper_joints]
        sup.update_joint_state(0.0, names, [*q, *config.gripper_max])
        sup.update_observation(0.0)
        sup.submit_chunk(0.0, Chunk(0, 0.0, list(config.arm_joints), np.tile(q, (15, 1)), 1 / 15))
        return sup, q

    result = {"robot": robot, "chunk": "15 steps x 12 joints, dt 1/15 s"}
    for label, workspace in (("check_chunk_ms", None), ("check_chunk_with_workspace_fk_ms", box)):
        sup, q = running(workspace)
        limits = [sup.config.checks.limits[n] for n in sup.config.arm_joints]
        inward = np.sign([(l.min_position + l.max_position) / 2 for l in limits] - q)  # stay inside the range
        chunk = Chunk(1, 0.0, list(sup.config.arm_joints), q + np.linspace(0.0, 0.1, 15)[:, None] * inward, 1 / 15)
        assert isinstance(sup.submit_chunk(0.0, chunk)[-1], Command), "benchmark chunk must pass the checks"
        result[label] = _median_ms(lambda: sup.submit_chunk(0.0, chunk), repeats)

    def low_value_to_rollback_command() -> None:
        sup, q = running(None)
        sup.update_value(0.1, 0.8, 1)
        sup.update_joint_state(0.2, [*sup.config.arm_joints, *sup.config.gripper_joints],
                               [*(q + 0.2), *sup.config.gripper_max])
        t0 = time.perf_counter()
        events = sup.update_value(0.2, 0.5, 2)
        samples.append((time.perf_counter() - t0) * 1e3)
        assert any(isinstance(e, Command) and e.source == "rollback" for e in events)

    samples: list[float] = []
    for _ in range(repeats):
        low_value_to_rollback_command()
    result["low_value_to_rollback_command_ms"] = float(np.median(samples))
    result["control_period_ms"] = 1e3 / 15
    result["rollback_reaction_over_control_period"] = result["low_value_to_rollback_command_ms"] / result["control_period_ms"]
    return result
