"""The arm bridge core (ROS-free): one interface over every arm driver.

A bridge owns one or more `ArmBackend`s (one per FCI host or CAN port, or one for a whole
robot), each serving some of the system's joints (`left_joint1`, ..., `right_gripper`;
grippers in metres of one finger's travel). It executes joint trajectories by streaming
targets at the driver's rate through a limiter that never exceeds the configured position,
velocity and acceleration limits, and it turns driver faults and silence into an error state
that only an explicit `recover()` leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, Sequence

import numpy as np

from wam_ros.config import SIDES, RobotConfig
from wam_ros.control.limits import robot_joint_limits
from wam_ros.control.trajectory import TimedTrajectory


class BridgeError(RuntimeError):
    """A driver fault or lost connection; the bridge holds and waits for recover()."""


class CommandRejected(ValueError):
    """A trajectory failed validation; the bridge keeps executing its previous command."""


@dataclass
class ArmState:
    positions: np.ndarray            # in the backend's joint_names order
    velocities: np.ndarray
    efforts: np.ndarray
    stamp: float                     # time of the reading (s, the clock passed to read())
    error: str = ""                  # non-empty: the driver reports a fault
    mode: str = ""


class ArmBackend(Protocol):
    """One driver connection. `joint_names` use the system's names (left_joint1, left_gripper)."""

    joint_names: list[str]

    def connect(self) -> None: ...
    def enable(self) -> None: ...
    def read(self, now: float) -> ArmState: ...
    def command(self, positions: np.ndarray) -> None: ...
    def hold(self) -> None: ...
    def recover(self) -> None: ...
    def disconnect(self) -> None: ...


@dataclass(frozen=True)
class BridgeLimits:
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray

    @staticmethod
    def for_robot(robot: RobotConfig, names: Sequence[str], gripper_acceleration: float = 2.0) -> "BridgeLimits":
        """Arm joints: the limits the supervisor checks against; grippers: travel and speed."""
        by_name = {name: (l.min_position, l.max_position, l.max_velocity, l.max_acceleration)
                   for name, l in robot_joint_limits(robot).items()}
        g = robot.arm.gripper
        for side in SIDES:
            by_name[robot.gripper_joint_name(side)] = (0.0, g.stroke, g.velocity, gripper_acceleration)
        rows = np.array([by_name[n] for n in names], dtype=float)
        return BridgeLimits(*rows.T)


class LimitedFollower:
    """Streams positions towards moving targets without exceeding velocity or acceleration:
    each step moves at most as fast as still allows stopping at the target."""

    def __init__(self, limits: BridgeLimits, start: np.ndarray):
        self.limits = limits
        self.position = np.clip(np.asarray(start, dtype=float), limits.lower, limits.upper)
        self.velocity = np.zeros_like(self.position)

    def step(self, target: np.ndarray, dt: float) -> np.ndarray:
        lim = self.limits
        error = np.clip(target, lim.lower, lim.upper) - self.position
        # the fastest speed from which braking at max_acceleration, in steps of dt, still stops on the target
        a_dt = lim.max_acceleration * dt
        reachable = a_dt * (np.sqrt(0.25 + 2.0 * np.abs(error) / (a_dt * dt)) - 0.5)
        desired = np.sign(error) * np.minimum.reduce([np.abs(error) / dt, lim.max_velocity, reachable])
        self.velocity += np.clip(desired - self.velocity, -lim.max_acceleration * dt, lim.max_acceleration * dt)
        self.position = np.clip(self.position + self.velocity * dt, lim.lower, lim.upper)
        return self.position.copy()


