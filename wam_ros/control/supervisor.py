"""The safety and rollback supervisor as a state machine (ROS-free).

Every command to the arms leaves through `Supervisor`: action chunks are checked (limits.py)
and forwarded only in RUNNING; stale streams move to HOLD; an e-stop latches ESTOP until an
explicit reset; and when the predicted progress value drops below `peak - delta` the robot is
driven back to the checkpoint of the peak (ROLLING_BACK), the policy is asked for a fresh chunk
(RESAMPLING), and execution resumes with it (MV-WAM's value-guided rollback). Moving the arms
back does not move the world back: when a gripper held an object at the peak and has lost it
since, the peak cannot be returned to, and the best checkpoint from before that grasp is.

Times are ROS times in seconds, passed in by the caller; methods return the events the node
must publish or act on, in order.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from wam_ros.config import ConfigError, RobotConfig
from wam_ros.control.commands import Chunk, Command
from wam_ros.control.limits import (
    MAX_DT,
    MIN_DT,
    CheckConfig,
    ChunkRejected,
    WorkspaceBox,
    check_targets,
    move_duration,
    position_bounds,
    robot_joint_limits,
)
from wam_ros.control.trajectory import min_jerk_move
from wam_ros.robots.actions import EE_DELTA, ActionConverter, ActionError, joint_space_targets


class SupervisorMode(IntEnum):
    RUNNING = 0
    ROLLING_BACK = 1
    RESAMPLING = 2
    HOLD = 3
    ESTOP = 4


STREAMS = ("joint_states", "observations", "value", "chunks")
# s from the observation a chunk was conditioned on to its arrival; an older chunk (one held up on a
# network link that came back, a stalled policy) is refused: its plan was made for a scene that has
# moved on. 0 disables.
MAX_CHUNK_AGE = 1.0
# ROS time that goes back by more than this (sim /clock restarted or rewound, a stepped system
# clock) would make every earlier reading look fresh: the supervisor holds and waits for new ones.
# Smaller steps back (callers passing a slightly older `now`) make a stream look at most this much
# fresher than it is.
CLOCK_JUMP_TOLERANCE = 0.05  # s
# Commands within this distance outside a position limit (a reading's noise at a limit) are
# clipped into it; anything a check lets through beyond it is a bug and is refused.
LIMIT_TOLERANCE = 1e-6  # rad


@dataclass(frozen=True)
class RollbackConfig:
    enabled: bool = True
    delta: float = 0.20  # trigger when value < peak - delta
    # ... or value < peak - lost_grasp_delta when the grippers corroborate the drop: one that held an
    # object in its current grasp has closed on nothing while still commanded closed (it slipped out).
    # That never happens while a task goes well, so a small but sustained drop suffices: the shipped
    # demo policy's value dipped 0.07-0.11 below its peak after a slip.
    lost_grasp_delta: float = 0.05
    # ... for this many consecutive estimates: a trained bench model's expected value dipped by
    # 0.35-0.5 for single chunks in undisturbed episodes and was back at the next; a real setback stays
    consecutive: int = 2
    checkpoint_spacing: float = 0.5  # s between buffered checkpoints
    buffer_size: int = 64
    max_rollbacks: int = 3  # per episode, then HOLD for the operator
    cooldown: float = 2.0  # s after resuming during which no new rollback fires
    reach_tolerance: float = 0.05  # rad: checkpoint reached
    reach_timeout: float = 3.0  # s beyond the planned duration, then HOLD
    resample_timeout: float = 5.0  # s to wait for the resampled chunk, then HOLD
    may_open_grippers: bool = False  # may a rollback open a gripper that holds an object
    # A resampled chunk may start this far (rad) from where the rollback left the arm: the
    # supervisor plans a lead-in to its first target, as joint_trajectory_controller does.
    max_lead_in: float = 1.0
    value_range: tuple[float, float] = (0.0, 1.0)  # a value outside is a fault of the estimate, not progress

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"rollback.delta: expected a value in (0, 1), got {self.delta}")
        if not 0.0 < self.lost_grasp_delta < 1.0:
            raise ConfigError(f"rollback.lost_grasp_delta: expected a value in (0, 1), got {self.lost_grasp_delta}")
        if self.consecutive < 1 or self.buffer_size < 1 or self.max_rollbacks < 0:
            raise ConfigError("rollback: consecutive and buffer_size must be >= 1, max_rollbacks >= 0")
        if len(self.value_range) != 2 or not all(isinstance(v, (int, float)) for v in self.value_range):
            raise ConfigError(f"rollback.value_range: expected [low, high], got {list(self.value_range)}")
        low, high = self.value_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(f"rollback.value_range: expected two finite numbers low < high, got {self.value_range}")
        for name in (
            "checkpoint_spacing",
            "cooldown",
            "reach_tolerance",
            "reach_timeout",
            "resample_timeout",
            "max_lead_in",
        ):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"rollback.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class SupervisorConfig:
    arm_joints: tuple[str, ...]  # order of commands and checkpoints
    gripper_joints: tuple[str, ...]  # joint_states names, positions in m of finger travel
    gripper_max: tuple[float, ...]  # travel (m) that normalised opening 1.0 maps to
    checks: CheckConfig
    timeouts: dict[str, float] = field(
        default_factory=lambda: {"joint_states": 0.2, "observations": 0.5, "value": 1.0, "chunks": 1.0}
    )  # s; 0 disables
    max_chunk_age: float = MAX_CHUNK_AGE
    rollback: RollbackConfig = RollbackConfig()
    # a gripper "holds an object" when commanded closed (to at most grasp_command of its opening: a
    # learned policy closes to about 0-12 %, not exactly 0) and blocked between these openings (0..1),
    # at least grasp_blocked short of the command; a closed one that reached its command holds nothing
    grasp_opening: tuple[float, float] = (0.03, 0.8)
    grasp_command: float = 0.25
    grasp_blocked: float = 0.1

    def __post_init__(self) -> None:
        unknown = set(self.timeouts) - set(STREAMS)
        if unknown:
            raise ConfigError(f"timeouts: unknown stream(s) {sorted(unknown)}; allowed: {', '.join(STREAMS)}")
        for name, value in self.timeouts.items():
            if not value >= 0:
                raise ConfigError(f"timeouts.{name}: must be >= 0 s (0 disables), got {value}")
        if not self.max_chunk_age >= 0:
            raise ConfigError(f"max_chunk_age: must be >= 0 s (0 disables), got {self.max_chunk_age}")
        missing = set(self.arm_joints) - set(self.checks.limits)
        if missing:
            raise ConfigError(f"joint_limits: no limits for {sorted(missing)}")
        if len(self.gripper_joints) != len(self.gripper_max):
            raise ConfigError("gripper_joints and gripper_max must have the same length")
        for name in ("grasp_command", "grasp_blocked"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: expected a fraction of the opening in (0, 1), got {getattr(self, name)}")

    @staticmethod
    def for_robot(
        robot: RobotConfig,
        *,
        limit_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        clamp: bool = False,
        max_start_deviation: float = 0.35,
        workspace: WorkspaceBox | None = None,
        timeouts: dict[str, float] | None = None,
        rollback: RollbackConfig | None = None,
        max_chunk_age: float | None = None,
    ) -> "SupervisorConfig":
        """Arm and gripper joints, limits and gripper travel from the robot config."""
        arm = tuple(n for n in robot.joint_names if not n.endswith("_gripper"))
        grippers = tuple(n for n in robot.joint_names if n.endswith("_gripper"))
        travel = robot.joint_limits()
        checks = CheckConfig(
            robot_joint_limits(robot, limit_overrides),
            clamp=clamp,
            max_start_deviation=max_start_deviation,
            workspace=workspace,
        )
        extra = {
            k: v
            for k, v in (("timeouts", timeouts), ("rollback", rollback), ("max_chunk_age", max_chunk_age))
            if v is not None
        }
        return SupervisorConfig(arm, grippers, tuple(travel[g][1] for g in grippers), checks, **extra)


# --- events the node acts on ---------------------------------------------------------------
@dataclass
class Transition:
    old: SupervisorMode
    new: SupervisorMode
    reason: str


@dataclass
class Rejection:
    chunk_id: int
    reason: str


@dataclass
class Checkpoint:
    stamp: float
    arm: np.ndarray
    gripper: np.ndarray  # m
    chunk_id: int
    value: float
    holding: np.ndarray  # per gripper: an object between the fingers


@dataclass
class RollbackFired:
    detail: str
    value: float
    peak: float
    delta: float
    checkpoint: Checkpoint
    discarded_chunk_id: int
    index: int


@dataclass
class ResampleRequest:
    discarded_chunk_id: int
    joint_names: list[str]
    positions: np.ndarray


Event = Transition | Command | Rejection | RollbackFired | ResampleRequest


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig,
        forward_kinematics: Callable[[dict[str, float], Sequence[str]], dict[str, np.ndarray]] | None = None,
        converter: ActionConverter | None = None,
    ):
        self.config = config
        self._fk = forward_kinematics
        self._converter = converter  # end-effector deltas need the robot's kinematics
        self.mode = SupervisorMode.HOLD
        self.reason = "waiting for joint states and a first chunk"
        self._last_seen: dict[str, float] = {}
        self._q_arm: np.ndarray | None = None
        self._q_gripper: np.ndarray | None = None
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=256)  # (stamp, arm q) for delta chunks
        self._commanded_gripper = np.array(config.gripper_max, dtype=float)  # m, last command
        # value-guided rollback
        self.value = math.nan
        self.peak = -math.inf
        self._peak_checkpoint: Checkpoint | None = None
        # per gripper: when it first held an object since it was last commanded open (NaN: not in a grasp)
        self._grasped_at = np.full(len(config.gripper_joints), math.nan)
        self.checkpoints: deque[Checkpoint] = deque(maxlen=config.rollback.buffer_size)
        self._low_count = 0
        self.rollbacks = 0
        self.rollback_history: list[RollbackFired] = []
        self._resumed_at = -math.inf
        self._subtask = 0
        self._rollback_goal: np.ndarray | None = None  # the rollback's arm target, inside the limits
        self._rollback_done_at = 0.0
        self._resample_since = 0.0
        self._expected_chunk_id: int | None = None
        self._needs_operator = False  # an exhausted rollback budget holds until reset / new episode
        self._latest_time = -math.inf  # newest time seen, to notice a clock going back
        self._clock_stopped = ""  # why time is not trusted until it advances again
        self._last_value_chunk_id = 0
        # bookkeeping for diagnostics
        self.last_forwarded_chunk_id = 0
        self.last_rejected_chunk_id = 0
        self.last_rejection = ""
        self.forwarded = 0
        self.rejected = 0
        self.values_rejected = 0
        self.last_value_rejection = ""

    # --- inputs ----------------------------------------------------------------------------
    def update_joint_state(self, now: float, names: Sequence[str], positions: Sequence[float]) -> list[Event]:
        events = self._observe_clock(now)
        if len(positions) != len(names):
            return events + [Rejection(0, f"joint_states: {len(positions)} positions for {len(names)} names; ignored")]
        index = {n: i for i, n in enumerate(names)}
        needed = (*self.config.arm_joints, *self.config.gripper_joints)
        missing = [n for n in needed if n not in index]
        if missing:
            return events + [Rejection(0, f"joint_states lacks {missing}; ignored")]
        q = np.array([positions[index[n]] for n in needed], dtype=float)
        if not np.isfinite(q).all():
            return events + [Rejection(0, "joint_states holds non-finite positions; ignored")]
        n_arm = len(self.config.arm_joints)
        self._q_arm, self._q_gripper = q[:n_arm], q[n_arm:]
        self._history.append((now, self._q_arm.copy()))
        self._last_seen["joint_states"] = now
        return events

    def update_observation(self, now: float) -> list[Event]:
        events = self._observe_clock(now)
        self._last_seen["observations"] = now
        return events

    def update_value(self, now: float, value: float, chunk_id: int, subtask: int = 0) -> list[Event]:
        """One estimate per chunk: the node hears a chunk's value twice (ActionChunk.value and its
        ValueEstimate); only the first counts, or `consecutive` would count one dip twice."""
        events = self._observe_clock(now)
        if math.isnan(value):
            return events  # a model without a value head: nothing to track
        low, high = self.config.rollback.value_range
        if not low <= value <= high:
            self.values_rejected += 1
            self.last_value_rejection = f"value {value!r} of chunk {chunk_id} outside [{low}, {high}]; ignored"
            return events + [Rejection(chunk_id, self.last_value_rejection)]
        if chunk_id and chunk_id == self._last_value_chunk_id:
            return events
        self._last_value_chunk_id = chunk_id
        self._last_seen["value"] = now
        self.value = value
        if subtask != self._subtask:
            self._subtask = subtask
            self._reset_peak()
        if self.mode != SupervisorMode.RUNNING or self._q_arm is None:
            return events
        holding = self._holding()
        self._grasped_at[~self._commanded_closed()] = math.nan
        self._grasped_at[holding & np.isnan(self._grasped_at)] = now
        checkpoint = Checkpoint(now, self._q_arm.copy(), self._q_gripper.copy(), chunk_id, value, holding)
        if not self.checkpoints or now - self.checkpoints[-1].stamp >= self.config.rollback.checkpoint_spacing:
            self.checkpoints.append(checkpoint)
        if value >= self.peak:
            self.peak, self._peak_checkpoint, self._low_count = value, checkpoint, 0
            return events
        rb = self.config.rollback
        grasp_lost = bool((self._lost_grippers() & self._closed_on_nothing()).any())
        delta = min(rb.lost_grasp_delta, rb.delta) if grasp_lost else rb.delta
        if not rb.enabled or value >= self.peak - delta:
            self._low_count = 0
            return events
        self._low_count += 1
        if self._low_count < rb.consecutive or now - self._resumed_at < rb.cooldown:
            return events
        detail = (
            f"value {value:.2f} < peak {self.peak:.2f} - {'lost_grasp_delta' if grasp_lost else 'delta'} "
            f"{delta:.2f} for {self._low_count} consecutive estimate{'s' if self._low_count > 1 else ''}"
            f"{' (a gripper closed on nothing: its object slipped out)' if grasp_lost else ''}"
        )
        if self.rollbacks >= rb.max_rollbacks:
            self._needs_operator = True
            return events + self._enter(
                SupervisorMode.HOLD,
                f"rollback budget of {rb.max_rollbacks} exhausted ({detail}); operator: start a new episode or reset",
                now,
            )
        return events + self._start_rollback(now, detail, delta)

    def submit_chunk(self, now: float, chunk: Chunk) -> list[Event]:
        """Check a chunk and forward it as a Command. The chunk's own value counts first, so a dip
        stops the chunk that carries it (its ValueEstimate, heard separately, is not counted again)."""
        events = self._observe_clock(now)
        if not math.isnan(chunk.value):
            events += self.update_value(now, chunk.value, chunk.chunk_id)
        self._last_seen["chunks"] = now
        try:
            if self.mode == SupervisorMode.ESTOP:
                raise ChunkRejected("e-stop is latched; reset first")
            if self.mode in (SupervisorMode.ROLLING_BACK,):
                raise ChunkRejected("rolling back to a checkpoint")
            if (
                self.mode == SupervisorMode.RESAMPLING
                and self._expected_chunk_id is not None
                and chunk.chunk_id < self._expected_chunk_id
            ):
                raise ChunkRejected(f"waiting for the resampled chunk {self._expected_chunk_id}")
            if self._needs_operator:
                raise ChunkRejected(f"held for the operator: {self.reason}")
            if self._q_arm is None or not self._history:  # the history is empty after a clock jump
                raise ChunkRejected("no joint state yet")
            age = now - chunk.stamp
            if self.config.max_chunk_age and not age <= self.config.max_chunk_age:
                raise ChunkRejected(
                    f"stale: conditioned on an observation {age:.3f} s old "
                    f"(max_chunk_age {self.config.max_chunk_age} s)"
                )
            command = self._check(chunk)
        except ChunkRejected as exc:
            return events + self.reject(chunk.chunk_id, str(exc))
        if self.mode != SupervisorMode.RUNNING:
            stale = self._stale_streams(now)
            if stale:
                return events + self.reject(chunk.chunk_id, f"held: {stale}")
            if self.mode == SupervisorMode.RESAMPLING:
                self._resumed_at = now
            events += self._enter(SupervisorMode.RUNNING, f"chunk {chunk.chunk_id} accepted", now)
        command.start = now
        self.forwarded += 1
        self.last_forwarded_chunk_id = chunk.chunk_id
        n_arm = len(self.config.arm_joints)
        self._commanded_gripper = command.positions[-1, n_arm:].copy()
        events.append(command)
        return events

    def reject(self, chunk_id: int, reason: str) -> list[Event]:
        """Count a chunk as rejected; also for chunks the node could not even parse."""
        self.rejected += 1
        self.last_rejected_chunk_id, self.last_rejection = chunk_id, reason
        return [Rejection(chunk_id, reason)]

    def resample_reply(self, now: float, accepted: bool, chunk_id: int, message: str = "") -> list[Event]:
        if self.mode != SupervisorMode.RESAMPLING:
            return []
        if not accepted:
            return self._enter(SupervisorMode.HOLD, f"policy refused to resample: {message}", now)
        self._expected_chunk_id = chunk_id
        return []

    def estop(self, now: float, reason: str = "e-stop requested") -> list[Event]:
        if self.mode == SupervisorMode.ESTOP:
            return []
        return self._enter(SupervisorMode.ESTOP, reason, now)

    def hold(self, now: float, reason: str) -> list[Event]:
        """Hold position (deactivation, errors) without latching an e-stop."""
        if self.mode in (SupervisorMode.HOLD, SupervisorMode.ESTOP):
            return []
        return self._enter(SupervisorMode.HOLD, reason, now)

    def reset(self, now: float) -> list[Event]:
        """Leave ESTOP (or an operator HOLD): hold position until fresh streams and a new chunk."""
        if self.mode not in (SupervisorMode.ESTOP, SupervisorMode.HOLD):
            return []
        self._needs_operator = False
        return self._enter(SupervisorMode.HOLD, "reset by operator; waiting for a new chunk", now)

    def start_episode(self, now: float) -> list[Event]:
        """New episode: peak, checkpoints and the rollback budget start over."""
        self._needs_operator = False
        self.rollbacks = 0
        self.rollback_history.clear()
        self.checkpoints.clear()
        self._grasped_at[:] = math.nan
        self._reset_peak()
        return []

    def tick(self, now: float) -> list[Event]:
        """Watchdogs and rollback progress; call at the control rate."""
        events = self._observe_clock(now)
        if events or self.mode == SupervisorMode.ESTOP:
            return events
        stale = self._stale_streams(now)
        if self.mode == SupervisorMode.RUNNING and stale:
            return self._enter(SupervisorMode.HOLD, f"stale: {stale}", now)
        if self.mode in (SupervisorMode.ROLLING_BACK, SupervisorMode.RESAMPLING) and "joint_states" in stale:
            return self._enter(SupervisorMode.HOLD, f"stale during rollback: {stale}", now)
        if self.mode == SupervisorMode.ROLLING_BACK and self._q_arm is not None:
            errors = np.abs(self._q_arm - self._rollback_goal)
            error = float(np.max(errors))
            if now >= self._rollback_done_at and error <= self.config.rollback.reach_tolerance:
                self._resample_since = now
                self._expected_chunk_id = None
                events = self._enter(SupervisorMode.RESAMPLING, f"checkpoint reached (error {error:.3f} rad)", now)
                return events + [
                    ResampleRequest(self.last_forwarded_chunk_id, list(self.config.arm_joints), self._q_arm.copy())
                ]
            if now > self._rollback_done_at + self.config.rollback.reach_timeout:
                worst = int(np.argmax(errors))
                return self._enter(
                    SupervisorMode.HOLD,
                    f"checkpoint not reached (error {error:.3f} rad: "
                    f"{self.config.arm_joints[worst]} at {self._q_arm[worst]:.3f}, goal "
                    f"{self._rollback_goal[worst]:.3f})",
                    now,
                )
        if (
            self.mode == SupervisorMode.RESAMPLING
            and now - self._resample_since > self.config.rollback.resample_timeout
        ):
            return self._enter(SupervisorMode.HOLD, "no resampled chunk in time", now)
        return []

    def clock_jumped(self, now: float, jump: float) -> list[Event]:
        """The node's clock reported a jump of `jump` s (rclpy jump callbacks): a backward one, or
        a time source change, makes every freshness measured so far meaningless."""
        if jump > 0:
            return []  # forward: streams simply look stale
        self._latest_time = now - jump  # so that _observe_clock sees the jump exactly once
        return self._observe_clock(now)

    def clock_stopped(self, now: float, seconds: float) -> list[Event]:
        """The node's steady clock saw ROS time stand still for `seconds` (a hung /clock): every
        stream would look fresh forever. Hold, and take no chunk until time advances again."""
        self._clock_stopped = f"ROS time has not advanced for {seconds:.2f} s (is /clock still published?)"
        if self.mode in (SupervisorMode.HOLD, SupervisorMode.ESTOP):
            return []
        return self._enter(SupervisorMode.HOLD, self._clock_stopped, now)

    # --- internals ---------------------------------------------------------------------------
    def _observe_clock(self, now: float) -> list[Event]:
        if now >= self._latest_time - CLOCK_JUMP_TOLERANCE:
            if now > self._latest_time:
                self._clock_stopped = ""
            self._latest_time = max(self._latest_time, now)
            return []
        jump = now - self._latest_time
        self._latest_time = now
        # readings from before the jump are of unknown age: they must be seen again
        self._last_seen.clear()
        self._history.clear()
        for checkpoint in self.checkpoints:
            checkpoint.stamp += jump
        self._resumed_at += jump
        reason = f"clock jumped back {-jump:.3f} s; holding until fresh streams and a new chunk"
        if self.mode in (SupervisorMode.HOLD, SupervisorMode.ESTOP):
            self.reason = f"{self.reason}; {reason}"
            return [Transition(self.mode, self.mode, self.reason)]
        return self._enter(SupervisorMode.HOLD, reason, now)

    def _reset_peak(self) -> None:
        self.peak, self._peak_checkpoint, self._low_count = -math.inf, None, 0

    def _stale_streams(self, now: float) -> str:
        stale = [self._clock_stopped] if self._clock_stopped else []
        for stream, timeout in self.config.timeouts.items():
            if timeout <= 0 or (stream == "value" and not self.config.rollback.enabled):
                continue
            seen = self._last_seen.get(stream)
            if seen is None:
                if stream != "value":  # a policy without a value head never sends one
                    stale.append(f"{stream} never received")
            elif now - seen > timeout:
                stale.append(f"{stream} {now - seen:.2f} s old (> {timeout:.2f} s)")
        return ", ".join(stale)

    def _enter(self, mode: SupervisorMode, reason: str, now: float) -> list[Event]:
        old, self.mode, self.reason = self.mode, mode, reason
        events: list[Event] = [Transition(old, mode, reason)]
        if (
            mode in (SupervisorMode.HOLD, SupervisorMode.ESTOP)
            and old not in (SupervisorMode.HOLD, SupervisorMode.ESTOP)
            and self._q_arm is not None
        ):
            events.append(self._hold_command(now))
        return events

    def _hold_command(self, now: float) -> Command:
        row = np.concatenate([self._q_arm, self._commanded_gripper])
        return self._inside_limits(
            Command([*self.config.arm_joints, *self.config.gripper_joints], row[None, :], 0.0, now, "hold"), clip=True
        )

    def _inside_limits(self, command: Command, clip: bool) -> Command:
        """Every command leaves through here. Holds and rollbacks are built from readings, which may
        lie a little outside a limit (noise at a limit, a reading before a fault): they are clipped,
        so that a hold can always be executed. A chunk has been checked; should one still reach
        outside, that is refused, not forwarded."""
        cfg = self.config
        lo, hi = position_bounds(cfg.arm_joints, cfg.checks.limits)
        lo = np.concatenate([lo, np.zeros(len(cfg.gripper_joints))])
        hi = np.concatenate([hi, cfg.gripper_max])
        p = command.positions
        if not np.isfinite(p).all():
            raise ChunkRejected(f"{command.source}: non-finite target")
        if command.source != "hold" and not MIN_DT <= command.dt <= MAX_DT:
            raise ChunkRejected(f"{command.source}: dt {command.dt!r} s outside [{MIN_DT}, {MAX_DT}] s")
        outside = (p < lo - LIMIT_TOLERANCE) | (p > hi + LIMIT_TOLERANCE)
        if outside.any() and not clip:
            step, j = np.argwhere(outside)[0]
            raise ChunkRejected(
                f"{command.joint_names[j]}={p[step, j]:.4f} at step {step} outside [{lo[j]:.4f}, {hi[j]:.4f}]"
            )
        command.positions = np.clip(p, lo, hi)
        return command

    def _conditioning_state(self, stamp: float) -> np.ndarray:
        return min(self._history, key=lambda entry: abs(entry[0] - stamp))[1]

    def _check(self, chunk: Chunk) -> Command:
        cfg = self.config
        positions = np.asarray(chunk.positions, dtype=float)
        if positions.ndim != 2 or positions.shape[0] < 1 or positions.shape[1] != len(chunk.joint_names):
            raise ChunkRejected(
                f"positions: expected horizon x {len(chunk.joint_names)} values, got shape {positions.shape}"
            )
        if not np.isfinite(positions).all():
            step, column = np.argwhere(~np.isfinite(positions))[0]
            raise ChunkRejected(f"non-finite target for {chunk.joint_names[column]} at step {step}")
        if not MIN_DT <= chunk.dt <= MAX_DT:  # before anything divides by it
            raise ChunkRejected(f"dt: {chunk.dt!r} s outside [{MIN_DT}, {MAX_DT}] s per step")
        repeated = sorted({n for n in chunk.joint_names if list(chunk.joint_names).count(n) > 1})
        if repeated:
            raise ChunkRejected(f"joint_names: {repeated} given more than once")
        horizon = positions.shape[0]
        conditioning = dict(zip(cfg.arm_joints, self._conditioning_state(chunk.stamp)))
        try:
            if chunk.action_space == EE_DELTA and self._converter is not None:
                names, positions = self._converter.to_joint_positions(
                    chunk.action_space, chunk.joint_names, positions, conditioning
                )
            else:
                names = list(chunk.joint_names)
                positions = joint_space_targets(chunk.action_space, names, positions, conditioning)
        except ActionError as exc:
            raise ChunkRejected(str(exc)) from None
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:  # IK on absurd targets
            raise ChunkRejected(
                f"action_space {chunk.action_space}: cannot turn the chunk into joint targets "
                f"({type(exc).__name__}: {exc})"
            ) from None
        unknown = [n for n in names if n not in cfg.arm_joints]
        if unknown:
            raise ChunkRejected(f"joint_names: unknown {unknown}; allowed: {', '.join(cfg.arm_joints)}")
        if sorted(names) != sorted(cfg.arm_joints):
            missing = [n for n in cfg.arm_joints if n not in names]
            raise ChunkRejected(f"joint_names: missing {missing} (a chunk commands every arm joint)")
        arm = positions[:, [names.index(n) for n in cfg.arm_joints]]
        gripper = np.tile(self._commanded_gripper, (horizon, 1))  # unchanged unless commanded
        if chunk.gripper_names:
            g = np.asarray(chunk.gripper, dtype=float).reshape(horizon, -1) if chunk.gripper is not None else None
            if g is None or g.shape[1] != len(chunk.gripper_names):
                raise ChunkRejected(f"gripper: expected horizon x {len(chunk.gripper_names)} values")
            for column, name in enumerate(chunk.gripper_names):
                if name not in cfg.gripper_joints:
                    raise ChunkRejected(f"gripper_names: unknown {name!r}; allowed: {', '.join(cfg.gripper_joints)}")
                values = g[:, column]
                if not np.isfinite(values).all():
                    raise ChunkRejected(f"gripper {name}: non-finite opening")
                if ((values < 0) | (values > 1)).any():
                    if not cfg.checks.clamp:
                        raise ChunkRejected(
                            f"gripper {name}: opening {float(values[(values < 0) | (values > 1)][0])!r} outside [0, 1]"
                        )
                    values = np.clip(values, 0.0, 1.0)
                i = cfg.gripper_joints.index(name)
                gripper[:, i] = values * cfg.gripper_max[i]
        if self.mode == SupervisorMode.RESAMPLING:
            arm, gripper = self._lead_in(arm, gripper, chunk.dt)
        checked = check_targets(arm, cfg.arm_joints, chunk.dt, self._q_arm, cfg.checks, self._fk)
        return self._inside_limits(
            Command(
                [*cfg.arm_joints, *cfg.gripper_joints],
                np.hstack([checked.positions, gripper]),
                chunk.dt,
                0.0,
                f"chunk {chunk.chunk_id}",
            ),
            clip=False,
        )

    def _lead_in(self, arm: np.ndarray, gripper: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """A resampled chunk starts from the policy's idea of the state, which after a rollback can
        lie beyond max_start_deviation from where the arm stopped: prepend a limit-respecting
        minimum-jerk move to its first target (the grippers keep their first command meanwhile).
        The whole trajectory then passes the same checks as any chunk."""
        cfg = self.config
        deviation = float(np.max(np.abs(arm[0] - self._q_arm)))
        if deviation <= cfg.checks.max_start_deviation:
            return arm, gripper
        if deviation > cfg.rollback.max_lead_in:
            raise ChunkRejected(
                f"resampled chunk starts {deviation:.3f} rad from the arm (lead-in allowed up to "
                f"rollback.max_lead_in {cfg.rollback.max_lead_in})"
            )
        duration = move_duration(arm[0] - self._q_arm, [cfg.checks.limits[n] for n in cfg.arm_joints])
        path = np.vstack([self._q_arm, min_jerk_move(self._q_arm, arm[0], max(duration, dt), dt)])
        return np.vstack([path, arm[1:]]), np.vstack([np.tile(gripper[0], (len(path) - 1, 1)), gripper])

    def _commanded_closed(self) -> np.ndarray:
        return self._commanded_gripper / np.array(self.config.gripper_max) <= self.config.grasp_command

    def _blocked(self) -> np.ndarray:
        """Per gripper: the fingers stopped at least grasp_blocked (of the opening) short of the command."""
        gripper_max = np.array(self.config.gripper_max)
        return (self._q_gripper - self._commanded_gripper) / gripper_max >= self.config.grasp_blocked

    def _holding(self) -> np.ndarray:
        """Per gripper: commanded closed but blocked part-way open, so an object is between the fingers."""
        lo, hi = self.config.grasp_opening
        opening = self._q_gripper / np.array(self.config.gripper_max)
        return self._commanded_closed() & self._blocked() & (opening >= lo) & (opening <= hi)

    def _closed_on_nothing(self) -> np.ndarray:
        """Per gripper: commanded closed and the fingers got there: nothing is between them."""
        return self._commanded_closed() & ~self._blocked()

    def _lost_grippers(self) -> np.ndarray:
        """Per gripper: it held an object in its current grasp or at the peak, and holds nothing now
        (dropped, slipped out, knocked out). A value that misses the loss can set a new peak after it."""
        return (~np.isnan(self._grasped_at) | self._peak_checkpoint.holding) & ~self._holding()

    def _choose_rollback_checkpoint(self) -> tuple[Checkpoint, str]:
        """The peak's checkpoint, unless a gripper lost its object: then the checkpoint of highest
        value, the latest of equals, from before that grasp (before the gripper first held it, and
        where it held nothing), which makes it the new peak. Without one, the peak's."""
        peak = self._peak_checkpoint
        lost = self._lost_grippers()
        started = np.where(np.isnan(self._grasped_at), math.inf, self._grasped_at)[lost]
        before_grasp = [c for c in self.checkpoints if not (c.holding & lost).any() and (c.stamp < started).all()]
        if not lost.any() or not before_grasp:
            return peak, ""
        target = max(reversed(before_grasp), key=lambda c: c.value)
        self.peak, self._peak_checkpoint = target.value, target
        return target, f"; a gripper lost its object, back to before its grasp (value {target.value:.2f})"

    def _start_rollback(self, now: float, detail: str, delta: float) -> list[Event]:
        target, reason = self._choose_rollback_checkpoint()
        detail += reason
        cfg = self.config
        lo, hi = position_bounds(cfg.arm_joints, cfg.checks.limits)
        # a checkpoint's reading may lie outside a limit (noise at a limit): return to inside it
        goal, start = np.clip(target.arm, lo, hi), np.clip(self._q_arm, lo, hi)
        duration = move_duration(goal - start, [cfg.checks.limits[n] for n in cfg.arm_joints])
        dt = 0.02
        arm_path = min_jerk_move(start, goal, max(duration, dt), dt)
        # A gripper holding an object keeps it through the arm move and is restored after (never
        # opened unless allowed). An empty one is restored before the arm moves: moving back with
        # closed fingers onto where a slipped object fell pushed it away in the benchmark.
        holding = self._holding()
        held = self._commanded_gripper.copy()
        restored = target.gripper.copy()
        if not cfg.rollback.may_open_grippers:
            restored = np.where(holding & (restored > self._q_gripper), held, restored)
        during_move = np.where(holding, held, restored)
        steps = max(1, math.ceil(0.5 / dt))
        ramp = np.linspace(1.0 / steps, 1.0, steps)[:, None]
        phases = [np.hstack([arm_path, np.tile(during_move, (len(arm_path), 1))])]
        if np.any(during_move != held):  # empty grippers first, the arm still
            phases.insert(0, np.hstack([np.tile(start, (steps, 1)), held + ramp * (during_move - held)]))
        if np.any(restored != during_move):  # holding grippers last, the arm arrived
            phases.append(np.hstack([np.tile(goal, (steps, 1)), during_move + ramp * (restored - during_move)]))
        rows = np.vstack(phases)
        self.rollbacks += 1
        fired = RollbackFired(
            detail, self.value, self.peak, delta, target, self.last_forwarded_chunk_id, self.rollbacks
        )
        self.rollback_history.append(fired)
        self._rollback_goal = goal
        self._rollback_done_at = now + len(rows) * dt
        self._commanded_gripper = restored
        self._low_count = 0
        events = self._enter(SupervisorMode.ROLLING_BACK, detail, now)
        events += [
            fired,
            self._inside_limits(Command([*cfg.arm_joints, *cfg.gripper_joints], rows, dt, now, "rollback"), clip=True),
        ]
        return events
