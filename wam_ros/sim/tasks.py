"""Benchmark tasks in the simulator (ROS-free): layouts per robot, Clean and Random conditions,
stage markers, success checks and mid-episode perturbations.

An episode is fully determined by `EpisodeSpec` (task, robot, condition, seed, perturbation), so
the simulator node, the scripted expert node and the in-process evaluator all derive the same
scene from the same few parameters. `TaskMonitor` watches a `SimWorld` and reports the stage
reached (latched, in order), success, and applies the perturbation when its trigger stage is hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wam_ros.config import ConfigError, RobotConfig, check_choice
from wam_ros.sim.world import TABLE_TEXTURES, Appearance, Distractor, SimWorld

CONDITIONS = ("clean", "random")
PERTURBATIONS = ("none", "drop", "slip", "nudge")


@dataclass(frozen=True)
class Stage:
    """A stage marker: `kind` is grasped (object held above the table by `arm`) or placed (object
    resting on `target` and released)."""

    name: str
    kind: str
    obj: str
    arm: str = ""
    target: str = ""  # an object name, or "transfer" for the layout's transfer spot


@dataclass(frozen=True)
class TaskLayout:
    """Where things go for one robot: object centres (x, y) in the base frame; `transfer` is the
    handover spot on the table."""

    positions: dict[str, tuple[float, float]]
    transfer: tuple[float, float] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    stages: tuple[Stage, ...]
    layouts: dict[str, TaskLayout]  # robot -> layout; robots missing: out of reach
    clean_spread: float = 0.015  # m, uniform per axis: the demonstrations' range
    random_spread: float = 0.04  # m, the Random condition's range (beyond the demos')

    @property
    def objects(self) -> list[str]:
        return sorted(
            {s.obj for s in self.stages} | {s.target for s in self.stages if s.target not in ("", "transfer")}
        )

    def layout(self, robot: str) -> TaskLayout:
        if robot not in self.layouts:
            raise ConfigError(
                f"task {self.name!r} is not available on robot {robot!r}: its kinematics cannot reach "
                f"the layout (available on {', '.join(sorted(self.layouts))})"
            )
        return self.layouts[robot]


# Layouts were chosen inside each arm's top-down-grasp workspace (Piper: x 0.2..0.35 m, towards its
# own side, and below about 0.1 m); the tests check that the scripted expert completes every one.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "pick_place",
            "put the red cube in the bin",
            (Stage("grasped", "grasped", "red_cube", arm="left"), Stage("placed", "placed", "red_cube", target="bin")),
            {
                "agilex": TaskLayout({"red_cube": (0.22, 0.25), "bin": (0.26, 0.09), "blue_cube": (0.30, -0.20)}),
                "franka": TaskLayout({"red_cube": (0.45, 0.30), "bin": (0.50, 0.08), "blue_cube": (0.50, -0.25)}),
                "tienkung": TaskLayout({"red_cube": (0.33, 0.26), "bin": (0.36, 0.12), "blue_cube": (0.40, -0.22)}),
            },
        ),
        Task(
            "stack",
            "stack the red cube on the blue cube",
            (
                Stage("grasped", "grasped", "red_cube", arm="left"),
                Stage("stacked", "placed", "red_cube", target="blue_cube"),
            ),
            {
                "agilex": TaskLayout({"red_cube": (0.22, 0.26), "blue_cube": (0.26, 0.11), "bin": (0.30, -0.20)}),
                "franka": TaskLayout({"red_cube": (0.45, 0.32), "blue_cube": (0.50, 0.12), "bin": (0.55, -0.25)}),
                "tienkung": TaskLayout({"red_cube": (0.33, 0.27), "blue_cube": (0.36, 0.14), "bin": (0.42, -0.22)}),
            },
        ),
        Task(
            "handover",
            "hand the red cube to the right arm and put it in the bin",
            (
                Stage("grasped_left", "grasped", "red_cube", arm="left"),
                Stage("transferred", "placed", "red_cube", target="transfer"),
                Stage("grasped_right", "grasped", "red_cube", arm="right"),
                Stage("placed", "placed", "red_cube", target="bin"),
            ),
            # the FR3 and TienKung experts drop the cube at the transfer spot: agilex only for now
            {
                "agilex": TaskLayout(
                    {"red_cube": (0.22, 0.25), "bin": (0.24, -0.20), "blue_cube": (0.36, 0.30)}, transfer=(0.25, 0.0)
                )
            },
        ),
    )
}


def get_task(name: str) -> Task:
    check_choice("task", name, tuple(TASKS))
    return TASKS[name]


@dataclass(frozen=True)
class EpisodeSpec:
    task: str
    robot: str
    condition: str = "clean"
    seed: int = 0
    perturbation: str = "none"

    def __post_init__(self) -> None:
        get_task(self.task).layout(self.robot)
        check_choice("condition", self.condition, CONDITIONS)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)


@dataclass(frozen=True)
class EpisodeSetup:
    """The sampled scene of one episode."""

    spec: EpisodeSpec
    positions: dict[str, tuple[float, float]]  # object -> (x, y) centre on the table
    transfer: tuple[float, float] | None
    appearance: Appearance
    perturbation_offset: tuple[float, float]  # (dx, dy) the perturbed object is moved by

    @property
    def task(self) -> Task:
        return get_task(self.spec.task)


def _random_appearance(
    rng: np.random.Generator,
    objects: list[str],
    occupied: list[tuple[float, float]],
    table_xy: tuple[float, float],
    table_half: tuple[float, float],
) -> Appearance:
    """RoboTwin 2.0-style domain randomisation: light, table texture and colour, object colours, clutter."""

    def colour() -> tuple[float, float, float, float]:
        return (*rng.uniform(0.1, 0.95, 3).round(3).tolist(), 1.0)

    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(50):  # clutter somewhere on the table, clear of the task objects
            xy = (
                float(table_xy[0] + rng.uniform(-0.8, 0.8) * table_half[0]),
                float(table_xy[1] + rng.uniform(-0.8, 0.8) * table_half[1]),
            )
            if all(math.dist(xy, o) > 0.09 for o in occupied):
                break
        else:
            continue
        occupied.append(xy)
        half = tuple(rng.uniform(0.01, 0.025, 3).round(4).tolist())
        distractors.append(Distractor((xy[0], xy[1], half[2]), half, colour()))
    return Appearance(
        light_diffuse=float(rng.uniform(0.35, 1.0)),
        light_ambient=float(rng.uniform(0.1, 0.5)),
        light_direction=(float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.6)), -1.0),
        table_texture=int(rng.integers(-1, len(TABLE_TEXTURES))),
        table_rgba=colour(),
        texture_repeat=float(rng.uniform(2.0, 10.0)),
        object_rgba={o: colour() for o in objects},
        distractors=tuple(distractors),
    )


def sample_episode(spec: EpisodeSpec, robot: RobotConfig) -> EpisodeSetup:
    """Object positions (Clean: within the demo range; Random: up to random_spread, so mostly
    outside it) and, for Random, the scene's appearance; deterministic in spec.seed."""
    if spec.robot != robot.name:
        raise ConfigError(f"episode is for robot {spec.robot!r}, not {robot.name!r}")
    table_xy, table_half = tuple(robot.table.pose.xyz[:2]), tuple(robot.table.size[:2])
    task = get_task(spec.task)
    layout = task.layout(spec.robot)
    rng = np.random.default_rng([spec.seed, CONDITIONS.index(spec.condition)])
    spread = task.clean_spread if spec.condition == "clean" else task.random_spread
    positions = {}
    for name, (x, y) in layout.positions.items():
        moves = name in task.objects  # the task's objects move; the spare cube stays put
        dx, dy = rng.uniform(-spread, spread, 2) if moves else (0.0, 0.0)
        positions[name] = (round(float(x + dx), 4), round(float(y + dy), 4))
    angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.03, 0.05)
    offset = (round(distance * math.cos(angle), 4), round(distance * math.sin(angle), 4))
    appearance = Appearance()
    if spec.condition == "random":
        appearance = _random_appearance(
            rng,
            list(layout.positions),
            list(positions.values()) + ([layout.transfer] if layout.transfer else []),
            table_xy,
            table_half,
        )
    return EpisodeSetup(spec, positions, layout.transfer, appearance, offset)


