"""What travels from the policy to the arms (ROS-free): an action chunk as the supervisor
checks it, and a command as the bridges execute it.

Its own module so that the model (which produces chunks) and the benchmark (which times
commands) do not depend on the supervisor (which checks them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wam_ros.robots.actions import JOINT_POSITION


@dataclass
class Chunk:
    """The fields of wam_ros/ActionChunk the supervisor uses."""

    chunk_id: int
    stamp: float  # observation the chunk was conditioned on
    joint_names: list[str]
    positions: np.ndarray  # horizon x len(joint_names)
    dt: float
    gripper_names: list[str] = field(default_factory=list)
    gripper: np.ndarray | None = None  # horizon x len(gripper_names), normalised 0..1
    action_space: int = JOINT_POSITION
    expert: int = 0
    value: float = math.nan


@dataclass
class Command:
    """Joint targets for the bridge: rows at `dt` spacing, the first executed at `start`."""

    joint_names: list[str]
    positions: np.ndarray
    dt: float
    start: float
    source: str  # "chunk <id>", "hold", "rollback"

    def offsets(self) -> np.ndarray:
        """Seconds after `start` at which each row is due. A chunk's first row executes at once
        (it continues what the arm does); a rollback's rows start one step later, since its first
        row is already a step of the planned return, not the arm's present position."""
        first = self.dt if self.source == "rollback" else 0.0
        return first + np.arange(len(self.positions)) * self.dt
