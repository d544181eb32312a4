"""arm_bridge_node: one lifecycle node for the real arms (Franka FR3 pair, AgileX Piper pair, TienKung).

In: joint_trajectory (trajectory_msgs/JointTrajectory, what the supervisor forwards) and
supervisor/heartbeat (std_msgs/Header at the supervisor's control rate): while a trajectory runs
and neither arrives for command_timeout seconds (arrival on this node's clock), the arms hold.
Out: joint_states at the driver rate (left_*, right_*; grippers in m of one finger's travel),
/diagnostics (connection, mode, errors, command latency); with robot:=agilex also the Cobot Magic
topics /puppet/joint_left|right (followers) and, with agilex.leader_can_ports, /master/joint_left|right
read from the leader arms (7 values: 6 joints in rad, then the gripper in m of one finger's travel).
Lifecycle: configure connects (and fails clearly when an arm does not answer), activate
enables and starts streaming, deactivate holds, cleanup disconnects. A driver fault or a
silent connection puts the bridge in its error state (arms held); ~/recover clears it. So does
an implausible reading (non-finite, well outside the joint range, or faster than the joint can
move): the arms hold at the last commanded position, joint_states keep the last plausible reading
(the glitch never reaches the supervisor or the policy; /diagnostics names it), and ~/recover
refuses until the readings are plausible again. A rejected trajectory, malformed or not, stops
the running one. /diagnostics: mode, error, commands, rejected, last_rejection, command_timeout_s,
watchdog (why the watchdog last stopped a trajectory), watchdog_stops, command_latency_ms.
The vendor backends are built by wam_ros.robots.backends. The simulated robot needs no bridge: sim_node
runs the same bridge core on the simulator.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from wam_ros.config import ROBOTS, ConfigError, load_robot_config
from wam_ros.robots.agilex import DEFAULT_CAN_PORTS
from wam_ros.robots.backends import DRIVERS, Backends, BackendSettings, make_backends
from wam_ros.robots.bridge import Bridge, BridgeError, BridgeLimits, BridgeMode, CommandRejected
from wam_ros.robots.franka import DEFAULT_FCI_HOSTS, FrankaSettings
from wam_ros.robots.tienkung import TienKungBackend
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import to_time, trajectory_arrays
from wam_ros.ros.lifecycle import SafeLifecycleNode
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS, HEARTBEAT_QOS, HEARTBEAT_TOPIC, JOINT_STATE_QOS


@dataclass(frozen=True)
class FrankaParams:
    hosts: list[str] = param(list(DEFAULT_FCI_HOSTS), "FCI hosts of the left and right FR3")
    dynamics_factor: float = param(0.2, "franky relative dynamics factor", range_=(0.01, 1.0))
    realtime: bool = param(True, "Require a real-time kernel (false for franky-sim)")
    joint_torque_threshold: float = param(40.0, "Collision threshold per joint (Nm)", range_=(1.0, 100.0))
    cartesian_force_threshold: float = param(60.0, "Cartesian collision threshold (N)", range_=(1.0, 200.0))


@dataclass(frozen=True)
class AgilexParams:
    can_ports: list[str] = param(list(DEFAULT_CAN_PORTS), "CAN ports of the left and right Piper")
    leader_can_ports: list[str] = param(
        [""],
        "CAN ports of the left and right leader (master) arms, read only and "
        "published on /master/joint_left|right; empty: none",
    )
    can_interface: str = param("socketcan", "python-can interface: socketcan on the robot, virtual for dry runs")
    emulate: bool = param(False, "Answer on virtual CAN with emulated Pipers (dry run)")
    speed_percent: int = param(100, "Piper MOVE J speed (%)", range_=(1, 100))


@dataclass(frozen=True)
class TienKungParams:
    command_topic: str = param("/arm/cmd_ctrl", "TienKung arm command topic")
    status_topic: str = param("/arm/status", "TienKung arm status topic")


@dataclass(frozen=True)
class ArmBridgeParams:
    robot: str = param("franka", "Robot setup (selects the driver)", choices=ROBOTS)
    autostart: bool = param(True, "Configure and activate at start-up")
    exit_on_failure: bool = param(
        True,
        "A failed start-up (the arms unreachable) ends the process (exit code 3); "
        "false: stay up, NOT OPERATIONAL in /diagnostics, for a later configure",
    )
    rate: float = param(100.0, "Driver streaming and joint_states rate (Hz)", range_=(1.0, 1000.0))
    max_step: float = param(
        0.35, "Largest jump of a trajectory's first point from the commanded position (rad)", range_=(0.0, 6.3)
    )
    state_timeout: float = param(0.5, "Driver silence that counts as a lost connection (s)", range_=(0.01, 10.0))
    command_timeout: float = param(
        0.5,
        "Hold when a trajectory runs and neither a supervisor heartbeat nor a new "
        "trajectory arrived for this long (s; 0: off)",
        range_=(0.0, 10.0),
    )
    franka: FrankaParams = field(default_factory=FrankaParams)
    agilex: AgilexParams = field(default_factory=AgilexParams)
    tienkung: TienKungParams = field(default_factory=TienKungParams)


class ArmBridgeNode(SafeLifecycleNode):
    def __init__(self, node_name: str = "arm_bridge", **kwargs):
        super().__init__(node_name, **kwargs)
        self.failure = ""  # why the last configure failed (node_main.startup_failures reads it)
        p = self.params = declare_params(self, ArmBridgeParams)
        self.robot = load_robot_config(p.robot)
        self.bridge: Bridge | None = None
        # parsed trajectories, or the reason a message was refused, in arrival order
        self._pending: deque[tuple[list[str], np.ndarray, np.ndarray] | str] = deque(maxlen=16)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self.backends: Backends | None = None  # owned while configured: the bridge's arms, leaders, emulators
        self._tienkung_status: tuple | None = None  # (executor, its thread, node) feeding TienKung's status
        self.joint_pub = self.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.puppet_pubs = (
            {
                side: self.create_publisher(JointState, f"/puppet/joint_{side}", JOINT_STATE_QOS)
                for side in ("left", "right")
            }
            if p.robot == "agilex"
            else {}
        )
        # Cobot Magic order per arm: six joints, then the gripper (columns of robot.joint_names)
        self._puppet_columns = {
            side: [
                self.robot.joint_names.index(n)
                for n in (*self.robot.arm_joint_names(side), self.robot.gripper_joint_name(side))
            ]
            for side in self.puppet_pubs
        }
        self.master_pubs = {}  # side -> publisher of the Cobot Magic leader arm's readings
        self.tienkung_command_pub = (
            self.create_publisher(JointState, p.tienkung.command_topic, COMMAND_QOS) if p.robot == "tienkung" else None
        )
        self.create_subscription(JointTrajectory, "joint_trajectory", self._on_trajectory, COMMAND_QOS)
        self.create_subscription(Header, HEARTBEAT_TOPIC, self._on_heartbeat, HEARTBEAT_QOS)
        self.create_service(Trigger, "~/recover", self._srv_recover)
        self.create_timer(1.0, self._publish_diagnostics)
        if p.autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # --- backends --------------------------------------------------------------------------
    def _make_backends(self) -> Backends:
        p = self.params
        settings = BackendSettings(
            p.robot,
            tuple(p.franka.hosts),
            FrankaSettings(
                p.franka.dynamics_factor,
                p.franka.realtime,
                p.franka.joint_torque_threshold,
                p.franka.cartesian_force_threshold,
            ),
            tuple(p.agilex.can_ports),
            tuple(port for port in p.agilex.leader_can_ports if port),
            p.agilex.can_interface,
            p.agilex.emulate,
            p.agilex.speed_percent,
        )
        backends = make_backends(settings, self.robot, self._publish_tienkung_command)
        for side in backends.leaders:
            if side not in self.master_pubs:
                self.master_pubs[side] = self.create_publisher(JointState, f"/master/joint_{side}", JOINT_STATE_QOS)
        for arm in backends.arms:
            if isinstance(arm, TienKungBackend):
                self._spin_tienkung_status(arm)
        return backends

    def _publish_tienkung_command(self, names: list[str], positions: list[float]) -> None:
        msg = JointState(name=names, position=positions)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.tienkung_command_pub.publish(msg)

    def _spin_tienkung_status(self, backend: TienKungBackend) -> None:
        """Feed the robot's status to the backend on an executor thread of its own, so that
        configure can wait for it."""
        status_node = rclpy.create_node(
            f"{self.get_name()}_tienkung_status", namespace=self.get_namespace(), context=self.context
        )
        status_node.create_subscription(
            JointState,
            self.params.tienkung.status_topic,
            lambda m: backend.on_status(
                time.monotonic(), list(m.name), list(m.position), list(m.velocity), list(m.effort)
            ),
            JOINT_STATE_QOS,
        )
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(status_node)
        thread = threading.Thread(target=executor.spin, name="tienkung_status", daemon=True)
        thread.start()
        self._tienkung_status = (executor, thread, status_node)

    def _release_backends(self) -> None:
        if self.backends is not None:
            self.backends.release()
            self.backends = None
        if self._tienkung_status is not None:
            executor, thread, node = self._tienkung_status
            executor.shutdown()
            thread.join(timeout=5.0)  # the node may only go once nothing waits on it
            node.destroy_node()
            self._tienkung_status = None

    # --- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.backends = self._make_backends()
            self.bridge = Bridge(
                self.backends.arms,
                BridgeLimits.for_robot(self.robot, self.robot.joint_names),
                self.robot.joint_names,
                self.params.max_step,
                self.params.state_timeout,
                self.params.command_timeout,
            )
            self.bridge.configure(time.monotonic())
        except (BridgeError, ConfigError, ValueError) as exc:
            self.get_logger().error(f"NOT OPERATIONAL: configure failed: {exc}")
            self.failure = f"configure failed: {exc}"
            self.bridge = None
            self._release_backends()
            return TransitionCallbackReturn.FAILURE
        self.failure = ""
        self._stop.clear()
        self._loop = threading.Thread(target=self._run, name="driver_loop", daemon=True)
        self._loop.start()
        self.get_logger().info(f"connected to the {self.robot.name} arms ({DRIVERS[self.robot.name]})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self.bridge.activate(time.monotonic())
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self.bridge.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_driver()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_driver()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        # Ctrl-C: hold the arms, stop the driver thread and helper executors before rclpy goes away
        self._shutdown_driver()
        super().destroy_node()

    def _shutdown_driver(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=5.0)
            self._loop = None
        if self.bridge is not None:
            with self._lock:
                self.bridge.deactivate()
                self.bridge.cleanup()
            self.bridge = None
        self._release_backends()

    # --- commands and the driver loop --------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self._pending.append(trajectory_arrays(msg, self.get_clock().now().nanoseconds * 1e-9))
        except ValueError as exc:  # counted and stopping the running trajectory in turn, in the driver loop
            self._pending.append(str(exc))

    def _on_heartbeat(self, msg: Header) -> None:
        # its arrival on the driver loop's clock: the stamp says when it was sent, not that the sender lives
        with self._lock:
            if self.bridge is not None:
                self.bridge.heartbeat(time.monotonic())

    def _ros_to_monotonic(self) -> float:
        """Offset from ROS time to the monotonic clock the driver loop runs on."""
        return self.get_clock().now().nanoseconds * 1e-9 - time.monotonic()

    def _run(self) -> None:
        period = 1.0 / self.params.rate
        deadline = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                self._execute(now, period)
            deadline += period
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def _execute(self, now: float, period: float) -> None:
        bridge = self.bridge
        offset = self._ros_to_monotonic()
        while self._pending:
            pending = self._pending.popleft()
            if isinstance(pending, str):  # a message refused while parsing
                bridge.reject(pending)
                self.get_logger().warn(f"rejected trajectory message: {pending}", throttle_duration_sec=1.0)
                continue
            names, times, positions = pending
            try:
                bridge.set_trajectory(names, times - offset, positions, now)
            except CommandRejected as exc:
                self.get_logger().warn(f"rejected trajectory: {exc}", throttle_duration_sec=1.0)
        try:
            bridge.step(now, period)
        except BridgeError as exc:
            self.get_logger().error(f"driver error, arms held until ~/recover: {exc}", throttle_duration_sec=2.0)
        except Exception as exc:  # a driver exception must not end the loop that holds the arms
            self.get_logger().error(f"driver exception: {exc!r}", throttle_duration_sec=2.0)
        if bridge.status.mode == BridgeMode.UNCONFIGURED:
            return
        stamp = self.get_clock().now().to_msg()
        msg = JointState(
            name=bridge.joint_names,
            position=bridge.measured.tolist(),
            velocity=bridge.velocities.tolist(),
            effort=bridge.efforts.tolist(),
        )
        msg.header.stamp = stamp
        self.joint_pub.publish(msg)
        for side, pub in self.puppet_pubs.items():
            columns = self._puppet_columns[side]
            puppet = JointState(
                name=[f"joint{i}" for i in range(len(columns))], position=bridge.measured[columns].tolist()
            )
            puppet.header.stamp = stamp
            pub.publish(puppet)
        for side, leader in self.backends.leaders.items():
            reading = leader.read(now)
            master = JointState(name=[f"joint{i}" for i in range(7)], position=reading.positions.tolist())
            master.header.stamp = stamp
            self.master_pubs[side].publish(master)

    def _srv_recover(self, request, response):
        if self.bridge is None or self.bridge.status.mode != BridgeMode.ERROR:
            response.success, response.message = False, "not in the error state"
            return response
        try:
            with self._lock:
                self.bridge.recover(time.monotonic())
                self.bridge.activate(time.monotonic())
            response.success, response.message = True, "recovered; streaming"
        except Exception as exc:  # BridgeError or a driver's own exception
            response.success, response.message = False, f"recovery failed: {exc}"
        return response

    def _publish_diagnostics(self) -> None:
        status = self.bridge.status if self.bridge is not None else None
        level = (
            diag.ERROR
            if status is None or status.mode == BridgeMode.ERROR
            else diag.OK
            if status.mode == BridgeMode.ACTIVE and not status.watchdog
            else diag.WARN
        )
        values = {
            "robot": self.robot.name,
            "driver": DRIVERS[self.robot.name],
            "mode": status.mode.value if status else "unconfigured",
            "error": status.error if status else "",
            "commands": status.commands if status else 0,
            "rejected": status.rejected if status else 0,
            "last_rejection": status.last_rejection if status else "",
            "command_timeout_s": self.params.command_timeout,
            "watchdog": status.watchdog if status else "",
            "watchdog_stops": status.watchdog_stops if status else 0,
            "command_latency_ms": f"{status.latency * 1e3:.2f}" if status else "nan",
        }
        message = (
            (status.error or status.watchdog or status.mode.value)
            if status
            else f"NOT OPERATIONAL: {self.failure}"
            if self.failure
            else "not configured"
        )
        self.diag_pub.publish(
            diag.array_msg(
                to_time(self.get_clock().now().nanoseconds * 1e-9),
                [
                    diag.status(
                        f"{self.get_fully_qualified_name()}: arm bridge",
                        f"{self.robot.name}_arms",
                        level,
                        message,
                        values,
                    )
                ],
            )
        )


NODE_CLASS = ArmBridgeNode


def main(args: list[str] | None = None) -> int:
    return run_node(ArmBridgeNode, args)
