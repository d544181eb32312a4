"""supervisor_node: every command to the arms passes through here (lifecycle node).

In:  joint_states, observations (MultiViewRGBD, freshness only), policy/chunk (ActionChunk),
     policy/value (ValueEstimate), estop (std_msgs/Bool, True latches the e-stop).
Out: joint_trajectory (trajectory_msgs/JointTrajectory to the arm bridge / simulator),
     supervisor/state (SupervisorState, latched), supervisor/rollback (RollbackEvent),
     /diagnostics.
Services: ~/estop, ~/reset, ~/start_episode (std_srvs/Trigger); calls policy/resample.

configure validates every parameter and builds the core (wam_ros.control.supervisor);
activate starts forwarding; deactivate holds the arms where they are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from wam_ros.config import ROBOTS, ConfigError, load_robot_config, load_yaml
from wam_ros.control.limits import WorkspaceBox
from wam_ros.control.supervisor import (Chunk, Command, Rejection, ResampleRequest, RollbackConfig, RollbackFired,
                                        Supervisor, SupervisorConfig, SupervisorMode, Transition)
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.msg import ActionChunk, MultiViewRGBD, RollbackEvent, SupervisorState, ValueEstimate
from wam_ros.robots.actions import ActionConverter
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import from_time, to_time
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, IMAGE_QOS, JOINT_STATE_QOS, LATCHED_QOS
from wam_ros.srv import Resample

ROLLBACK_DEFAULTS = RollbackConfig()


def _duration(seconds: float) -> DurationMsg:
    stamp = to_time(seconds)
    return DurationMsg(sec=stamp.sec, nanosec=stamp.nanosec)


class SupervisorNode(LifecycleNode):
    def __init__(self, node_name: str = "supervisor", **kwargs):
        super().__init__(node_name, **kwargs)
        self.core: Supervisor | None = None
        self._active = False
        self._resample_pending = None
        self._declare_parameters()
        if self.get_parameter("autostart").value:
            # a launch file or bring-up without a lifecycle manager still gets a running supervisor
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # --- parameters ------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        d = ROLLBACK_DEFAULTS
        self._settings = {
            "robot": declare(self, "robot", "agilex", "Robot setup (joint names and limits)", choices=ROBOTS),
            "autostart": declare(self, "autostart", True, "Configure and activate at start-up"),
            "control_rate": declare(self, "control_rate", 50.0, "Watchdog and rollback tick rate (Hz)", range_=(1.0, 1000.0)),
            "clamp": declare(self, "clamp", False, "Clamp positions and velocities into the limits instead of rejecting"),
            "max_start_deviation": declare(self, "max_start_deviation", 0.35,
                                           "Largest allowed distance of a chunk's first target from the current "
                                           "position (rad)", range_=(0.0, 6.3)),
            "joint_limits_file": declare(self, "joint_limits_file", "",
                                         "YAML with ros2_control joint_limits overrides per joint (empty: robot config)"),
            "workspace.enabled": declare(self, "workspace.enabled", False, "Check the TCPs against a workspace box"),
            "workspace.min": declare(self, "workspace.min", [-1.0, -1.0, -0.05], "Workspace box minimum x, y, z (m, base)"),
            "workspace.max": declare(self, "workspace.max", [1.5, 1.0, 1.5], "Workspace box maximum x, y, z (m, base)"),
        }
        for stream, default in {"joint_states": 0.2, "observations": 0.5, "value": 1.0, "chunks": 1.0}.items():
            self._settings[f"timeouts.{stream}"] = declare(
                self, f"timeouts.{stream}", default, f"Freshness timeout of {stream} (s); 0 disables", range_=(0.0, 60.0))
        for name, description in (("enabled", "Value-guided rollback on/off"),
                                  ("delta", "Tolerance delta: roll back when value < peak - delta"),
                                  ("consecutive", "Consecutive low values needed to trigger"),
                                  ("checkpoint_spacing", "Seconds between buffered checkpoints"),
                                  ("buffer_size", "Checkpoints kept"),
                                  ("max_rollbacks", "Rollbacks per episode before HOLD for the operator"),
                                  ("cooldown", "Seconds after resuming without a new rollback"),
                                  ("reach_tolerance", "Checkpoint reached within this joint error (rad)"),
                                  ("reach_timeout", "Seconds beyond the planned return before HOLD"),
                                  ("resample_timeout", "Seconds to wait for the resampled chunk"),
                                  ("may_open_grippers", "Allow a rollback to open a gripper holding an object")):
            self._settings[f"rollback.{name}"] = declare(self, f"rollback.{name}", getattr(d, name), description)

    def _build_core(self) -> Supervisor:
        p = self._settings
        robot = load_robot_config(p["robot"])
        overrides = {}
        if p["joint_limits_file"]:
            data = load_yaml(Path(p["joint_limits_file"]))
            overrides = (data or {}).get("joint_limits", {})
        kinematics = Kinematics(generate_urdf(robot))
        workspace, fk = None, None
        if p["workspace.enabled"]:
            workspace = WorkspaceBox(("left_tcp", "right_tcp"), tuple(p["workspace.min"]), tuple(p["workspace.max"]))
            fk = lambda q, frames: kinematics.frame_poses(q, list(frames))  # noqa: E731
        config = SupervisorConfig.for_robot(
            robot, limit_overrides=overrides, clamp=p["clamp"], max_start_deviation=p["max_start_deviation"],
            workspace=workspace,
            timeouts={s: p[f"timeouts.{s}"] for s in ("joint_states", "observations", "value", "chunks")},
            rollback=RollbackConfig(**{k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("rollback.")}))
        return Supervisor(config, fk, ActionConverter(robot, kinematics))

    # --- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core = self._build_core()
        except (ConfigError, TypeError) as exc:
            self.get_logger().error(f"configuration rejected: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.trajectory_pub = self.create_publisher(JointTrajectory, "joint_trajectory", COMMAND_QOS)
        self.state_pub = self.create_publisher(SupervisorState, "supervisor/state", LATCHED_QOS)
        self.rollback_pub = self.create_publisher(RollbackEvent, "supervisor/rollback", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
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
        self._owned_timers = [self.create_timer(1.0 / self._settings["control_rate"], self._tick),
                        self.create_timer(1.0, self._publish_status)]
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
        self._owned_timers, self._owned_subscriptions, self._owned_services = [], [], []
        self.core, self._active = None, False

    # --- inputs ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_states(self, msg: JointState) -> None:
        self._dispatch(self.core.update_joint_state(self._now(), list(msg.name), list(msg.position)))

    def _on_observation(self, msg: MultiViewRGBD) -> None:
        if not msg.degraded:
            self.core.update_observation(self._now())

    def _on_value(self, msg: ValueEstimate) -> None:
        if self._active:
            self._dispatch(self.core.update_value(self._now(), float(msg.value), int(msg.chunk_id), int(msg.subtask_index)))

    def _on_chunk(self, msg: ActionChunk) -> None:
        now = self._now()
        try:
            positions = np.asarray(msg.positions, dtype=float).reshape(int(msg.horizon), len(msg.joint_names))
            gripper = np.asarray(msg.gripper, dtype=float).reshape(int(msg.horizon), len(msg.gripper_names)) \
                if msg.gripper_names else None
        except ValueError:
            self._dispatch([Rejection(msg.chunk_id, f"positions: {len(msg.positions)} values do not fill horizon "
                                                    f"{msg.horizon} x {len(msg.joint_names)} joints")])
            return
        if not self._active:
            self._dispatch([Rejection(msg.chunk_id, "supervisor is not active")])
            return
        chunk = Chunk(int(msg.chunk_id), from_time(msg.header.stamp), list(msg.joint_names), positions, float(msg.dt),
                      list(msg.gripper_names), gripper, int(msg.action_space), int(msg.expert), float(msg.value))
        if not math.isnan(chunk.value):
            self._dispatch(self.core.update_value(now, chunk.value, chunk.chunk_id))
        self._dispatch(self.core.submit_chunk(now, chunk))

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._dispatch(self.core.estop(self._now(), "e-stop topic"))

    def _srv_estop(self, request, response):
        self._dispatch(self.core.estop(self._now(), "e-stop service"))
        response.success, response.message = True, "ESTOP latched; call reset to leave it"
        return response

    def _srv_reset(self, request, response):
        events = self.core.reset(self._now())
        self._dispatch(events)
        response.success = bool(events)
        response.message = self.core.reason if events else f"nothing to reset in {self.core.mode.name}"
        return response

    def _srv_start_episode(self, request, response):
        self._dispatch(self.core.start_episode(self._now()))
        response.success, response.message = True, "peak, checkpoints and rollback budget reset"
        return response

    def _tick(self) -> None:
        if self._active:
            self._dispatch(self.core.tick(self._now()))

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
                self.get_logger().warn(f"rejected chunk {event.chunk_id}: {event.reason}", throttle_duration_sec=1.0)
                self._publish_state()
            elif isinstance(event, RollbackFired):
                self._publish_rollback(event)
            elif isinstance(event, ResampleRequest):
                self._request_resample(event)

    def _publish_command(self, command: Command) -> None:
        msg = JointTrajectory()
        msg.header.stamp = to_time(command.start)
        msg.joint_names = command.joint_names
        # the first row of a chunk executes at once; a rollback's rows follow at dt spacing
        offset = command.dt if command.source == "rollback" else 0.0
        msg.points = [JointTrajectoryPoint(positions=row.tolist(), time_from_start=_duration(offset + k * command.dt))
                      for k, row in enumerate(command.positions)]
        self.trajectory_pub.publish(msg)

    def _publish_rollback(self, event: RollbackFired) -> None:
        cfg = self.core.config
        msg = RollbackEvent(reason=RollbackEvent.REASON_VALUE_DROP, detail=event.detail, value=event.value,
                            peak=event.peak, delta=event.delta, checkpoint_stamp=to_time(event.checkpoint.stamp),
                            checkpoint_chunk_id=event.checkpoint.chunk_id, joint_names=list(cfg.arm_joints),
                            restored_positions=event.checkpoint.arm.tolist(), gripper_names=list(cfg.gripper_joints),
                            restored_gripper=event.checkpoint.gripper.tolist(),
                            discarded_chunk_id=event.discarded_chunk_id, rollback_index=event.index)
        msg.header.stamp = to_time(self._now())
        self.rollback_pub.publish(msg)
        self.get_logger().warn(f"rollback {event.index}: {event.detail}")

    def _request_resample(self, request: ResampleRequest) -> None:
        if not self.resample_client.service_is_ready():
            self._dispatch(self.core.resample_reply(self._now(), False, 0, "policy/resample is not available"))
            return
        msg = Resample.Request(discarded_chunk_id=request.discarded_chunk_id, joint_names=request.joint_names,
                               positions=request.positions.tolist())
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
        msg = SupervisorState(state=int(core.mode), state_name=core.mode.name, reason=core.reason,
                              last_forwarded_chunk_id=core.last_forwarded_chunk_id,
                              last_rejected_chunk_id=core.last_rejected_chunk_id, last_rejection=core.last_rejection,
                              chunks_forwarded=core.forwarded, chunks_rejected=core.rejected,
                              value=core.value, peak=core.peak if math.isfinite(core.peak) else math.nan,
                              rollbacks=core.rollbacks)
        msg.header.stamp = to_time(self._now())
        self.state_pub.publish(msg)

    def _publish_status(self) -> None:
        core = self.core
        if core is None:
            return
        self._publish_state()
        level = {SupervisorMode.RUNNING: diag.OK, SupervisorMode.ESTOP: diag.ERROR}.get(core.mode, diag.WARN)
        history = "; ".join(f"#{r.index} at {r.checkpoint.stamp:.2f}: {r.detail}" for r in core.rollback_history[-5:])
        values = {"state": core.mode.name, "reason": core.reason, "active": self._active,
                  "chunks_forwarded": core.forwarded, "chunks_rejected": core.rejected,
                  "last_rejection": core.last_rejection, "value": f"{core.value:.3f}", "peak": f"{core.peak:.3f}",
                  "rollbacks": core.rollbacks, "rollback_history": history}
        self.diag_pub.publish(diag.array_msg(to_time(self._now()), [
            diag.status(f"{self.get_fully_qualified_name()}: supervisor", "supervisor", level,
                        f"{core.mode.name}: {core.reason}", values)]))


NODE_CLASS = SupervisorNode


def main(args: list[str] | None = None) -> int:
    return run_node(SupervisorNode, args)
