"""Joint limits and the checks every action chunk passes before it reaches an arm (ROS-free).

Limit names follow ros2_control's `joint_limits` parameters (has_position_limits,
min_position, max_velocity, ...). Velocity, acceleration and jerk are finite differences of
consecutive chunk targets over the chunk's dt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from wam_ros.config import ConfigError, RobotConfig
from wam_ros.control.trajectory import min_jerk_duration


@dataclass(frozen=True)
class JointLimits:
    has_position_limits: bool = True
    min_position: float = -math.inf
    max_position: float = math.inf
    has_velocity_limits: bool = True
    max_velocity: float = math.inf
    has_acceleration_limits: bool = True
    max_acceleration: float = math.inf
    has_jerk_limits: bool = False
    max_jerk: float = math.inf

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            # YAML hands over whatever was written: a string limit would only fail on the first chunk
            wanted = bool if name.startswith("has_") else (int, float)
            if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
                kind = "true or false" if wanted is bool else "a number"
                raise ConfigError(f"{name}: expected {kind}, got {value!r}")
            if wanted is not bool and math.isnan(value):
                raise ConfigError(f"{name}: expected a number, got NaN")
        if self.has_position_limits and not self.min_position < self.max_position:
            raise ConfigError(f"min_position ({self.min_position}) must be below max_position ({self.max_position})")
        for name in ("max_velocity", "max_acceleration", "max_jerk"):
            if getattr(self, f"has_{name[4:]}_limits") and not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


LIMIT_FIELDS = tuple(JointLimits.__dataclass_fields__)


def robot_joint_limits(
    robot: RobotConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, JointLimits]:
    """Arm joint limits from the robot config, optionally overridden per joint with
    ros2_control names, e.g. {"left_joint4": {"max_velocity": 1.0, "has_jerk_limits": True}}."""
    limits = {}
    for side in ("left", "right"):
        for spec, name in zip(robot.arm.joints, robot.arm_joint_names(side)):
            limits[name] = JointLimits(
                True, spec.lower, spec.upper, True, spec.velocity, True, spec.acceleration, True, spec.jerk
            )
    for name, values in (overrides or {}).items():
        if name not in limits:
            raise ConfigError(f"joint_limits.{name}: unknown joint; allowed: {', '.join(limits)}")
        unknown = set(values) - set(LIMIT_FIELDS)
        if unknown:
            raise ConfigError(
                f"joint_limits.{name}: unknown field(s) {sorted(unknown)}; allowed: {', '.join(LIMIT_FIELDS)}"
            )
        try:
            limits[name] = replace(limits[name], **values)
        except ConfigError as exc:
            raise ConfigError(f"joint_limits.{name}: {exc}") from None
    return limits


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box (base frame) that the named frames (e.g. the TCPs) must stay in."""

    frames: tuple[str, ...]
    minimum: tuple[float, float, float]
    maximum: tuple[float, float, float]

    def __post_init__(self) -> None:
        for name in ("minimum", "maximum"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ConfigError(f"workspace.{name[:3]}: expected 3 finite numbers (x, y, z in m), got {list(values)}")
        if not all(lo < hi for lo, hi in zip(self.minimum, self.maximum)):
            raise ConfigError(
                f"workspace: min {list(self.minimum)} must be below max {list(self.maximum)} on every axis"
            )


@dataclass(frozen=True)
class CheckConfig:
    limits: dict[str, JointLimits]
    clamp: bool = False  # clamp positions / velocities instead of rejecting
    max_start_deviation: float = 0.35  # rad: chunk's first target vs the current state
    workspace: WorkspaceBox | None = None


# A chunk's step: below 1 ms no arm tracks it and finite differences overflow; above 1 s a "chunk"
# is a plan, not a control step. The whole trajectory stays within MAX_TRAJECTORY_DURATION, so
# every time_from_start fits a message's 32-bit seconds with room to spare.
MIN_DT, MAX_DT = 1e-3, 1.0
MAX_TRAJECTORY_DURATION = 60.0


class ChunkRejected(ValueError):
    """The chunk violates a check; the message says which joint, step and limit."""


@dataclass
class CheckedTargets:
    positions: np.ndarray  # horizon x joints, in CheckConfig.limits order restricted to the chunk's joints
    clamped: list[str] = field(default_factory=list)


def _finite_differences(p: np.ndarray, dt: float, order: int) -> np.ndarray:
    return np.diff(p, n=order, axis=0) / dt**order if len(p) > order else np.zeros((0, p.shape[1]))


def _worst(values: np.ndarray, bound: np.ndarray) -> tuple[int, int] | None:
    excess = np.abs(values) - bound
    if excess.size == 0 or (excess <= 1e-9).all():
        return None
    step, joint = np.unravel_index(int(np.argmax(excess)), excess.shape)
    return int(step), int(joint)


def _braking_speed(distance: np.ndarray, amax: np.ndarray, dt: float) -> np.ndarray:
    """The largest speed from which a joint stops within `distance`: v dt + v^2 / (2 a) + v dt <= D."""
    distance = np.maximum(distance, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        limited = -2 * amax * dt + np.sqrt(4 * amax**2 * dt**2 + 2 * amax * distance)
    return np.where(np.isfinite(amax), np.maximum(limited, 0.0), distance / dt)


def _track_within_limits(
    p: np.ndarray,
    dt: float,
    bounds: tuple[np.ndarray, np.ndarray],
    vmax: np.ndarray,
    amax: np.ndarray,
    jmax: np.ndarray,
) -> np.ndarray:
    """Follow the targets step by step from the first one, with the velocity, acceleration and
    jerk of the finite differences (as checked below) bounded and the positions inside `bounds`: a
    rough chunk becomes the nearest motion the limits allow, lagging where it would have jumped.
    It slows down early enough to stop at a position limit; where a limit still cuts a step short,
    the checks that follow decide."""
    q = p.copy()
    v_prev = a_prev = None
    lo_q, hi_q = bounds
    for k in range(1, len(p)):
        v = np.clip((p[k] - q[k - 1]) / dt, -vmax, vmax)
        # no faster than allows braking (at max_acceleration, with a step of margin) before a position limit
        v = np.clip(v, -_braking_speed(q[k - 1] - lo_q, amax, dt), _braking_speed(hi_q - q[k - 1], amax, dt))
        if v_prev is not None:
            lo, hi = -amax, amax
            if a_prev is not None:
                lo, hi = np.maximum(lo, a_prev - jmax * dt), np.minimum(hi, a_prev + jmax * dt)
            v = np.clip(v_prev + np.clip((v - v_prev) / dt, lo, hi) * dt, -vmax, vmax)
        q[k] = np.clip(q[k - 1] + v * dt, *bounds)
        v = (q[k] - q[k - 1]) / dt
        if v_prev is not None:
            a_prev = (v - v_prev) / dt
        v_prev = v
    return q


def move_duration(distance: np.ndarray, limits: Sequence[JointLimits]) -> float:
    """Shortest minimum-jerk move of `distance` (per joint) that stays inside every enabled limit."""

    def bound(flag: str, value: str) -> np.ndarray:
        return np.array([getattr(j, value) if getattr(j, flag) else math.inf for j in limits])

    return min_jerk_duration(
        distance,
        bound("has_velocity_limits", "max_velocity"),
        bound("has_acceleration_limits", "max_acceleration"),
        bound("has_jerk_limits", "max_jerk"),
    )


def position_bounds(names: Sequence[str], limits: Mapping[str, JointLimits]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper position limits of `names` (infinite where a joint has none)."""
    lim = [limits[n] for n in names]
    return (
        np.array([j.min_position if j.has_position_limits else -np.inf for j in lim]),
        np.array([j.max_position if j.has_position_limits else np.inf for j in lim]),
    )


def check_targets(
    positions: np.ndarray,
    names: Sequence[str],
    dt: float,
    current: np.ndarray,
    config: CheckConfig,
    forward_kinematics: Callable[[dict[str, float], Sequence[str]], dict[str, np.ndarray]] | None = None,
) -> CheckedTargets:
    """Check (and, where configured, clamp) a horizon x joints matrix of absolute joint targets.

    `current` holds the measured positions of `names`. Raises ChunkRejected with the reason.
    """
    if not MIN_DT <= dt <= MAX_DT:  # also False for NaN
        raise ChunkRejected(f"dt: {dt!r} s outside [{MIN_DT}, {MAX_DT}] s per step")
    p = np.array(positions, dtype=float)
    if (len(p) - 1) * dt > MAX_TRAJECTORY_DURATION:
        raise ChunkRejected(f"horizon: {len(p)} steps of {dt} s last longer than {MAX_TRAJECTORY_DURATION} s")
    if not np.isfinite(p).all():
        step, joint = np.argwhere(~np.isfinite(p))[0]
        raise ChunkRejected(f"non-finite target for {names[joint]} at step {step}")
    lim = [config.limits[n] for n in names]
    lo, hi = position_bounds(names, config.limits)
    vmax = np.array([j.max_velocity if j.has_velocity_limits else np.inf for j in lim])
    amax = np.array([j.max_acceleration if j.has_acceleration_limits else np.inf for j in lim])
    jmax = np.array([j.max_jerk if j.has_jerk_limits else np.inf for j in lim])
    clamped = []

    deviation = np.abs(p[0] - current)
    if (deviation > config.max_start_deviation).any():
        j = int(np.argmax(deviation))
        raise ChunkRejected(
            f"{names[j]}: first target {p[0, j]:.4f} is {deviation[j]:.3f} rad from the current "
            f"position {current[j]:.4f} (max_start_deviation {config.max_start_deviation})"
        )

    outside = (p < lo - 1e-9) | (p > hi + 1e-9)
    if outside.any():
        step, j = np.argwhere(outside)[0]
        if not config.clamp:
            raise ChunkRejected(f"{names[j]}={p[step, j]:.4f} at step {step} outside [{lo[j]:.4f}, {hi[j]:.4f}]")
        p = np.clip(p, lo, hi)
        clamped.append("position")

    if config.clamp and any(
        _worst(_finite_differences(p, dt, order), bound) is not None
        for order, bound in ((1, vmax), (2, amax), (3, jmax))
    ):
        p = _track_within_limits(p, dt, (lo, hi), vmax, amax, jmax)
        clamped.append("velocity/acceleration/jerk")
    for order, bound, what, unit in (
        (1, vmax, "velocity", "rad/s"),
        (2, amax, "acceleration", "rad/s^2"),
        (3, jmax, "jerk", "rad/s^3"),
    ):
        d = _finite_differences(p, dt, order)
        worst = _worst(d, bound)
        if worst is not None:
            step, j = worst
            raise ChunkRejected(
                f"{names[j]}: {what} {abs(d[step, j]):.3g} {unit} at step {step + order} exceeds "
                f"max_{what} {bound[j]:.3g}" + (" (after clamping)" if clamped else "")
            )

    if config.workspace is not None and forward_kinematics is not None:
        box_lo, box_hi = np.array(config.workspace.minimum), np.array(config.workspace.maximum)
        for step, row in enumerate(p):
            poses = forward_kinematics(dict(zip(names, row)), config.workspace.frames)
            for frame, pose in poses.items():
                xyz = pose[:3, 3]
                if (xyz < box_lo).any() or (xyz > box_hi).any():
                    raise ChunkRejected(
                        f"{frame} at step {step} reaches {np.round(xyz, 3).tolist()} outside the "
                        f"workspace box {list(config.workspace.minimum)}..{list(config.workspace.maximum)}"
                    )
    return CheckedTargets(p, clamped)
