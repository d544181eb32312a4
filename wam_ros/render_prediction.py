"""`wam-ros render-prediction`: a PNG of a policy's predicted 4D point cloud, for places where RViz
cannot run. The observation comes from the simulator at the robot's home pose; the figure shows
the fused cloud of every predicted frame (later frames faded) from a chosen viewpoint, and the
predicted colour frames of each view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wam_ros.geometry.lifting import PointCloud, fade, voxel_downsample
from wam_ros.geometry.render import pinhole, render_points, view_pose

FIGURE_SIZE = (420, 560)  # height, width of the cloud panel


def prediction_figure(cloud: PointCloud, frames_in_prediction: int, future_rgb: np.ndarray | None, view: str,
                      title: str) -> np.ndarray:
    """The cloud panel (colours faded by predicted frame) above a grid of predicted frames (views x time)."""
    from PIL import Image, ImageDraw

    cloud = fade(cloud, frames_in_prediction)
    panel = render_points(cloud.points, cloud.colors, view_pose(cloud.points, view), pinhole(FIGURE_SIZE), FIGURE_SIZE)
    rows = [panel]
    if future_rgb is not None:
        views, steps = future_rgb.shape[:2]
        tile = FIGURE_SIZE[1] // steps
        grid = np.concatenate([np.concatenate([np.asarray(Image.fromarray(future_rgb[v, t]).resize((tile, tile),
                                                                                                      Image.NEAREST))
                                               for t in range(steps)], axis=1) for v in range(views)], axis=0)
        pad = np.full((grid.shape[0], FIGURE_SIZE[1] - grid.shape[1], 3), 255, np.uint8)
        rows.append(np.concatenate([grid, pad], axis=1))
    figure = Image.fromarray(np.concatenate(rows, axis=0))
    ImageDraw.Draw(figure).text((8, 6), title, fill=(0, 0, 0))
    return np.asarray(figure)


def render_prediction(checkpoint: Path, out: Path, robot_name: str = "agilex", view: str = "oblique",
                      seed: int = 0, instruction: str = "", voxel: float = 0.005) -> dict:
    from PIL import Image

    from wam_ros.config import load_robot_config
    from wam_ros.control.chunking import ChunkScheduler
    from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config, resolve_instruction
    from wam_ros.model.policy import load_policy
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.sim.world import SimWorld

    policy = load_policy(checkpoint)
    robot = load_robot_config(robot_name)
    deployed = DeployedPolicy(policy, robot, ChunkScheduler(chunking_config(policy)), DeployConfig(video=True, depth=True))
    world = SimWorld(robot, generate_urdf(robot))
    try:
        world.reset()
        views = {frame.name: frame for frame in world.render_all()}
        joints = dict(zip(robot.joint_names, world.joint_positions()))
    finally:
        world.close()
    obs = deployed.observation({c: f.rgb for c, f in views.items()}, {c: f.depth for c, f in views.items()}, joints,
                               resolve_instruction(policy, instruction))
    chunks = []
    prediction = deployed.infer(obs, 0.0, lambda: 0.0, chunks.append, chunk_id=1, seed=seed)
    absolute = chunks[0].targets
    intrinsics = {c: (f.K, f.rgb.shape[:2]) for c, f in views.items()}
    cloud = voxel_downsample(deployed.predicted_cloud(prediction, obs.state, absolute, intrinsics), voxel)
    title = (f"{checkpoint.name}: {policy.cfg.horizon} predicted frames, {len(cloud)} points; value "
             f"{prediction.value:.2f}, {prediction.expert} expert")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(prediction_figure(cloud, policy.cfg.horizon, prediction.future_rgb, view, title)).save(out)
    summary = {"png": str(out), "points": len(cloud), "frames": policy.cfg.horizon, "value": prediction.value,
               "expert": prediction.expert, "timings_ms": {k: round(v, 1) for k, v in prediction.timings.items()}}
    return summary
