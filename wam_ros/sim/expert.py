"""The scripted expert (ROS-free): top-down grasps planned with inverse kinematics from the
episode's object positions, with noise, as a time-indexed joint-target plan.

The plan follows the task's stage markers: each "grasped" stage is a pick (above, down, close,
lift) and each "placed" stage a place (above the target, down, open, up) by the arm that holds
the object; an arm that hands an object over goes home afterwards. In a "slip" episode the first
object slips out during the first lift (sim.tasks) and the expert grasps it again where it fell, as
a teleoperator would: demonstrations of the recovery. Keyframes are joined by
minimum-jerk segments in joint space, so the commands are smooth and inside the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wam_ros.config import RobotConfig
from wam_ros.control.limits import move_duration, robot_joint_limits
from wam_ros.control.trajectory import TimedTrajectory, min_jerk_profile
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.sim.tasks import EpisodeSetup
from wam_ros.sim.world import scene_heights


class PlanningError(RuntimeError):
    """The expert cannot reach a keyframe of this layout."""


@dataclass(frozen=True)
class ExpertConfig:
    position_noise: float = 0.004  # m, per keyframe and axis (grasp and place points included)
    timing_noise: float = 0.15  # relative, per segment
    approach_height: float = 0.08  # m above the grasp / place point (less where out of reach)
    speed: float = 0.2  # m/s of the TCP between keyframes
    min_segment: float = 0.5  # s
    gripper_time: float = 0.6  # s to close or open
    settle_time: float = 0.6  # s of holding still at the end
    ik_tolerance: float = 5e-3


class ExpertPlan:
    """Joint targets (robot.joint_names order) at keyframe times, joined by minimum-jerk segments."""

    def __init__(self, times: list[float], keyframes: list[np.ndarray], joint_names: list[str]):
        self.joint_names = joint_names
        self._trajectory = TimedTrajectory(
            np.asarray(times), np.asarray(keyframes), times[0], keyframes[0], profile=min_jerk_profile
        )

    @property
    def duration(self) -> float:
        return self._trajectory.end_time

    def targets(self, t: float) -> np.ndarray:
        return self._trajectory.sample(t)


def _top_down(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])  # TCP z points down


class _Planner:
    def __init__(self, robot: RobotConfig, kinematics: Kinematics, config: ExpertConfig, rng: np.random.Generator):
        self.robot, self.kin, self.cfg, self.rng = robot, kinematics, config, rng
        self.names = list(robot.joint_names)
        home = robot.home_positions()
        self.q = {n: float(home[n]) for n in self.names}
        self.home = dict(self.q)
        self.gripper_open = {n: robot.joint_limits()[n][1] for n in self.names if n.endswith("_gripper")}
        for n, v in self.gripper_open.items():
            self.q[n] = v
        # the supervisor's limits (an arm joint's): a segment too fast for them is rejected and the arm stops
        limits = robot_joint_limits(robot)
        self._limited = [i for i, n in enumerate(self.names) if n in limits]
        self._limits = [limits[self.names[i]] for i in self._limited]
        self.times, self.keyframes = [0.0], [self._row()]
        self.yaw: dict[str, float] = {}  # the wrist yaw each arm holds during a pick or place

    def _row(self) -> np.ndarray:
        return np.array([self.q[n] for n in self.names])

    def _tcp(self, side: str) -> np.ndarray:
        return self.kin.frame_pose(self.q, f"{side}_tcp")[:3, 3]

    def jitter(self) -> np.ndarray:
        return self.rng.uniform(-self.cfg.position_noise, self.cfg.position_noise, 3)

    def _append(self, duration: float) -> None:
        duration *= 1.0 + self.rng.uniform(-self.cfg.timing_noise, self.cfg.timing_noise)
        row = self._row()
        within_limits = move_duration((row - self.keyframes[-1])[self._limited], self._limits)
        self.times.append(self.times[-1] + max(duration, 0.2, within_limits))
        self.keyframes.append(row)

    def _solve(self, side: str, xyz: np.ndarray, yaw: float) -> tuple[dict[str, float], float]:
        """IK from the current joints, and from home when that gets stuck in a local minimum."""
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = _top_down(yaw), xyz
        best = None
        for seed in (self.q, self.home):
            solution, error = self.kin.solve_ik(
                f"{side}_tcp", pose, self.robot.arm_joint_names(side), seed, iterations=200
            )
            if best is None or error < best[1]:
                best = (solution, error)
            if error <= self.cfg.ik_tolerance:
                break
        return best

    def _reach(self, side: str, xyz: np.ndarray, prefer: float | None) -> tuple[dict[str, float], float]:
        """A reachable top-down pose: the preferred yaw if it reaches, else the yaw whose solution
        is closest to the current joints (the cube is symmetric, so any yaw grasps it)."""
        if prefer is not None:
            solution, error = self._solve(side, xyz, prefer)
            if error <= self.cfg.ik_tolerance:
                return solution, prefer
        best = None
        for yaw in np.linspace(-math.pi / 2, math.pi / 2, 9):
            solution, error = self._solve(side, xyz, float(yaw))
            if error > self.cfg.ik_tolerance:
                continue
            distance = sum(abs(solution[n] - self.q[n]) for n in solution)
            if best is None or distance < best[0]:
                best = (distance, solution, float(yaw))
        if best is None:
            raise PlanningError(f"{side} arm: no top-down pose reaches {np.round(xyz, 3).tolist()}")
        return best[1], best[2]

    def move(self, side: str, xyz: np.ndarray) -> None:
        solution, self.yaw[side] = self._reach(side, xyz, self.yaw.get(side))
        distance = float(np.linalg.norm(self._tcp(side) - xyz))
        self.q.update(solution)
        self._append(max(self.cfg.min_segment, distance / self.cfg.speed))

    def move_above(self, side: str, xyz: np.ndarray) -> None:
        """Approach or retreat: approach_height above xyz, lower where the arm's top-down workspace
        ends (the Piper's reach shrinks fast with height)."""
        for fraction in (1.0, 0.75, 0.5, 0.35):
            try:
                return self.move(side, xyz + [0.0, 0.0, fraction * self.cfg.approach_height])
            except PlanningError:
                continue
        raise PlanningError(f"{side} arm: no top-down approach to {np.round(xyz, 3).tolist()}")

    def gripper(self, side: str, closed: bool) -> None:
        name = f"{side}_gripper"
        self.q[name] = 0.0 if closed else self.gripper_open[name]
        self._append(self.cfg.gripper_time)

    def go_home(self, side: str) -> None:
        for n in self.robot.arm_joint_names(side):
            self.q[n] = self.home[n]
        self._append(1.2)

    def hold(self, seconds: float) -> None:
        self.times.append(self.times[-1] + seconds)
        self.keyframes.append(self._row())


def plan_expert(
    robot: RobotConfig,
    kinematics: Kinematics,
    setup: EpisodeSetup,
    rng: np.random.Generator,
    config: ExpertConfig | None = None,
) -> ExpertPlan:
    """The expert's plan for one episode (its noise drawn from rng)."""
    cfg = config or ExpertConfig()
    table_top, object_half_heights = scene_heights(robot)
    p = _Planner(robot, kinematics, cfg, rng)
    place_xy = {**setup.positions}
    if setup.transfer is not None:
        place_xy["transfer"] = setup.transfer
    holder, where = "", {name: (*xy, table_top + object_half_heights[name]) for name, xy in setup.positions.items()}
    for stage in setup.task.stages:
        if stage.kind == "grasped":
            side = holder = stage.arm
            grasp = np.array(where[stage.obj]) + p.jitter() * np.array([1, 1, 0.5])
            p.yaw.pop(side, None)  # a new grasp picks its own wrist yaw
            p.move_above(side, grasp + p.jitter())
            p.move(side, grasp)
            p.gripper(side, closed=True)
            p.move_above(side, grasp + p.jitter())
            if setup.spec.perturbation == "slip" and stage is setup.task.stages[0]:
                # the object slips out during the lift and falls straight down: the teleoperator
                # opens, goes back down to where it lies and grasps it again
                p.gripper(side, closed=False)
                p.move(side, grasp + p.jitter())
                p.gripper(side, closed=True)
                p.move_above(side, grasp + p.jitter())
        else:
            side = holder
            top = (
                table_top if stage.target == "transfer" else where[stage.target][2] + object_half_heights[stage.target]
            )
            drop = np.array([*place_xy[stage.target], top + object_half_heights[stage.obj] + 0.006])
            drop[:2] += p.jitter()[:2]
            p.move_above(side, drop)
            p.move(side, drop)
            p.gripper(side, closed=False)
            p.move_above(side, drop)
            where[stage.obj] = (*drop[:2], top + object_half_heights[stage.obj])
            if stage.target == "transfer":
                p.go_home(side)  # clear the workspace for the other arm
    p.hold(cfg.settle_time)
    return ExpertPlan(p.times, p.keyframes, p.names)
