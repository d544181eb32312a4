"""Calibration check: project the robot's wrist frames into the head camera image (ROS-free).

The camera mounts (head extrinsics in the base frame, wrist hand-eye transforms) come from
config/robots/<robot>.yaml through the URDF. Drawn on a real head image (with its intrinsics and
the joint positions it was taken at), the markers must sit on the grippers; without an image the
simulator renders one, which checks the conventions end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from wam_ros.config import SIDES, load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.urdf import generate_urdf

CHECK_FRAMES = tuple(f"{side}_{frame}" for side in SIDES for frame in ("flange", "tcp", "wrist_color_optical_frame"))


def project_frames(kinematics: Kinematics, joints: Mapping[str, float], camera_frame: str, K: np.ndarray,
                   frames: tuple[str, ...] = CHECK_FRAMES) -> dict[str, tuple[float, float, float]]:
    """(u, v, depth in m) of each frame's origin in the camera (optical frame: z forward, y down)."""
    poses = kinematics.frame_poses(joints, [camera_frame, *frames])
    world_to_camera = np.linalg.inv(poses[camera_frame])
    out = {}
    for frame in frames:
        x, y, z = (world_to_camera @ poses[frame][:, 3])[:3]
        out[frame] = (float(K[0, 0] * x / z + K[0, 2]), float(K[1, 1] * y / z + K[1, 2]), float(z))
    return out


def calibration_check(robot: str, out: Path, image: np.ndarray | None = None, K: np.ndarray | None = None,
                      joints: Mapping[str, float] | None = None) -> dict:
    """Write a PNG of the head image with the projected wrist frames; return the projections."""
    from PIL import Image, ImageDraw

    cfg = load_robot_config(robot)
    urdf = generate_urdf(cfg)
    joints = dict(cfg.home_positions() if joints is None else joints)
    if image is None:  # the simulator's head camera at these joint positions
        from wam_ros.sim.world import SimWorld

        world = SimWorld(cfg, urdf)
        try:
            world.set_joint_positions(joints)
            frame = world.render("head")
            image, K = frame.rgb, frame.K
        finally:
            world.close()
    if K is None:
        raise ValueError("K: the head camera intrinsics are needed with an image")
    projections = project_frames(Kinematics(urdf), joints, "head_color_optical_frame", K)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    h, w = image.shape[:2]
    for name, (u, v, z) in projections.items():
        color = (255, 0, 255) if "tcp" in name else (0, 255, 255) if "optical" in name else (255, 255, 0)
        draw.ellipse([u - 3, v - 3, u + 3, v + 3], outline=color, width=2)
        draw.text((u + 5, v - 5), name.replace("_color_optical_frame", "_cam"), fill=color)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return {"robot": robot, "image": str(out), "size": [w, h],
            "projections": {name: {"u": round(u, 1), "v": round(v, 1), "depth_m": round(z, 3),
                                   "in_view": bool(z > 0 and 0 <= u < w and 0 <= v < h)}
                            for name, (u, v, z) in projections.items()}}
