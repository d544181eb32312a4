"""supervisor_node: every command to the arms passes through here (lifecycle node).

In:  joint_states, observations (MultiViewRGBD, freshness only), policy/chunk (ActionChunk),
     policy/value (ValueEstimate), estop (std_msgs/Bool, True latches the e-stop).
Out: joint_trajectory (trajectory_msgs/JointTrajectory to the arm bridge / simulator),
     supervisor/heartbeat (std_msgs/Header at the control rate while active: the bridges hold
     the arms when it stops), supervisor/state (SupervisorState, latched), supervisor/rollback
     (RollbackEvent), /diagnostics.
Services: ~/estop, ~/reset, ~/start_episode (std_srvs/Trigger); calls policy/resample.

configure validates every parameter and builds the core (wam_ros.control.supervisor); with
autostart a rejected configuration ends the process with exit code 2. activate starts
forwarding; deactivate holds the arms where they are.

Time: freshness is judged on ROS time (sim time in simulation), so the watchdog tick runs on the
steady clock and holds when ROS time goes back (rclpy jump callbacks, and the core's own check)
or stops advancing for clock_timeout. No callback may end the node: a malformed message is
rejected with its reason, and an unexpected exception holds the arms and is reported.
"""

from __future__ import annotations

import functools
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from wam_ros.config import ROBOTS, ConfigError, load_robot_config, load_yaml
from wam_ros.control.commands import Chunk, Command
from wam_ros.control.limits import ChunkRejected, WorkspaceBox
from wam_ros.control.supervisor import (
    MAX_CHUNK_AGE,
    Rejection,
    ResampleRequest,
    RollbackConfig,
    RollbackFired,
    Supervisor,
    SupervisorConfig,
    SupervisorMode,
    Transition,
)
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.msg import ActionChunk, MultiViewRGBD, RollbackEvent, SupervisorState, ValueEstimate
from wam_ros.robots.actions import ActionConverter
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import from_time, to_time, trajectory_arrays
from wam_ros.ros.lifecycle import SafeLifecycleNode
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import (
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    HEARTBEAT_QOS,
    HEARTBEAT_TOPIC,
    IMAGE_QOS,
    JOINT_STATE_QOS,
    LATCHED_QOS,
)
from wam_ros.srv import Resample

_ROLLBACK = RollbackConfig()  # the core's defaults are the parameters' defaults


def _timeout(default: float, stream: str):
    return param(default, f"Freshness timeout of {stream} (s); 0 disables", range_=(0.0, 60.0))


@dataclass(frozen=True)
class WorkspaceParams:
    enabled: bool = param(False, "Check the TCPs against a workspace box")
    min: list[float] = param([-1.0, -1.0, -0.05], "Workspace box minimum x, y, z (m, base)")
    max: list[float] = param([1.5, 1.0, 1.5], "Workspace box maximum x, y, z (m, base)")


@dataclass(frozen=True)
class TimeoutParams:
    joint_states: float = _timeout(0.2, "joint_states")
    observations: float = _timeout(0.5, "observations")
    value: float = _timeout(1.0, "value")
    chunks: float = _timeout(1.0, "chunks")