def setup_world(world: SimWorld, spec: EpisodeSpec) -> EpisodeSetup:
    """Reset the world and arrange the episode's scene."""
    setup = sample_episode(spec, world.robot)
    world.reset()
    top = world.table_top()
    for name, (x, y) in setup.positions.items():
        world.set_object_position(name, (x, y, top + world.object_half_size(name)[2]))
    world.apply_appearance(setup.appearance)
    return setup


@dataclass
class TaskStatus:
    stage: int  # stages completed, in order (latched)
    stage_name: str  # name of the last completed stage ("" before the first)
    success: bool  # the final stage holds now
    perturbed: bool
    time_to_success: float = math.nan  # s of sim time from the start, once successful


@dataclass
class TaskMonitor:
    """Stage markers and success for one episode on a SimWorld; applies the perturbation."""

    world: SimWorld
    setup: EpisodeSetup
    grasp_lift: float = 0.02  # m above the resting height counts as lifted
    grasp_reach: float = 0.04  # m from the TCP counts as in the hand
    place_tolerance: float = 0.025  # m in x and y
    settle_speed: float = 0.05  # m/s: resting
    perturb_delay: float = 0.3  # s after the trigger stage
    start_time: float = field(init=False)
    status: TaskStatus = field(init=False)
    _perturb_at: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        self.status = TaskStatus(0, "", False, False)
        self.num_stages = len(self.setup.task.stages)
        self.start_time = self.world.time

    def _target_top(self, stage: Stage) -> tuple[np.ndarray, float]:
        """(x, y) of the place target and the height of its top surface."""
        if stage.target == "transfer":
            return np.array(self.setup.transfer), self.world.table_top()
        p = self.world.object_position(stage.target)
        return p[:2], float(p[2] + self.world.object_half_size(stage.target)[2])

    def holds(self, stage: Stage) -> bool:
        w = self.world
        p = w.object_position(stage.obj)
        half = w.object_half_size(stage.obj)[2]
        if stage.kind == "grasped":
            lifted = p[2] > w.table_top() + half + self.grasp_lift
            return lifted and float(np.linalg.norm(w.tcp_position(stage.arm) - p)) < self.grasp_reach
        xy, top = self._target_top(stage)
        on_target = np.all(np.abs(p[:2] - xy) < self.place_tolerance) and abs(p[2] - (top + half)) < 0.012
        released = (
            all(float(np.linalg.norm(w.tcp_position(side) - p)) > self.grasp_reach * 0.75 for side in ("left", "right"))
            or stage.target == "transfer"
        )
        return bool(on_target and released and w.object_speed(stage.obj) < self.settle_speed)

    def update(self) -> TaskStatus:
        s, stages, now = self.status, self.setup.task.stages, self.world.time
        while s.stage < len(stages) and self.holds(stages[s.stage]):
            s.stage += 1
            s.stage_name = stages[s.stage - 1].name
        s.success = s.stage == len(stages) and self.holds(stages[-1])
        if s.success and math.isnan(s.time_to_success):
            s.time_to_success = now - self.start_time
        self._perturb(now)
        return s

    def _perturb(self, now: float) -> None:
        kind, s = self.setup.spec.perturbation, self.status
        if kind == "none" or s.perturbed:
            return
        obj = self.setup.task.stages[0].obj
        w = self.world
        if kind in ("drop", "slip") and s.stage >= 1 and self._perturb_at == math.inf:
            self._perturb_at = now + self.perturb_delay
        if kind == "nudge" and self._perturb_at == math.inf:
            # as the gripper closes in (within 8 cm), the object is pushed aside
            arm = self.setup.task.stages[0].arm
            if float(np.linalg.norm(w.tcp_position(arm) - w.object_position(obj))) < 0.08:
                self._perturb_at = now
        if now >= self._perturb_at:
            s.perturbed = True
            if kind == "slip":  # it falls out of the hand under gravity, back within reach of a retry
                w.let_fall(obj)
                return
            # dropped: the object lands on the table, displaced; nudged: slid aside
            p, (dx, dy) = w.object_position(obj), self.setup.perturbation_offset
            w.set_object_position(obj, (p[0] + dx, p[1] + dy, w.table_top() + w.object_half_size(obj)[2]))
