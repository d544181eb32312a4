"""The supervisor core fed by hand (no ROS): the agilex pair's joints and limits, a config, and
Harness, which feeds fresh streams at a given time and records the events. Shared by
test_supervisor_core.py and test_safety_core.py."""

from __future__ import annotations

import numpy as np

from wam_ros.config import load_robot_config
from wam_ros.control.commands import Chunk, Command
from wam_ros.control.limits import WorkspaceBox, robot_joint_limits
from wam_ros.control.supervisor import RollbackConfig, Supervisor, SupervisorConfig, SupervisorMode, Transition

ROBOT = load_robot_config("agilex")
ARM = tuple(n for n in ROBOT.joint_names if not n.endswith("_gripper"))
GRIPPERS = ("left_gripper", "right_gripper")
LIMITS = robot_joint_limits(ROBOT)
HOME = ROBOT.home_positions()
Q0 = np.array([HOME[n] for n in ARM])
DT = 1 / 15


def make_config(clamp: bool = False, workspace: WorkspaceBox | None = None, **rollback) -> SupervisorConfig:
    return SupervisorConfig.for_robot(
        ROBOT,
        clamp=clamp,
        workspace=workspace,
        rollback=RollbackConfig(**{"cooldown": 0.0, "consecutive": 1, **rollback}),
    )


class Harness:
    """Feeds fresh streams at a given time and records the events."""

    def __init__(self, config: SupervisorConfig | None = None, fk=None, converter=None):
        self.sup = Supervisor(config or make_config(), fk, converter)
        self.q = Q0.copy()
        self.grip = np.full(2, ROBOT.arm.gripper.stroke)
        self.now = 0.0
        self.events = []
        self.next_id = 1

    def feed(self, t: float) -> None:
        self.now = t
        self.sup.update_joint_state(t, [*ARM, *GRIPPERS], [*self.q, *self.grip])
        self.sup.update_observation(t)

    def chunk(self, positions=None, **fields) -> list:
        positions = np.tile(self.q, (15, 1)) if positions is None else positions
        c = Chunk(
            chunk_id=fields.pop("chunk_id", self.next_id),
            stamp=fields.pop("stamp", self.now),
            joint_names=fields.pop("joint_names", list(ARM)),
            positions=positions,
            dt=DT,
            **fields,
        )
        self.next_id = c.chunk_id + 1
        events = self.sup.submit_chunk(self.now, c)
        self.events += events
        return events

    def value(self, v: float) -> list:
        # one estimate per chunk: each value here stands for a new chunk's
        self.value_id = max(getattr(self, "value_id", 0), self.next_id - 1) + 1
        events = self.sup.update_value(self.now, v, self.value_id)
        self.events += events
        return events


def running(config: SupervisorConfig | None = None) -> Harness:
    h = Harness(config)
    h.feed(0.0)
    h.value(0.1)
    events = h.chunk()
    assert isinstance(events[0], Transition) and events[0].new == SupervisorMode.RUNNING
    assert isinstance(events[1], Command)
    return h