@dataclass(frozen=True)
class RollbackParams:
    enabled: bool = param(_ROLLBACK.enabled, "Value-guided rollback on/off")
    delta: float = param(_ROLLBACK.delta, "Tolerance delta: roll back when value < peak - delta")
    lost_grasp_delta: float = param(
        _ROLLBACK.lost_grasp_delta,
        "Smaller delta used while a gripper that held an object in its current grasp has closed on nothing (a slip)",
    )
    consecutive: int = param(_ROLLBACK.consecutive, "Consecutive low values needed to trigger")
    checkpoint_spacing: float = param(_ROLLBACK.checkpoint_spacing, "Seconds between buffered checkpoints")
    buffer_size: int = param(_ROLLBACK.buffer_size, "Checkpoints kept")
    max_rollbacks: int = param(_ROLLBACK.max_rollbacks, "Rollbacks per episode before HOLD for the operator")
    cooldown: float = param(_ROLLBACK.cooldown, "Seconds after resuming without a new rollback")
    reach_tolerance: float = param(_ROLLBACK.reach_tolerance, "Checkpoint reached within this joint error (rad)")
    reach_timeout: float = param(_ROLLBACK.reach_timeout, "Seconds beyond the planned return before HOLD")
    resample_timeout: float = param(_ROLLBACK.resample_timeout, "Seconds to wait for the resampled chunk")
    may_open_grippers: bool = param(_ROLLBACK.may_open_grippers, "Allow a rollback to open a gripper holding an object")
    max_lead_in: float = param(
        _ROLLBACK.max_lead_in,
        "Largest distance (rad) of a resampled chunk's start from the arm that a planned lead-in bridges",
    )
    value_range: list[float] = param(
        list(_ROLLBACK.value_range), "Valid range [low, high] of value estimates; others are rejected"
    )


@dataclass(frozen=True)
class SupervisorParams:
    robot: str = param("agilex", "Robot setup (joint names and limits)", choices=ROBOTS)
    autostart: bool = param(True, "Configure and activate at start-up")
    control_rate: float = param(50.0, "Watchdog and rollback tick rate (Hz)", range_=(1.0, 1000.0))
    clamp: bool = param(False, "Clamp positions and velocities into the limits instead of rejecting")
    max_start_deviation: float = param(
        0.35, "Largest allowed distance of a chunk's first target from the current position (rad)", range_=(0.0, 6.3)
    )
    max_chunk_age: float = param(
        MAX_CHUNK_AGE,
        "Refuse a chunk conditioned on an observation older than this (s): "
        "one held up on a link that came back; 0 disables",
        range_=(0.0, 60.0),
    )
    joint_limits_file: str = param("", "YAML with ros2_control joint_limits overrides per joint (empty: robot config)")
    clock_timeout: float = param(
        1.0,
        "Hold when ROS time (e.g. /clock) has not advanced for this many seconds of steady time",
        range_=(0.05, 60.0),
    )
    workspace: WorkspaceParams = field(default_factory=WorkspaceParams)
    timeouts: TimeoutParams = field(default_factory=TimeoutParams)
    rollback: RollbackParams = field(default_factory=RollbackParams)


def _duration(seconds: float) -> DurationMsg:
    stamp = to_time(seconds)
    return DurationMsg(sec=stamp.sec, nanosec=stamp.nanosec)


def chunk_from_msg(msg: ActionChunk) -> Chunk:
    """The core's view of an ActionChunk; raises ChunkRejected naming what does not fit."""
    horizon, n_joints, n_grippers = int(msg.horizon), len(msg.joint_names), len(msg.gripper_names)
    if horizon < 1:
        raise ChunkRejected(f"horizon: expected >= 1 steps, got {horizon}")
    if n_joints == 0:
        raise ChunkRejected("joint_names: empty")
    if len(msg.positions) != horizon * n_joints:
        raise ChunkRejected(f"positions: {len(msg.positions)} values do not fill horizon {horizon} x {n_joints} joints")
    if len(msg.gripper) != horizon * n_grippers:
        raise ChunkRejected(f"gripper: {len(msg.gripper)} values do not fill horizon {horizon} x {n_grippers} grippers")
    positions = np.asarray(msg.positions, dtype=float).reshape(horizon, n_joints)
    gripper = np.asarray(msg.gripper, dtype=float).reshape(horizon, n_grippers) if n_grippers else None
    return Chunk(
        int(msg.chunk_id),
        from_time(msg.header.stamp),
        list(msg.joint_names),
        positions,
        float(msg.dt),
        list(msg.gripper_names),
        gripper,
        int(msg.action_space),
        int(msg.expert),
        float(msg.value),
    )


