"""The arm bridge core (ROS-free): one interface over every arm driver.

A bridge owns one or more `ArmBackend`s (one per FCI host or CAN port, or one for a whole
robot), each serving some of the system's joints (`left_joint1`, ..., `right_gripper`;
grippers in metres of one finger's travel). It executes joint trajectories by streaming
targets at the driver's rate through a limiter that never exceeds the configured position,
velocity and acceleration limits, and it turns driver faults and silence into an error state
that only an explicit `recover()` leaves.

Safety chain, as far as the bridge is concerned:
- A trajectory is checked before it runs (names, finite positions and times, position limits,
  point spacing, horizon, implied velocities, the first point's distance from the command). A
  rejected trajectory also stops the running one: the arms hold where they were commanded.
- Command watchdog: while a trajectory runs, the supervisor's heartbeat (or a new trajectory)
  must arrive at least every `command_timeout` seconds of the bridge's own clock; otherwise
  the trajectory is dropped and the arms hold (status.watchdog says why).
- A reading the arm cannot have produced (non-finite, well outside the joint range, or a jump
  faster than the joint can move) is a driver fault. The bridge holds at the last commanded
  position, never at the glitch; `measured` (what the nodes publish as joint_states) keeps the
  last plausible reading of that arm while the fault lasts, so a glitch never reaches the
  supervisor or the policy (the raw value is named in status.error). `recover()` refuses until
  the readings are plausible again and back where the arm was held.
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

# Trajectory checks, besides the position limits and max_step.
HOLD_TOLERANCE = 1e-3  # rad (m for grippers): a one-point hold this close outside a limit is clipped into it
MAX_HORIZON = 60.0  # s: the last point may be due at most this long after arrival
MIN_SPACING = 1e-3  # s between points: below it no arm tracks them and velocities blow up
VELOCITY_MARGIN = 1.1  # implied velocities may exceed max_velocity by 10 % (rounding, resampling)
# A point due at once is reached through the follower's ramp: it may be as far from the command as
# the joint moves in this time at max_velocity (with the default max_step this never binds first).
FIRST_POINT_LEAD = 0.15  # s
# Reading checks: what no arm does.
READING_SPEED_FACTOR = 2.0  # a reading moving faster than this times max_velocity ...
READING_SLACK = 0.02  # ... plus this many seconds at max_velocity (jitter in when readings arrive)
READING_RANGE_TOLERANCE = 0.05  # fraction of a joint's range a reading may lie outside it (sensor noise, sag)


class BridgeError(RuntimeError):
    """A driver fault, an implausible reading or a lost connection; the bridge holds and waits for recover()."""


class CommandRejected(ValueError):
    """A trajectory failed validation. It also stops the running trajectory: the arms hold at the
    commanded position (the follower decelerates within its limits)."""


@dataclass
class ArmState:
    positions: np.ndarray  # in the backend's joint_names order
    velocities: np.ndarray
    efforts: np.ndarray
    stamp: float  # time of the reading (s, the clock passed to read())
    error: str = ""  # non-empty: the driver reports a fault
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
    # True for grippers: a gripper target is a set point that the gripper approaches at its own
    # speed (open/close in one step is normal), so no velocity is implied by a trajectory's timing
    setpoint: np.ndarray

    @staticmethod
    def for_robot(robot: RobotConfig, names: Sequence[str], gripper_acceleration: float = 2.0) -> "BridgeLimits":
        """Arm joints: the limits the supervisor checks against; grippers: travel and speed."""
        by_name = {
            name: (j.min_position, j.max_position, j.max_velocity, j.max_acceleration)
            for name, j in robot_joint_limits(robot).items()
        }
        g = robot.arm.gripper
        grippers = {robot.gripper_joint_name(side) for side in SIDES}
        for name in grippers:
            by_name[name] = (0.0, g.stroke, g.velocity, gripper_acceleration)
        rows = np.array([by_name[n] for n in names], dtype=float)
        return BridgeLimits(*rows.T, setpoint=np.array([n in grippers for n in names]))


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
    INACTIVE = "inactive"  # connected, holding
    ACTIVE = "active"  # streaming commands
    ERROR = "error"


@dataclass
class BridgeStatus:
    mode: BridgeMode
    error: str = ""
    commands: int = 0
    rejected: int = 0
    last_rejection: str = ""
    watchdog: str = ""  # why the watchdog stopped the last trajectory; cleared by the next one taken
    watchdog_stops: int = 0
    latency: float = math.nan  # s from a trajectory's arrival to its first streamed target
    extra: dict[str, str] = field(default_factory=dict)


class Bridge:
    def __init__(
        self,
        backends: Sequence[ArmBackend],
        limits: BridgeLimits,
        joint_names: Sequence[str],
        max_step: float = 0.35,
        state_timeout: float = 0.5,
        command_timeout: float = 0.0,
    ):
        self.backends = list(backends)
        self.joint_names = list(joint_names)
        served = [n for b in self.backends for n in b.joint_names]
        if sorted(served) != sorted(self.joint_names):
            raise ValueError(f"backends serve {served}, the robot has {self.joint_names}")
        self._columns = [[self.joint_names.index(n) for n in b.joint_names] for b in self.backends]
        self.limits = limits
        self.max_step = max_step  # largest jump of a trajectory's first point from the command
        self.state_timeout = state_timeout  # a backend silent for longer is an error
        # a running trajectory with no heartbeat or new trajectory for longer is dropped; 0: no watchdog
        # (the nodes default to 0.5 s; in-process loops that cannot lose their command source use 0)
        self.command_timeout = command_timeout
        self.status = BridgeStatus(BridgeMode.UNCONFIGURED)
        self.measured = np.zeros(len(self.joint_names))
        self.velocities = np.zeros(len(self.joint_names))
        self.efforts = np.zeros(len(self.joint_names))
        self._follower: LimitedFollower | None = None
        self._trajectory: tuple[np.ndarray, TimedTrajectory, float] | None = None  # (columns, trajectory, arrival)
        self._last_reading = np.full(len(self.backends), -math.inf)
        self._last_command = -math.inf  # arrival of the last heartbeat or accepted trajectory
        self._reset_readings()

    def _reset_readings(self) -> None:
        self._previous: list[tuple[np.ndarray, float] | None] = [None] * len(self.backends)  # last raw reading
        self._suspect = np.zeros(len(self.backends), dtype=bool)  # an implausible reading not yet cleared

    # --- lifecycle -------------------------------------------------------------------------
    def configure(self, now: float) -> None:
        """Connect every driver; each backend's connect() returns only after its first reading."""
        for backend in self.backends:
            backend.connect()
        self.status = BridgeStatus(BridgeMode.INACTIVE)
        self._follower = None
        self._reset_readings()
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
        self._hold()
        self.status.mode = BridgeMode.INACTIVE

    def cleanup(self) -> None:
        for backend in self.backends:
            backend.disconnect()
        self.status = BridgeStatus(BridgeMode.UNCONFIGURED)

    def recover(self, now: float) -> None:
        """Explicit recovery from ERROR: clear driver faults and hold in INACTIVE. Raises BridgeError
        (and stays in ERROR) while a driver still reports a fault or the readings are not plausible;
        afterwards the follower starts from the measured position."""
        for backend in self.backends:
            backend.recover()
        self.read(now)
        self._follower = LimitedFollower(self.limits, self.measured)
        self._trajectory = None
        s = self.status
        self.status = BridgeStatus(
            BridgeMode.INACTIVE,
            commands=s.commands,
            rejected=s.rejected,
            last_rejection=s.last_rejection,
            watchdog_stops=s.watchdog_stops,
        )

    # --- commands --------------------------------------------------------------------------
    def set_trajectory(self, names: Sequence[str], times: np.ndarray, positions: np.ndarray, now: float) -> None:
        """Validate and take a trajectory (absolute times); it replaces the running one. A rejected
        trajectory (CommandRejected) stops the running one as well."""
        try:
            if self.status.mode != BridgeMode.ACTIVE:
                raise CommandRejected(f"bridge is {self.status.mode.value}, not active")
            unknown = [n for n in names if n not in self.joint_names]
            if unknown or len(set(names)) != len(names) or not names:
                raise CommandRejected(
                    f"joint_names: unknown or repeated {unknown or list(names)}; allowed: {', '.join(self.joint_names)}"
                )
            times = np.asarray(times, dtype=float)
            positions = np.asarray(positions, dtype=float)
            if times.ndim != 1 or not len(times):
                raise CommandRejected(f"expected a list of point times, got shape {times.shape}")
            if positions.ndim != 2 or positions.shape != (len(times), len(names)):
                raise CommandRejected(f"expected {len(times)} points x {len(names)} positions, got {positions.shape}")
            if not np.isfinite(positions).all():
                raise CommandRejected("non-finite target")
            self._check_times(times, now)
            columns = np.array([self.joint_names.index(n) for n in names])
            positions = self._inside_limits(names, columns, positions)
            commanded = self._follower.position[columns]
            self._check_start(names, columns, times, positions, commanded, now)
            self._check_velocities(names, columns, times, positions)
            trajectory = TimedTrajectory(times, positions, now, commanded)
        except (CommandRejected, ValueError) as exc:
            self.reject(str(exc))
            raise CommandRejected(str(exc)) from None
        self._trajectory = (columns, trajectory, now)
        self._last_command = now
        self.status.commands += 1
        self.status.watchdog = ""

    def reject(self, reason: str) -> None:
        """Count a refused command (here, or a malformed message refused by a node) and stop the
        running trajectory: the arms hold at the commanded position."""
        self._trajectory = None
        self.status.rejected += 1
        self.status.last_rejection = reason

    def heartbeat(self, now: float) -> None:
        """The supervisor is alive: `now` is the heartbeat's arrival on the bridge's clock (never its
        stamp, which says when it was sent, not that its sender still runs)."""
        self._last_command = now

    @staticmethod
    def _check_times(times: np.ndarray, now: float) -> None:
        if not np.isfinite(times).all():
            raise CommandRejected("non-finite point time")
        spacing = np.diff(times)
        if (spacing < MIN_SPACING - 1e-6).any():  # 1 us: float rounding of absolute times
            k = int(np.argmax(spacing < MIN_SPACING - 1e-6))
            raise CommandRejected(
                f"points {k} and {k + 1} are {spacing[k] * 1e3:.3f} ms apart (at least {MIN_SPACING * 1e3:.0f} ms)"
            )
        if times[-1] - now > MAX_HORIZON:
            raise CommandRejected(f"last point due {times[-1] - now:.1f} s after arrival (at most {MAX_HORIZON:.0f} s)")

    def _inside_limits(self, names: Sequence[str], columns: np.ndarray, positions: np.ndarray) -> np.ndarray:
        lo, hi = self.limits.lower[columns], self.limits.upper[columns]
        # a hold built from a reading at a limit may lie a hair outside it: clip that, refuse anything else
        tolerance = HOLD_TOLERANCE if len(positions) == 1 else 1e-9
        outside = (positions < lo - tolerance) | (positions > hi + tolerance)
        if outside.any():
            point, j = np.argwhere(outside)[0]
            raise CommandRejected(
                f"{names[j]}={positions[point, j]:.4f} at point {point} outside [{lo[j]:.4f}, {hi[j]:.4f}]"
            )
        return np.clip(positions, lo, hi)

    def _check_start(
        self,
        names: Sequence[str],
        columns: np.ndarray,
        times: np.ndarray,
        positions: np.ndarray,
        commanded: np.ndarray,
        now: float,
    ) -> None:
        """The point the trajectory starts from: its first point, or, when points are already past on
        arrival (a stale message), the position due now, which the follower would head for at once."""
        if times[0] >= now:
            start, what, lead = positions[0], "first point", times[0] - now
        else:
            start = np.array([np.interp(now, times, positions[:, j]) for j in range(len(names))])
            what, lead = f"point due now ({now - times[0]:.3f} s after the first)", 0.0
        jump = np.abs(start - commanded)
        if (jump > self.max_step).any():
            j = int(np.argmax(jump))
            raise CommandRejected(
                f"{names[j]}: {what} is {jump[j]:.3f} from the commanded position (max_step {self.max_step})"
            )
        speed = jump / (lead + FIRST_POINT_LEAD)
        self._refuse_speed(names, columns, speed[None, :], f"from the commanded position to the {what}")

    def _check_velocities(
        self, names: Sequence[str], columns: np.ndarray, times: np.ndarray, positions: np.ndarray
    ) -> None:
        if len(times) > 1:
            speed = np.abs(np.diff(positions, axis=0)) / np.diff(times)[:, None]
            self._refuse_speed(names, columns, speed, "between points {k} and {k1}")

    def _refuse_speed(self, names: Sequence[str], columns: np.ndarray, speed: np.ndarray, where: str) -> None:
        vmax = self.limits.max_velocity[columns]
        over = (speed > VELOCITY_MARGIN * vmax) & ~self.limits.setpoint[columns]
        if over.any():
            k, j = np.argwhere(over)[0]
            raise CommandRejected(
                f"{names[j]}: {speed[k, j]:.3f} rad/s {where.format(k=k, k1=k + 1)} exceeds max_velocity {vmax[j]:.3f}"
            )

    # --- the driver-rate loop ----------------------------------------------------------------
    def read(self, now: float) -> None:
        """Read every driver; faults of all of them are reported together, after every plausible
        reading has been taken."""
        faults = []
        for k, (backend, columns) in enumerate(zip(self.backends, self._columns)):
            state = backend.read(now)
            implausible = self._implausible(k, state)
            positions = np.asarray(state.positions, dtype=float)
            self._previous[k] = (
                (positions.copy(), state.stamp) if np.isfinite(positions).all() and math.isfinite(state.stamp) else None
            )
            self._suspect[k] = bool(implausible)
            if math.isfinite(state.stamp):
                self._last_reading[k] = state.stamp
            if implausible:
                faults.append(f"{backend.joint_names[0]}...: implausible reading, {implausible}")
                continue  # measured keeps the last plausible reading
            self.measured[columns] = positions
            self.velocities[columns] = state.velocities
            self.efforts[columns] = state.efforts
            if state.error:
                faults.append(f"{backend.joint_names[0]}...: {state.error}")
        silent = now - self._last_reading
        if (silent > self.state_timeout).any() and self.status.mode != BridgeMode.UNCONFIGURED:
            k = int(np.argmax(silent))
            faults.append(f"no state from the driver of {self.backends[k].joint_names[0]}... for {silent[k]:.2f} s")
        if faults:
            self._fail("; ".join(faults))

    def _implausible(self, k: int, state: ArmState) -> str:
        """Why backend k's reading cannot be where its arm is ('' when it can)."""
        names, columns = self.backends[k].joint_names, self._columns[k]
        q = np.asarray(state.positions, dtype=float)
        lo, hi = self.limits.lower[columns], self.limits.upper[columns]
        vmax = self.limits.max_velocity[columns]
        if q.shape != (len(columns),):
            return f"{q.size} positions for {len(columns)} joints"
        bad = ~np.isfinite(q)
        if bad.any():
            j = int(np.argmax(bad))
            return f"{names[j]} reads {q[j]}"
        slack = READING_RANGE_TOLERANCE * (hi - lo)
        outside = (q < lo - slack) | (q > hi + slack)
        if outside.any():
            j = int(np.argmax(outside))
            return f"{names[j]} reads {q[j]:.4f}, outside its range [{lo[j]:.4f}, {hi[j]:.4f}]"
        previous = self._previous[k]
        if previous is not None:
            dt = max(state.stamp - previous[1], 0.0)
            jump = np.abs(q - previous[0])
            over = jump > vmax * (READING_SPEED_FACTOR * dt + READING_SLACK)
            if over.any():
                j = int(np.argmax(over))
                return (
                    f"{names[j]} jumped {jump[j]:.4f} to {q[j]:.4f} in {dt * 1e3:.0f} ms (max_velocity {vmax[j]:.3f})"
                )
        if self._suspect[k]:
            # after an implausible reading the arm was held: a steady reading elsewhere is a lasting
            # glitch (or an arm that was moved), and recovering there would drive the arm to it
            held = self.measured[columns]
            drift = np.abs(q - held)
            if (drift > self.max_step).any():
                j = int(np.argmax(drift))
                return (
                    f"{names[j]} reads {q[j]:.4f}, {drift[j]:.3f} from {held[j]:.4f} where it was held "
                    f"(max_step {self.max_step}); if the arm really is there, restart the bridge"
                )
        return ""

    def step(self, now: float, dt: float) -> None:
        """Read the drivers and, when active, stream the next limited target."""
        self.read(now)
        if self.status.mode != BridgeMode.ACTIVE:
            return
        if self._trajectory is not None and self.command_timeout > 0:
            silence = now - self._last_command
            if silence > self.command_timeout:
                self._trajectory = None
                self.status.watchdog = f"no supervisor heartbeat for {silence:.2f} s: holding"
                self.status.watchdog_stops += 1
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

    def _hold(self) -> None:
        """Hold every arm. A backend's own hold() may use its latest reading: after an implausible one,
        that is re-sending the last commanded position instead (nothing, if none was commanded yet)."""
        for k, (backend, columns) in enumerate(zip(self.backends, self._columns)):
            try:
                if not self._suspect[k]:
                    backend.hold()
                elif self._follower is not None:
                    backend.command(self._follower.position[columns])
            except Exception:  # the connection may be the thing that failed
                pass

    def _fail(self, reason: str) -> None:
        if self.status.mode != BridgeMode.ERROR:
            self._hold()
        self.status.mode, self.status.error = BridgeMode.ERROR, reason
        self._trajectory = None
        raise BridgeError(reason)
