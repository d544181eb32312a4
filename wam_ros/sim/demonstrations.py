"""Demonstrations recorded in-process from the simulator (no ROS): the scripted motion, observed by
the three cameras, as a training dataset (wam_ros.model.episodes).

The first `from_home` episodes start at home, as the robot does when the policy takes over; the
others start the scripted motion at random phases, so that the state at a frame says where the
motion goes next. Frames are rendered at the simulator's camera size and resized
exactly as training and the policy node resize frames (wam_ros.model.policy.resize_images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wam_ros.config import CAMERA_NAMES, load_robot_config
from wam_ros.model.episodes import DatasetMeta, Episode
from wam_ros.model.policy import resize_images
from wam_ros.robots.urdf import generate_urdf
from wam_ros.sim.motion import MotionConfig, ScriptedMotion
from wam_ros.sim.world import SimConfig, SimWorld

TASK = "follow the scripted motion"


@dataclass(frozen=True)
class DemoConfig:
    robot: str = "agilex"
    episodes: int = 6
    from_home: int = 2
    seconds: float = 8.0
    fps: float = 15.0
    image_size: tuple[int, int] = (64, 64)   # what the model takes (height, width)
    seed: int = 0


def record_demonstrations(config: DemoConfig, sim: SimConfig | None = None,
                          motion: MotionConfig | None = None) -> tuple[DatasetMeta, list[Episode]]:
    robot = load_robot_config(config.robot)
    world = SimWorld(robot, generate_urdf(robot), sim)
    scripted = ScriptedMotion(robot, motion)
    names = list(robot.joint_names)
    rng = np.random.default_rng(config.seed)
    frames = int(round(config.seconds * config.fps))
    episodes = []
    try:
        for e in range(config.episodes):
            # from home through the motion's start-up ramp, or somewhere past it
            offset = 0.0 if e < config.from_home else float(rng.uniform(2.0, 2.0 + scripted.config.period * 4))
            world.reset()
            world.set_joint_positions(dict(zip(names, scripted.targets(offset))))
            rgb = np.zeros((frames, len(CAMERA_NAMES), *config.image_size, 3), np.uint8)
            depth = np.zeros((frames, len(CAMERA_NAMES), *config.image_size), np.uint16)
            state, action = np.zeros((frames, len(names))), np.zeros((frames, len(names)))
            for k in range(frames):
                for v, view in enumerate(world.render_all()):
                    rgb[k, v] = resize_images(view.rgb, config.image_size, "area")
                    depth[k, v] = resize_images(np.round(view.depth * 1000.0).astype(np.uint16), config.image_size,
                                                "nearest")
                state[k] = world.joint_positions()
                action[k] = scripted.targets(offset + (k + 1) / config.fps)  # commanded after frame k
                world.set_targets(names, action[k])
                world.step(1.0 / config.fps)
            episodes.append(Episode(rgb=rgb, depth=depth, state=state, action=action, task=TASK))
    finally:
        world.close()
    meta = DatasetMeta(cameras=list(CAMERA_NAMES), state_names=names, action_names=names,
                       action_space="joint_position", fps=config.fps)
    return meta, episodes