def trajectory_msg(command: Command) -> JointTrajectory:
    """The JointTrajectory of a command, checked after conversion: what the bridge will read back
    (32-bit seconds, integer nanoseconds) must be the command's points at the command's times."""
    msg = JointTrajectory()
    msg.header.stamp = to_time(command.start)
    msg.joint_names = command.joint_names
    offsets = command.offsets()
    try:
        msg.points = [
            JointTrajectoryPoint(positions=row.tolist(), time_from_start=_duration(t))
            for t, row in zip(offsets, command.positions)
        ]
        names, times, points = trajectory_arrays(msg, command.start)
    except (ValueError, AssertionError, OverflowError) as exc:  # the message classes assert their field ranges
        raise ChunkRejected(f"{command.source}: not representable as a JointTrajectory: {exc}") from None
    start = from_time(msg.header.stamp) or command.start
    if (
        names != list(command.joint_names)
        or not np.array_equal(points, command.positions)
        or not np.allclose(times - start, offsets, rtol=0.0, atol=1e-6)
    ):
        raise ChunkRejected(f"{command.source}: the JointTrajectory does not carry the checked points and times")
    return msg


def _guarded(callback: Callable) -> Callable:
    """No message, service call or timer may end the node: an unexpected exception is reported,
    counted, and holds the arms."""

    @functools.wraps(callback)
    def run(self: "SupervisorNode", *args: Any) -> Any:
        try:
            return callback(self, *args)
        except Exception as exc:  # noqa: BLE001 (the point: whatever it is, hold)
            self.internal_errors += 1
            self.get_logger().error(
                f"{callback.__name__}: {exc!r}; holding\n{traceback.format_exc()}", throttle_duration_sec=1.0
            )
            if self.core is not None:
                try:
                    self._dispatch(self.core.hold(self._now(), f"internal error in {callback.__name__}: {exc!r}"))
                except Exception:  # noqa: BLE001 (the bridges' command watchdog is the last line)
                    pass
            response = args[-1] if len(args) == 2 else None  # a service's (request, response)
            if response is not None and hasattr(response, "success"):
                response.success, response.message = False, f"internal error: {exc!r}"
            return response

    return run