class BridgeMode(Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"      # connected, holding
    ACTIVE = "active"          # streaming commands
    ERROR = "error"


@dataclass
class BridgeStatus:
    mode: BridgeMode
    error: str = ""
    commands: int = 0
    rejected: int = 0
    last_rejection: str = ""
    latency: float = math.nan   # s from a trajectory's arrival to its first streamed target
    extra: dict[str, str] = field(default_factory=dict)


class Bridge:
    def __init__(self, backends: Sequence[ArmBackend], limits: BridgeLimits, joint_names: Sequence[str],
                 max_step: float = 0.35, state_timeout: float = 0.5):
        self.backends = list(backends)
        self.joint_names = list(joint_names)
        served = [n for b in self.backends for n in b.joint_names]
        if sorted(served) != sorted(self.joint_names):
            raise ValueError(f"backends serve {served}, the robot has {self.joint_names}")
        self._columns = [[self.joint_names.index(n) for n in b.joint_names] for b in self.backends]
        self.limits = limits
        self.max_step = max_step            # largest jump of a trajectory's first point from the command
        self.state_timeout = state_timeout  # a backend silent for longer is an error
        self.status = BridgeStatus(BridgeMode.UNCONFIGURED)
        self.measured = np.zeros(len(self.joint_names))
        self.velocities = np.zeros(len(self.joint_names))
        self.efforts = np.zeros(len(self.joint_names))
        self._follower: LimitedFollower | None = None
        self._trajectory: tuple[np.ndarray, TimedTrajectory, float] | None = None  # (columns, trajectory, arrival)
        self._last_reading = np.full(len(self.backends), -math.inf)

    # --- lifecycle -------------------------------------------------------------------------
    def configure(self, now: float) -> None:
        """Connect every driver; each backend's connect() returns only after its first reading."""
        for backend in self.backends:
            backend.connect()
        self.status = BridgeStatus(BridgeMode.INACTIVE)
        self.read(now)
        self._follower = LimitedFollower(self.limits, self.measured)

    def activate(self, now: float) -> None:
        for backend in self.backends:
            backend.enable()
        self._follower = LimitedFollower(self.limits, self.measured)  # start from where the arm is
        self._trajectory = None
        self.status.mode = BridgeMode.ACTIVE

    def deactivate(self) -> None:
        self._trajectory = None
        for backend in self.backends:
            backend.hold()
        self.status.mode = BridgeMode.INACTIVE

    def cleanup(self) -> None:
        for backend in self.backends:
            backend.disconnect()
        self.status = BridgeStatus(BridgeMode.UNCONFIGURED)

    def recover(self, now: float) -> None:
        """Explicit recovery from ERROR: clear driver faults, reconnect readings, hold in INACTIVE."""
        for backend in self.backends:
            backend.recover()
        self.read(now)
        self._follower = LimitedFollower(self.limits, self.measured)
        self._trajectory = None
        self.status = BridgeStatus(BridgeMode.INACTIVE, commands=self.status.commands, rejected=self.status.rejected)

    # --- commands --------------------------------------------------------------------------
    def set_trajectory(self, names: Sequence[str], times: np.ndarray, positions: np.ndarray, now: float) -> None:
        """Validate and take a trajectory (absolute times); it replaces the running one."""
        try:
            if self.status.mode != BridgeMode.ACTIVE:
                raise CommandRejected(f"bridge is {self.status.mode.value}, not active")
            unknown = [n for n in names if n not in self.joint_names]
            if unknown or len(set(names)) != len(names) or not names:
                raise CommandRejected(f"joint_names: unknown or repeated {unknown or list(names)}; "
                                      f"allowed: {', '.join(self.joint_names)}")
            positions = np.asarray(positions, dtype=float)
            if positions.ndim != 2 or positions.shape != (len(times), len(names)):
                raise CommandRejected(f"expected {len(times)} points x {len(names)} positions, got {positions.shape}")
            if not np.isfinite(positions).all():
                raise CommandRejected("non-finite target")
            columns = np.array([self.joint_names.index(n) for n in names])
            lo, hi = self.limits.lower[columns], self.limits.upper[columns]
            outside = (positions < lo - 1e-9) | (positions > hi + 1e-9)
            if outside.any():
                point, j = np.argwhere(outside)[0]
                raise CommandRejected(f"{names[j]}={positions[point, j]:.4f} at point {point} outside "
                                      f"[{lo[j]:.4f}, {hi[j]:.4f}]")
            jump = np.abs(positions[0] - self._follower.position[columns])
            if (jump > self.max_step).any():
                j = int(np.argmax(jump))
                raise CommandRejected(f"{names[j]}: first point is {jump[j]:.3f} from the commanded position "
                                      f"(max_step {self.max_step})")
            trajectory = TimedTrajectory(times, positions, now, self._follower.position[columns])
        except (CommandRejected, ValueError) as exc:
            self.status.rejected += 1
            self.status.last_rejection = str(exc)
            raise CommandRejected(str(exc)) from None
        self._trajectory = (columns, trajectory, now)
        self.status.commands += 1

    # --- the driver-rate loop ----------------------------------------------------------------
    def read(self, now: float) -> None:
        for k, (backend, columns) in enumerate(zip(self.backends, self._columns)):
            state = backend.read(now)
            if state.error:
                self._fail(f"{', '.join(backend.joint_names[:1])}...: {state.error}")
            if math.isfinite(state.stamp):
                self._last_reading[k] = state.stamp
            self.measured[columns] = state.positions
            self.velocities[columns] = state.velocities
            self.efforts[columns] = state.efforts
        silent = now - self._last_reading
        if (silent > self.state_timeout).any() and self.status.mode != BridgeMode.UNCONFIGURED:
            k = int(np.argmax(silent))
            self._fail(f"no state from the driver of {self.backends[k].joint_names[0]}... for {silent[k]:.2f} s")

    def step(self, now: float, dt: float) -> None:
        """Read the drivers and, when active, stream the next limited target."""
        self.read(now)
        if self.status.mode != BridgeMode.ACTIVE:
            return
        target = self._follower.position.copy()  # hold unless a trajectory says otherwise
        if self._trajectory is not None:
            columns, trajectory, arrival = self._trajectory
            target[columns] = trajectory.sample(now)
            if arrival >= 0:  # the first target streamed for this trajectory
                self.status.latency = now - arrival
                self._trajectory = (columns, trajectory, -1.0)
        commanded = self._follower.step(target, dt)
        for backend, columns in zip(self.backends, self._columns):
            backend.command(commanded[columns])

    @property
    def commanded(self) -> np.ndarray:
        return self._follower.position.copy() if self._follower else self.measured.copy()

    def _fail(self, reason: str) -> None:
        if self.status.mode != BridgeMode.ERROR:
            for backend in self.backends:
                try:
                    backend.hold()
                except Exception:  # the connection may be the thing that failed
                    pass
        self.status.mode, self.status.error = BridgeMode.ERROR, reason
        self._trajectory = None
        raise BridgeError(reason)
