"""`wam-ros bench supervisor`: the supervisor core's chunk checks and its reaction to a low value."""

from __future__ import annotations

import time

import numpy as np

from wam_ros.perf.common import median_ms


def bench_supervisor(robot: str = "agilex", repeats: int = 200) -> dict:
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
        # consecutive=1: the reaction is timed from the estimate that triggers
        config = SupervisorConfig.for_robot(
            cfg, workspace=workspace, rollback=RollbackConfig(cooldown=0.0, consecutive=1)
        )
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
        inward = np.sign([(j.min_position + j.max_position) / 2 for j in limits] - q)  # stay inside the range
        chunk = Chunk(1, 0.0, list(sup.config.arm_joints), q + np.linspace(0.0, 0.1, 15)[:, None] * inward, 1 / 15)
        assert isinstance(sup.submit_chunk(0.0, chunk)[-1], Command), "benchmark chunk must pass the checks"
        result[label] = median_ms(lambda: sup.submit_chunk(0.0, chunk), repeats)

    def low_value_to_rollback_command() -> None:
        sup, q = running(None)
        sup.update_value(0.1, 0.8, 1)
        sup.update_joint_state(
            0.2, [*sup.config.arm_joints, *sup.config.gripper_joints], [*(q + 0.2), *sup.config.gripper_max]
        )
        t0 = time.perf_counter()
        events = sup.update_value(0.2, 0.5, 2)
        samples.append((time.perf_counter() - t0) * 1e3)
        assert any(isinstance(e, Command) and e.source == "rollback" for e in events)

    samples: list[float] = []
    for _ in range(repeats):
        low_value_to_rollback_command()
    result["low_value_to_rollback_command_ms"] = float(np.median(samples))
    result["control_period_ms"] = 1e3 / 15
    result["rollback_reaction_over_control_period"] = (
        result["low_value_to_rollback_command_ms"] / result["control_period_ms"]
    )
    return result
