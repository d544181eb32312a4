"""`wam-ros render-prediction` and the demo's prediction_4d.png: a policy's predicted future as a
figure, for places where RViz cannot run.

Two orthographic panels (top: x-y, side: x-z) in the robot base frame show the predicted 4D cloud
coloured by how far ahead each point is, the table outline, the robot as a stick figure now (black)
and at each predicted frame (in that frame's time colour), and the predicted TCP paths. Orthographic
panels rather than one 3D axes: at this size matplotlib's 3D projection neither depth-sorts the
cloud against the robot's lines nor shows distances in metres, so arm motion of a few centimetres
was unreadable; top and side views with equal axes show it directly.

Below them a strip: per camera a row with the real current image and the predicted frames (those
the cloud was lifted from), columns labelled with their time offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pinocchio as pin
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from wam_ros.config import ROBOTS, SIDES, RobotConfig
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.geometry.lifting import PointCloud
from wam_ros.robots.urdf import generate_urdf

CMAP = "viridis"
TIME_LABEL = "time ahead (s)"
# panels: (title, horizontal axis, vertical axis), axes indices into base-frame xyz
PANELS = (("top view", 0, 1), ("side view", 0, 2))
AXIS_LABELS = ("x (m, forward)", "y (m, left)", "z (m, up)")
MARGIN = 0.08  # m around what is drawn


@dataclass(frozen=True)
class PredictionScene:
    """What the figure draws, everything in the robot base frame."""

    robot: RobotConfig
    cloud: PointCloud  # predicted points; cloud.frames indexes frame_times
    frame_times: np.ndarray  # (F,) seconds ahead of each predicted frame
    joints: Mapping[str, float]  # the robot now
    title: str
    future_joints: Sequence[Mapping[str, float]] = ()  # the robot at each predicted frame (F maps)
    tcp_paths: Mapping[str, np.ndarray] = field(default_factory=dict)  # label -> (K, 3) positions
    path_times: np.ndarray | None = None  # (K,) seconds ahead of each TCP path step
    images: Mapping[str, np.ndarray] = field(default_factory=dict)  # camera -> real current colour image
    future_rgb: np.ndarray | None = None  # (len(images), F, h, w, 3) predicted frames at frame_times


def frame_times(horizon: int, actions_per_frame: int, fps: float) -> np.ndarray:
    """Seconds ahead of the predicted frames: frame j (0-based) ends action actions_per_frame * (j + 1)
    (DeployedPolicy.future_joint_maps poses its cameras there)."""
    return actions_per_frame * (np.arange(horizon) + 1) / fps


def table_box(robot: RobotConfig) -> tuple[np.ndarray, np.ndarray]:
    """(centre, half extents) of the table: the robot's scene config, from which the simulator
    builds its table geom (unrotated, like the simulator's)."""
    return np.array(robot.table.pose.xyz, float), np.array(robot.table.size, float)


def arm_chains(kinematics: Kinematics) -> dict[str, list[str]]:
    """side -> the link frames from the base to the TCP (the stick figure's joints): the body frames
    on the TCP's path up the URDF tree."""
    model = kinematics.model
    chains = {}
    for side in SIDES:
        frame = model.getFrameId(f"{side}_tcp")
        chain = []
        while frame != 0:  # 0: the universe
            if model.frames[frame].type == pin.FrameType.BODY:
                chain.append(model.frames[frame].name)
            frame = model.frames[frame].parentFrame
        chains[side] = chain[::-1]
    return chains


def stick_figure(
    kinematics: Kinematics, chains: Mapping[str, list[str]], joints: Mapping[str, float]
) -> list[np.ndarray]:
    """Per arm, (links, 3) origins of its link frames for one joint configuration."""
    frames = [f for chain in chains.values() for f in chain]
    poses = kinematics.frame_poses(joints, frames)
    return [np.array([poses[f][:3, 3] for f in chain]) for chain in chains.values()]


def _bounds(scene: PredictionScene, arms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) xyz of what the panels show: the robot, its paths and the table top, the workspace.
    Not the cloud: a poorly trained model's stray depth spreads points over metres and would shrink
    the arms to dots; points outside are clipped and counted in the legend."""
    centre, half = table_box(scene.robot)
    corners = centre + half * np.array([[-1, -1, 1], [1, 1, 1]])
    stacked = np.concatenate([*arms, *scene.tcp_paths.values(), corners])
    return stacked.min(axis=0) - MARGIN, stacked.max(axis=0) + MARGIN


def prediction_figure(scene: PredictionScene) -> Figure:
    """The figure (Agg, no pyplot state): the two panels with a time colourbar above the image strip."""
    kinematics = Kinematics(generate_urdf(scene.robot))
    chains = arm_chains(kinematics)
    now = stick_figure(kinematics, chains, scene.joints)
    future = [stick_figure(kinematics, chains, q) for q in scene.future_joints]
    times = np.asarray(scene.frame_times, float)
    norm = Normalize(0.0, float(times.max()))
    cmap = ScalarMappable(norm, CMAP)

    views = list(scene.images)
    columns = 1 + (0 if scene.future_rgb is None else scene.future_rgb.shape[1])
    figure = Figure(figsize=(13.0, 5.2 + 1.9 * len(views)), dpi=100, layout="constrained")
    grid = figure.add_gridspec(2, 1, height_ratios=[5.2, 1.9 * max(len(views), 1)])
    top = grid[0].subgridspec(1, 3, width_ratios=[1.0, 1.0, 0.04])
    low, high = _bounds(scene, [p for arms in (now, *future) for p in arms])
    valid = np.isfinite(scene.cloud.points).all(axis=1)
    inside = int((valid & ((scene.cloud.points >= low) & (scene.cloud.points <= high)).all(axis=1)).sum())
    points, point_times = scene.cloud.points[valid], times[scene.cloud.frames[valid]]
    order = np.argsort(point_times, kind="stable")  # later frames on top: the future stands out
    for column, (name, u, v) in enumerate(PANELS):
        ax = figure.add_subplot(top[0, column])
        ax.set_title(f"{name} ({'xyz'[u]}-{'xyz'[v]}), robot base frame")
        ax.set_xlabel(AXIS_LABELS[u])
        ax.set_ylabel(AXIS_LABELS[v])
        _draw_table(ax, scene.robot, u, v)
        ax.scatter(
            points[order, u],
            points[order, v],
            c=point_times[order],
            cmap=CMAP,
            norm=norm,
            s=3,
            alpha=0.5,
            linewidths=0,
            rasterized=True,
            gid="cloud",
            zorder=1,
            label=f"predicted cloud ({inside} of {int(valid.sum())} points in view)",
        )
        for j, arms in enumerate(future):
            for k, arm in enumerate(arms):
                ax.plot(
                    arm[:, u],
                    arm[:, v],
                    "-o",
                    color=cmap.to_rgba(times[j]),
                    alpha=0.55,
                    lw=1.5,
                    ms=2.5,
                    gid="robot_future",
                    label="robot at predicted frames" if j == k == 0 else None,
                    zorder=3,
                )
        for k, arm in enumerate(now):
            ax.plot(
                arm[:, u],
                arm[:, v],
                "-o",
                color="black",
                lw=2.5,
                ms=4,
                gid="robot_now",
                label="robot now" if k == 0 else None,
                zorder=4,
            )
        for k, (label, path) in enumerate(scene.tcp_paths.items()):
            ax.plot(
                path[:, u],
                path[:, v],
                "-",
                color="0.3",
                lw=1.0,
                gid="tcp_path",
                zorder=5,
                label="predicted TCP paths" if k == 0 else None,
            )
            ax.scatter(
                path[:, u],
                path[:, v],
                c=scene.path_times,
                cmap=CMAP,
                norm=norm,
                s=22,
                edgecolors="black",
                linewidths=0.5,
                gid="tcp_path_steps",
                zorder=6,
            )
            ax.annotate(label, path[-1, [u, v]], xytext=(4, 4), textcoords="offset points", fontsize=8, zorder=7)
        ax.set_xlim(low[u], high[u])
        ax.set_ylim(low[v], high[v])
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    bar = figure.colorbar(cmap, cax=figure.add_subplot(top[0, 2]))
    bar.set_label(TIME_LABEL)
    bar.set_ticks([0.0, *times])
    bar.set_ticklabels(["0 (now)", *(f"{t:.2f}" for t in times)])
    _draw_strip(figure, grid[1], scene, views, columns, times, figure.axes[0].get_legend_handles_labels()[0])
    figure.suptitle(scene.title)
    return figure


def _draw_table(ax, robot: RobotConfig, u: int, v: int) -> None:
    centre, half = table_box(robot)
    ax.add_patch(
        Rectangle(
            (centre[u] - half[u], centre[v] - half[v]),
            2 * half[u],
            2 * half[v],
            fill=False,
            edgecolor="sienna",
            lw=2.0,
            gid="table",
            label="table",
            zorder=2,
        )
    )


def _draw_strip(
    figure: Figure, cell, scene: PredictionScene, views: list[str], columns: int, times: np.ndarray, legend: list
) -> None:
    """Per camera: the real image now, then the predicted frames; titles on the first row. The panels'
    legend goes in the space right of the images (inside the panels it hid the workspace)."""
    # square-ish tiles whatever the horizon: an empty last column takes the width they do not need
    strip = cell.subgridspec(max(len(views), 1), columns + 1, width_ratios=[1.0] * columns + [max(5.5 - columns, 1.5)])
    for row, camera in enumerate(views):
        for column in range(columns):
            ax = figure.add_subplot(strip[row, column])
            image = scene.images[camera] if column == 0 else scene.future_rgb[row, column - 1]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(camera)
            if row == 0:
                ax.set_title("now (real)" if column == 0 else f"+{times[column - 1]:.2f} s (predicted)", fontsize=10)
    side = figure.add_subplot(strip[:, columns])
    side.axis("off")
    side.legend(handles=legend, loc="upper left", fontsize=10, markerscale=3, title="top and side views")
    if scene.future_rgb is None:
        side.text(
            0.0, 0.2, "predicted frames: not published over DDS\n(wam-ros render-prediction draws them)", fontsize=10
        )


def save_figure(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def checkpoint_robot(policy, robot_name: str | None) -> RobotConfig:
    """The robot a checkpoint was trained for. Its metadata names the robot's joints (not the robot):
    a named robot must match them, as bring-up checks (CheckpointMismatch otherwise); unnamed, the
    one robot whose joints match is taken, and several are refused with the choice to make."""
    from wam_ros.config import load_robot_config
    from wam_ros.model.policy import CheckpointMismatch

    def check(robot: RobotConfig) -> None:
        policy.check_robot(state_names=robot.joint_names, action_names=robot.joint_names)

    if robot_name:
        robot = load_robot_config(robot_name)
        try:
            check(robot)
        except CheckpointMismatch as exc:
            raise CheckpointMismatch(f"robot {robot_name!r}: {exc}") from None
        return robot
    fits = []
    for name in ROBOTS:
        try:
            check(load_robot_config(name))
            fits.append(name)
        except CheckpointMismatch:
            continue
    if len(fits) != 1:
        found = f"the joints of robots {fits}" if fits else "no known robot's joints"
        raise CheckpointMismatch(
            f"checkpoint joints {policy.meta.state_names} fit {found}; name the robot with "
            f"--robot ({', '.join(ROBOTS)})"
        )
    return load_robot_config(fits[0])


def simulated_prediction(
    checkpoint: Path, robot_name: str | None = None, seed: int = 0, instruction: str = "", voxel: float = 0.005
) -> tuple[PredictionScene, dict]:
    """The checkpoint run once on the simulator's observation at the robot's home pose: the scene to
    draw and a summary."""
    from wam_ros.control.chunking import ChunkScheduler
    from wam_ros.geometry.lifting import voxel_downsample
    from wam_ros.model.deploy import DeployConfig, DeployedPolicy, chunking_config, resolve_instruction
    from wam_ros.model.policy import load_policy
    from wam_ros.sim.world import SimWorld

    policy = load_policy(checkpoint)
    robot = checkpoint_robot(policy, robot_name)
    deployed = DeployedPolicy(
        policy, robot, ChunkScheduler(chunking_config(policy)), DeployConfig(video=True, depth=True)
    )
    world = SimWorld(robot, generate_urdf(robot))
    try:
        world.reset()
        views = {frame.name: frame for frame in world.render_all()}
        joints = dict(zip(robot.joint_names, world.joint_positions()))
    finally:
        world.close()
    obs = deployed.observation(
        {c: f.rgb for c, f in views.items()},
        {c: f.depth for c, f in views.items()},
        joints,
        resolve_instruction(policy, instruction),
    )
    chunks = []
    prediction = deployed.infer(obs, 0.0, lambda: 0.0, chunks.append, chunk_id=1, seed=seed)
    absolute = chunks[0].targets
    intrinsics = {c: (f.K, f.rgb.shape[:2]) for c, f in views.items()}
    imagined = deployed.imagined_future(prediction, obs, absolute, deployed.model_intrinsics(intrinsics))
    cloud = voxel_downsample(deployed.predicted_cloud(imagined, obs.state, absolute, intrinsics), voxel)
    cfg, fps = policy.cfg, policy.meta.fps
    scene = PredictionScene(
        robot=robot,
        cloud=cloud,
        frame_times=frame_times(cfg.horizon, cfg.actions_per_frame, fps),
        joints=joints,
        title=(
            f"{checkpoint.name} on {robot.name} (simulated home pose): {cfg.horizon} predicted frames, "
            f"{len(cloud)} points; value {prediction.value:.2f}, {prediction.expert} expert"
        ),
        future_joints=deployed.future_joint_maps(obs.state, absolute),
        tcp_paths={f"{side} TCP": path for side, path in deployed.tcp_paths(absolute, obs.state).items()},
        path_times=(np.arange(len(absolute)) + 1) / fps,
        images={c: views[c].rgb for c in cfg.cameras},
        future_rgb=imagined.rgb_at_depth_frames(),
    )  # the frames the cloud is coloured by
    summary = {
        "robot": robot.name,
        "points": len(cloud),
        "frames": cfg.horizon,
        "value": prediction.value,
        "expert": prediction.expert,
        "timings_ms": {k: round(v, 1) for k, v in prediction.timings.items()},
    }
    return scene, summary


def render_prediction(
    checkpoint: Path,
    out: Path,
    robot_name: str | None = None,
    seed: int = 0,
    instruction: str = "",
    voxel: float = 0.005,
) -> dict:
    """`wam-ros render-prediction`: the figure of simulated_prediction as a PNG; returns the summary."""
    scene, summary = simulated_prediction(checkpoint, robot_name, seed, instruction, voxel)
    save_figure(prediction_figure(scene), out)
    return {"png": str(out), **summary}
