"""`wam-ros bench reprojection`: the kinematic reprojection of the observed views, beside lifting them."""

from __future__ import annotations

import numpy as np

from wam_ros.perf.common import median_ms


def bench_reprojection(robot: str = "agilex", repeats: int = 5) -> dict:
    """The predicted future carried by the kinematics (KinematicReprojection.render: the observed
    RGB-D views at 8 future joint configurations) at model image sizes, side by side with lifting
    the same frames to a cloud (what the policy node does with them next). MuJoCo renders the views
    at the robot's home pose; the left arm moves 0.02 rad per frame on two joints."""
    from wam_ros.config import CAMERA_NAMES, load_robot_config
    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.geometry.lifting import lift, scale_intrinsics
    from wam_ros.geometry.reprojection import KinematicReprojection
    from wam_ros.model.policy import resize_images
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    cfg = load_robot_config(robot)
    urdf = generate_urdf(cfg)
    kinematics = Kinematics(urdf)
    world = SimWorld(cfg, urdf)
    try:
        home = cfg.home_positions()
        frames = [world.render(c) for c in CAMERA_NAMES]
    finally:
        world.close()
    reprojection = KinematicReprojection(kinematics, urdf, [f.frame_id for f in frames])
    moving = cfg.arm_joint_names("left")[:2]
    futures = [{**home, **{n: home[n] + 0.02 * k for n in moving}} for k in range(1, 9)]
    results = {}
    for size in ((32, 32), (48, 64), (128, 160)):
        rgb = np.stack([resize_images(f.rgb[None], size, "area")[0] for f in frames])
        depth = np.stack([resize_images(f.depth[None], size, "nearest")[0] for f in frames])
        K = np.stack([scale_intrinsics(f.K, f.rgb.shape[:2], size) for f in frames])
        carried_rgb, carried_depth = reprojection.render(rgb, depth, K, home, futures)
        poses = np.stack([[kinematics.frame_pose(q, f.frame_id) for f in frames] for q in futures])
        render = median_ms(lambda: reprojection.render(rgb, depth, K, home, futures), repeats)
        lifting = median_ms(lambda: lift(carried_depth, carried_rgb, K, poses), repeats)
        results[f"{size[1]}x{size[0]}"] = {
            "reprojection_ms": round(render, 1),
            "lift_ms": round(lifting, 2),
            "ratio_to_lift": round(render / lifting, 1),
        }
    return {
        "robot": robot,
        "views": len(frames),
        "future_frames": len(futures),
        "median": results,
        "note": "numpy on one core; per predicted chunk in the policy node, after its actions are out",
    }