class SupervisorNode(SafeLifecycleNode):
    def __init__(self, node_name: str = "supervisor", **kwargs):
        super().__init__(node_name, **kwargs)
        self.core: Supervisor | None = None
        self._active = False
        self._configure_error = ""
        self.internal_errors = 0
        self.clock_jumps = 0
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._ros_time_advanced = (-math.inf, time.monotonic())  # (ROS time, steady time when it last changed)
        self.params = declare_params(self, SupervisorParams)
        if self.params.autostart:
            # a launch file or bring-up without a lifecycle manager still gets a running supervisor;
            # one whose configuration is wrong must end, so that the launch notices (exit code 2)
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ConfigError(self._configure_error)
            self.trigger_activate()

    def _build_core(self) -> Supervisor:
        p = self.params
        robot = load_robot_config(p.robot)
        overrides = {}
        if p.joint_limits_file:
            data = load_yaml(Path(p.joint_limits_file)) or {}
            overrides = data.get("joint_limits", {}) if isinstance(data, dict) else None
            if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
                raise ConfigError(
                    f"{p.joint_limits_file}: expected 'joint_limits:' mapping joint names to "
                    "{field: value} (ros2_control joint_limits), got "
                    f"{type(data).__name__ if not isinstance(data, dict) else overrides!r}"
                )
        kinematics = Kinematics(generate_urdf(robot))
        workspace, fk = None, None
        if p.workspace.enabled:
            workspace = WorkspaceBox(("left_tcp", "right_tcp"), tuple(p.workspace.min), tuple(p.workspace.max))
            fk = lambda q, frames: kinematics.frame_poses(q, list(frames))  # noqa: E731
        rollback = asdict(p.rollback)
        config = SupervisorConfig.for_robot(
            robot,
            limit_overrides=overrides,
            clamp=p.clamp,
            max_start_deviation=p.max_start_deviation,
            workspace=workspace,
            max_chunk_age=p.max_chunk_age,
            timeouts=asdict(p.timeouts),
            rollback=RollbackConfig(**{**rollback, "value_range": tuple(rollback["value_range"])}),
        )
        return Supervisor(config, fk, ActionConverter(robot, kinematics))

    # --- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core = self._build_core()
        except (ConfigError, TypeError, ValueError) as exc:
            self._configure_error = f"configuration rejected: {exc}"
            self.get_logger().error(self._configure_error)
            return TransitionCallbackReturn.FAILURE
        self.trajectory_pub = self.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS)
        self.state_pub = self.create_publisher(SupervisorState, "supervisor/state", LATCHED_QOS)
        self.rollback_pub = self.create_publisher(RollbackEvent, "supervisor/rollback", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.heartbeat_pub = self.create_publisher(Header, HEARTBEAT_TOPIC, HEARTBEAT_QOS)
        # cleanup destroys what configure made: a configure after it must not add a second set
        self._owned_publishers = [
            self.trajectory_pub,
            self.state_pub,
            self.rollback_pub,
            self.diag_pub,
            self.heartbeat_pub,
        ]
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump,
        )
        self._owned_subscriptions = [
            self.create_subscription(JointState, "joint_states", self._on_joint_states, JOINT_STATE_QOS),
            self.create_subscription(MultiViewRGBD, "observations", self._on_observation, IMAGE_QOS),
            self.create_subscription(ActionChunk, "policy/chunk", self._on_chunk, COMMAND_QOS),
            self.create_subscription(ValueEstimate, "policy/value", self._on_value, COMMAND_QOS),
            self.create_subscription(Bool, "estop", self._on_estop_topic, LATCHED_QOS),
        ]
        self._owned_services = [
            self.create_service(Trigger, "~/estop", self._srv_estop),
            self.create_service(Trigger, "~/reset", self._srv_reset),
            self.create_service(Trigger, "~/start_episode", self._srv_start_episode),
        ]
        self.resample_client = self.create_client(Resample, "policy/resample")
        # steady clock: a /clock that stops must not stop the watchdogs that notice it
        self._owned_timers = [
            self.create_timer(1.0 / self.params.control_rate, self._tick, clock=self._steady),
            self.create_timer(1.0, self._publish_status, clock=self._steady),
        ]
        self._publish_state()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self.get_logger().info("active: forwarding checked chunks")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._dispatch(self.core.hold(self._now(), "deactivated"))
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.core is not None:
            self._dispatch(self.core.hold(self._now(), "lifecycle error"))
        self._active = False
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        for timer in getattr(self, "_owned_timers", []):
            self.destroy_timer(timer)
        for sub in getattr(self, "_owned_subscriptions", []):
            self.destroy_subscription(sub)
        for srv in getattr(self, "_owned_services", []):
            self.destroy_service(srv)
        for pub in getattr(self, "_owned_publishers", []):
            self.destroy_lifecycle_publisher(pub)  # also forgets it as a managed entity
        if getattr(self, "resample_client", None) is not None:
            self.destroy_client(self.resample_client)
            self.resample_client = None
        self._owned_timers, self._owned_subscriptions, self._owned_services = [], [], []
        self._owned_publishers = []
        if getattr(self, "_jump_handle", None) is not None:
            self._jump_handle.unregister()
            self._jump_handle = None
        self.core, self._active = None, False

    # --- inputs ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @_guarded
    def _on_joint_states(self, msg: JointState) -> None:
        self._dispatch(self.core.update_joint_state(self._now(), list(msg.name), list(msg.position)))

    @_guarded
    def _on_observation(self, msg: MultiViewRGBD) -> None:
        if not msg.degraded:
            self._dispatch(self.core.update_observation(self._now()))

    @_guarded
    def _on_value(self, msg: ValueEstimate) -> None:
        if self._active:
            self._dispatch(
                self.core.update_value(self._now(), float(msg.value), int(msg.chunk_id), int(msg.subtask_index))
            )

    @_guarded
    def _on_chunk(self, msg: ActionChunk) -> None:
        now = self._now()
        try:
            chunk = chunk_from_msg(msg)
        except ChunkRejected as exc:
            self._dispatch(self.core.reject(int(msg.chunk_id), str(exc)))
            return
        if not self._active:
            self._dispatch(self.core.reject(chunk.chunk_id, "supervisor is not active"))
            return
        self._dispatch(self.core.submit_chunk(now, chunk))

    @_guarded
    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._dispatch(self.core.estop(self._now(), "e-stop topic"))

    def _on_clock_jump(self, jump: TimeJump) -> None:
        if self.core is None:
            return
        self.clock_jumps += 1
        delta = jump.delta.nanoseconds * 1e-9
        self.get_logger().warn(f"ROS clock jumped {delta:+.3f} s ({jump.clock_change.name})")
        # a change of time source (sim time switched on or off) is treated as a jump back
        same_source = jump.clock_change in (ClockChange.ROS_TIME_NO_CHANGE, ClockChange.SYSTEM_TIME_NO_CHANGE)
        self._dispatch(self.core.clock_jumped(self._now(), delta if same_source else -abs(delta)))

    @_guarded
    def _srv_estop(self, request, response):
        self._dispatch(self.core.estop(self._now(), "e-stop service"))
        response.success, response.message = True, "ESTOP latched; call reset to leave it"
        return response

    @_guarded
    def _srv_reset(self, request, response):
        events = self.core.reset(self._now())
        self._dispatch(events)
        response.success = bool(events)
        response.message = self.core.reason if events else f"nothing to reset in {self.core.mode.name}"
        return response

    @_guarded
    def _srv_start_episode(self, request, response):
        self._dispatch(self.core.start_episode(self._now()))
        response.success, response.message = True, "peak, checkpoints and rollback budget reset"
        return response

    @_guarded
    def _tick(self) -> None:
        if not self._active:
            return
        now, steady = self._now(), time.monotonic()
        if now != self._ros_time_advanced[0]:  # "changed", not "grew": after a jump back it moves again
            self._ros_time_advanced = (now, steady)
        stopped = steady - self._ros_time_advanced[1]
        if stopped > self.params.clock_timeout:
            self._dispatch(self.core.clock_stopped(now, stopped))
        else:
            self._dispatch(self.core.tick(now))
        beat = Header(frame_id=self.core.mode.name)
        beat.stamp = to_time(now)
        self.heartbeat_pub.publish(beat)

    # --- outputs ---------------------------------------------------------------------------
    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, Command):
                self._publish_command(event)
            elif isinstance(event, Transition):
                text = f"{event.old.name} -> {event.new.name}: {event.reason}"
                # rclpy ties a severity to each call site: one call per severity
                if event.new in (SupervisorMode.HOLD, SupervisorMode.ESTOP):
                    self.get_logger().warn(text)
                else:
                    self.get_logger().info(text)
                self._publish_state()
            elif isinstance(event, Rejection):
                self.get_logger().warn(f"rejected (chunk {event.chunk_id}): {event.reason}", throttle_duration_sec=1.0)
                self._publish_state()
            elif isinstance(event, RollbackFired):
                self._publish_rollback(event)
            elif isinstance(event, ResampleRequest):
                self._request_resample(event)

    def _publish_command(self, command: Command) -> None:
        try:
            msg = trajectory_msg(command)
        except ChunkRejected as exc:
            self.get_logger().error(str(exc))
            events = self.core.reject(self.core.last_forwarded_chunk_id, str(exc))
            if command.source != "hold":  # a hold is one point at time 0: it always converts
                events += self.core.hold(self._now(), str(exc))
            self._dispatch(events)
            return
        self.trajectory_pub.publish(msg)

    def _publish_rollback(self, event: RollbackFired) -> None:
        cfg = self.core.config
        msg = RollbackEvent(
            reason=RollbackEvent.REASON_VALUE_DROP,
            detail=event.detail,
            value=event.value,
            peak=event.peak,
            delta=event.delta,
            checkpoint_stamp=to_time(event.checkpoint.stamp),
            checkpoint_chunk_id=event.checkpoint.chunk_id,
            joint_names=list(cfg.arm_joints),
            restored_positions=event.checkpoint.arm.tolist(),
            gripper_names=list(cfg.gripper_joints),
            restored_gripper=event.checkpoint.gripper.tolist(),
            discarded_chunk_id=event.discarded_chunk_id,
            rollback_index=event.index,
        )
        msg.header.stamp = to_time(self._now())
        self.rollback_pub.publish(msg)
        self.get_logger().warn(f"rollback {event.index}: {event.detail}")

    def _request_resample(self, request: ResampleRequest) -> None:
        if not self.resample_client.service_is_ready():
            self._dispatch(self.core.resample_reply(self._now(), False, 0, "policy/resample is not available"))
            return
        msg = Resample.Request(
            discarded_chunk_id=request.discarded_chunk_id,
            joint_names=request.joint_names,
            positions=request.positions.tolist(),
        )
        msg.header.stamp = to_time(self._now())
        future = self.resample_client.call_async(msg)
        future.add_done_callback(self._on_resample_reply)

    def _on_resample_reply(self, future) -> None:
        if self.core is None:
            return
        try:
            reply = future.result()
            events = self.core.resample_reply(self._now(), reply.accepted, int(reply.chunk_id), reply.message)
        except Exception as exc:  # a dead service must not kill the supervisor
            events = self.core.resample_reply(self._now(), False, 0, repr(exc))
        self._dispatch(events)

    def _publish_state(self) -> None:
        core = self.core
        msg = SupervisorState(
            state=int(core.mode),
            state_name=core.mode.name,
            reason=core.reason,
            last_forwarded_chunk_id=core.last_forwarded_chunk_id,
            last_rejected_chunk_id=core.last_rejected_chunk_id,
            last_rejection=core.last_rejection,
            chunks_forwarded=core.forwarded,
            chunks_rejected=core.rejected,
            value=core.value,
            peak=core.peak if math.isfinite(core.peak) else math.nan,
            rollbacks=core.rollbacks,
        )
        msg.header.stamp = to_time(self._now())
        self.state_pub.publish(msg)

    def _publish_status(self) -> None:
        core = self.core
        if core is None:
            return
        self._publish_state()
        level = {SupervisorMode.RUNNING: diag.OK, SupervisorMode.ESTOP: diag.ERROR}.get(core.mode, diag.WARN)
        history = "; ".join(f"#{r.index} at {r.checkpoint.stamp:.2f}: {r.detail}" for r in core.rollback_history[-5:])
        values = {
            "state": core.mode.name,
            "reason": core.reason,
            "active": self._active,
            "chunks_forwarded": core.forwarded,
            "chunks_rejected": core.rejected,
            "last_rejection": core.last_rejection,
            "value": f"{core.value:.3f}",
            "peak": f"{core.peak:.3f}",
            "values_rejected": core.values_rejected,
            "last_value_rejection": core.last_value_rejection,
            "clock_jumps": self.clock_jumps,
            "internal_errors": self.internal_errors,
            "rollbacks": core.rollbacks,
            "rollback_history": history,
        }
        self.diag_pub.publish(
            diag.array_msg(
                to_time(self._now()),
                [
                    diag.status(
                        f"{self.get_fully_qualified_name()}: supervisor",
                        "supervisor",
                        level,
                        f"{core.mode.name}: {core.reason}",
                        values,
                    )
                ],
            )
        )


NODE_CLASS = SupervisorNode


def main(args: list[str] | None = None) -> int:
    return run_node(SupervisorNode, args)
