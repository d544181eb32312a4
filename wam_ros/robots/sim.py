"""The simulator as an arm backend: the bridge core streams its limited targets into the
MuJoCo position servos (used by sim_node, which owns the world)."""

from __future__ import annotations

import numpy as np

from wam_ros.robots.bridge import ArmState
from wam_ros.sim.world import SimWorld


class SimBackend:
    def __init__(self, world: SimWorld):
        self.world = world
        self.joint_names = list(world.joint_names)

    def connect(self) -> None:
        pass  # the world exists as long as the node

    def enable(self) -> None:
        pass

    def read(self, now: float) -> ArmState:
        w = self.world
        return ArmState(w.joint_positions(), w.joint_velocities(), w.joint_efforts(), w.time)

    def command(self, positions: np.ndarray) -> None:
        self.world.set_targets(self.joint_names, positions)

    def hold(self) -> None:
        self.world.set_targets(self.joint_names, self.world.joint_positions().clip(self.world.lower, self.world.upper))

    def recover(self) -> None:
        pass

    def disconnect(self) -> None:
        pass
