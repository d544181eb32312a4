"""The supervisor and the arm bridge driven through their lifecycle by hand (autostart:=false), the
way a lifecycle manager (`ros2 lifecycle set`, nav2's lifecycle manager) drives them: requests on
the node's ~/change_state and ~/get_state services (lifecycle_msgs) from a separate client node in
the same process, one executor spinning both. After each transition the test checks the state the
node reports and what the node does in it: heartbeats, chunks refused or forwarded, joint_states,
trajectories followed, its subscriptions and services on the graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from support.ros import SPARE_DOMAIN_IDS, ProbeNode
from wam_ros.config import load_robot_config
from wam_ros.msg import ActionChunk, MultiViewRGBD, SupervisorState
from wam_ros.ros.qos import (
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    HEARTBEAT_QOS,
    HEARTBEAT_TOPIC,
    IMAGE_QOS,
    JOINT_STATE_QOS,
    LATCHED_QOS,
)

pytestmark = pytest.mark.ros

NAMESPACE = "/lifecycle"
ROBOT = load_robot_config("agilex")
NAMES = ROBOT.joint_names
ARM = [n for n in NAMES if not n.endswith("_gripper")]
HOME = ROBOT.home_positions()
DT = 1 / 15

UNCONFIGURED = (State.PRIMARY_STATE_UNCONFIGURED, "unconfigured")
INACTIVE = (State.PRIMARY_STATE_INACTIVE, "inactive")
ACTIVE = (State.PRIMARY_STATE_ACTIVE, "active")
FINALIZED = (State.PRIMARY_STATE_FINALIZED, "finalized")


def topic(name: str) -> str:
    return f"{NAMESPACE}/{name}"


class LifecycleManager(ProbeNode):
    """The node under test and a manager node in one rclpy context, spun by one executor: the
    manager changes the node's state only through its lifecycle services."""

    def __init__(self, make_node, name: str):
        super().__init__("lifecycle_manager", SPARE_DOMAIN_IDS[0])
        self.managed = make_node(self.context)
        self.name = name
        self.executor.add_node(self.managed)
        self.change_client = self.node.create_client(ChangeState, topic(f"{name}/change_state"))
        self.get_client = self.node.create_client(GetState, topic(f"{name}/get_state"))
        self.available_client = self.node.create_client(
            GetAvailableTransitions, topic(f"{name}/get_available_transitions")
        )

    def state(self) -> tuple[int, str]:
        reply = self.call_service(self.get_client, GetState.Request())
        return reply.current_state.id, reply.current_state.label

    def available(self) -> set[str]:
        """The labels of the transitions the node offers now (what a manager may request)."""
        reply = self.call_service(self.available_client, GetAvailableTransitions.Request())
        return {t.transition.label for t in reply.available_transitions}

    def change(self, transition: int, label: str = "") -> bool:
        request = ChangeState.Request(transition=Transition(id=transition, label=label))
        return self.call_service(self.change_client, request).success

    def refuses_what_it_does_not_offer(self) -> None:
        """A manager's wrong request (rclpy raised it out of the node's executor) is refused, and
        the node goes on answering in the state it was in."""
        assert self.state() == UNCONFIGURED
        assert not self.change(Transition.TRANSITION_ACTIVATE)  # a transition the state does not have
        assert not self.change(Transition.TRANSITION_CLEANUP)
        assert not self.change(0, "launch")  # a label no state machine has
        assert self.state() == UNCONFIGURED
        self.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
        assert not self.change(Transition.TRANSITION_CONFIGURE)
        assert self.state() == INACTIVE

    def step(self, transition: int, expected: tuple[int, str]) -> None:
        before = self.state()
        assert self.change(transition), f"transition {transition} from {before} was refused"
        assert self.state() == expected

    def entities(self) -> tuple[set[str], set[str], set[str]]:
        """(subscribed topics, published topics, services) of the node under test, on the graph."""
        node = self.node
        args = (self.name, NAMESPACE)
        return (
            {t for t, _ in node.get_subscriber_names_and_types_by_node(*args)},
            {t for t, _ in node.get_publisher_names_and_types_by_node(*args)},
            {s for s, _ in node.get_service_names_and_types_by_node(*args)},
        )

    def until_entities(self, condition, timeout: float = 5.0) -> tuple[set[str], set[str], set[str]]:
        self.spin_until(lambda: condition(*self.entities()), timeout)
        return self.entities()

    def close(self) -> None:
        try:
            self.executor.remove_node(self.managed)
            self.managed.destroy_node()
        finally:
            super().close()


# --- the supervisor -------------------------------------------------------------------------------


class SupervisorWorld(LifecycleManager):
    """Fresh joint states and observations for the supervisor, its outputs recorded."""

    def __init__(self):
        def make(context):
            from wam_ros.ros.nodes.supervisor_node import SupervisorNode

            return SupervisorNode(
                context=context,
                namespace=NAMESPACE,
                parameter_overrides=[
                    Parameter("autostart", value=False),
                    Parameter("robot", value="agilex"),
                    Parameter("timeouts.value", value=0.0),
                    Parameter("timeouts.chunks", value=0.0),
                ],
            )

        super().__init__(make, "supervisor")
        n = self.node
        self.heartbeats: list[Header] = []
        self.states: list[SupervisorState] = []
        self.trajectories: list[JointTrajectory] = []
        self.next_chunk_id = 1
        n.create_subscription(Header, topic(HEARTBEAT_TOPIC), self.heartbeats.append, HEARTBEAT_QOS)
        n.create_subscription(SupervisorState, topic("supervisor/state"), self.states.append, LATCHED_QOS)
        n.create_subscription(JointTrajectory, topic("joint_trajectory"), self.trajectories.append, COMMAND_QOS)
        self.chunk_pub = n.create_publisher(ActionChunk, topic("policy/chunk"), COMMAND_QOS)
        joint_pub = n.create_publisher(JointState, topic("joint_states"), JOINT_STATE_QOS)
        obs_pub = n.create_publisher(MultiViewRGBD, topic("observations"), IMAGE_QOS)

        def publish_streams() -> None:
            stamp = n.get_clock().now().to_msg()
            joints = JointState(name=NAMES, position=[HOME[name] for name in NAMES])
            joints.header.stamp = stamp
            joint_pub.publish(joints)
            obs = MultiViewRGBD(camera_names=["head", "left_wrist", "right_wrist"])
            obs.header.stamp = stamp
            obs_pub.publish(obs)

        n.create_timer(0.02, publish_streams)

    def send_chunk(self) -> int:
        """A chunk that holds the arms at home: valid whenever the supervisor forwards at all."""
        chunk_id, self.next_chunk_id = self.next_chunk_id, self.next_chunk_id + 1
        positions = np.tile([HOME[name] for name in ARM], (15, 1))
        msg = ActionChunk(
            chunk_id=chunk_id, joint_names=ARM, horizon=15, dt=DT, positions=positions.ravel().tolist(), value=math.nan
        )
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.chunk_pub.publish(msg)
        return chunk_id

    def rejected(self, chunk_id: int) -> SupervisorState:
        assert self.spin_until(lambda: bool(self.states) and self.states[-1].last_rejected_chunk_id == chunk_id, 3.0), (
            f"chunk {chunk_id} was not rejected: {self.states[-1] if self.states else 'no state'}"
        )
        return self.states[-1]

    def heartbeats_over(self, seconds: float) -> int:
        before = len(self.heartbeats)
        self.spin_for(seconds)
        return len(self.heartbeats) - before


@pytest.fixture
def supervisor():
    world = SupervisorWorld()
    try:
        yield world
    finally:
        world.close()


def test_the_supervisor_follows_configure_activate_deactivate_cleanup_shutdown(supervisor):
    w = supervisor
    chunk_topic, estop_service = topic("policy/chunk"), topic("supervisor/estop")

    # unconfigured: nothing subscribed, no heartbeat, and only configure or shutdown are offered
    assert w.state() == UNCONFIGURED
    assert w.available() == {"configure", "shutdown"}
    subscribed, _, services = w.until_entities(lambda subs, pubs, srvs: topic("supervisor/get_state") in srvs)
    assert chunk_topic not in subscribed and estop_service not in services
    assert w.heartbeats_over(0.5) == 0 and not w.states

    # configure -> inactive: inputs and services exist, the state is latched, chunks are refused
    w.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
    subscribed, published, services = w.until_entities(lambda subs, pubs, srvs: chunk_topic in subs)
    inputs = {chunk_topic, topic("joint_states"), topic("observations"), topic("policy/value"), topic("estop")}
    assert inputs <= subscribed
    assert {topic(HEARTBEAT_TOPIC), topic("joint_trajectory"), topic("supervisor/state")} <= published
    assert estop_service in services
    assert w.spin_until(lambda: bool(w.states), 3.0), "no latched supervisor/state after configure"
    assert w.states[-1].state_name == "HOLD"
    refused = w.send_chunk()
    assert w.rejected(refused).last_rejection == "supervisor is not active"
    assert w.heartbeats_over(0.5) == 0, "an inactive supervisor sent heartbeats"
    assert not w.trajectories

    # activate -> active: heartbeats at the control rate (50 Hz), and a valid chunk runs
    w.step(Transition.TRANSITION_ACTIVATE, ACTIVE)
    assert w.spin_until(lambda: len(w.heartbeats) >= 10, 3.0), f"{len(w.heartbeats)} heartbeats after activate"
    assert 20 <= w.heartbeats_over(1.0) <= 75
    forwarded = w.send_chunk()
    assert w.spin_until(lambda: bool(w.trajectories) and w.states[-1].state_name == "RUNNING", 3.0), (
        f"an active supervisor did not forward chunk {forwarded}: {w.states[-1]}"
    )
    assert w.states[-1].last_forwarded_chunk_id == forwarded
    assert set(ARM) <= set(w.trajectories[-1].joint_names)
    assert w.spin_until(lambda: w.heartbeats[-1].frame_id == "RUNNING", 1.0), "heartbeats do not say RUNNING"

    # deactivate -> inactive: it holds, heartbeats stop (the bridges hold too), chunks are refused again
    w.step(Transition.TRANSITION_DEACTIVATE, INACTIVE)
    assert w.spin_until(lambda: w.states[-1].state_name == "HOLD", 3.0)
    assert w.states[-1].reason == "deactivated"
    w.spin_for(0.2)  # beats already in flight
    assert w.heartbeats_over(0.5) == 0, "heartbeats after deactivate"
    trajectories = len(w.trajectories)
    refused = w.send_chunk()
    assert w.rejected(refused).last_rejection == "supervisor is not active"
    assert len(w.trajectories) == trajectories

    # cleanup -> unconfigured: its subscriptions and services are gone, nothing reacts to a chunk
    w.step(Transition.TRANSITION_CLEANUP, UNCONFIGURED)
    subscribed, _, services = w.until_entities(lambda subs, pubs, srvs: chunk_topic not in subs)
    assert not inputs & subscribed
    assert estop_service not in services
    states = len(w.states)
    w.send_chunk()
    w.spin_for(0.5)
    assert len(w.states) == states and w.heartbeats_over(0.1) == 0

    # configure again works from there (a manager's cleanup + configure is a restart) ...
    w.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
    w.step(Transition.TRANSITION_CLEANUP, UNCONFIGURED)
    # ... and shutdown from unconfigured reaches finalized, from which nothing leads back
    w.step(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, FINALIZED)
    assert w.available() == set()


def test_an_active_supervisor_shuts_down_to_finalized_and_stops_its_heartbeat(supervisor):
    w = supervisor
    w.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
    w.step(Transition.TRANSITION_ACTIVATE, ACTIVE)
    assert w.spin_until(lambda: len(w.heartbeats) >= 5, 3.0)
    w.step(Transition.TRANSITION_ACTIVE_SHUTDOWN, FINALIZED)
    w.spin_for(0.2)
    assert w.heartbeats_over(0.5) == 0, "heartbeats after shutdown"
    subscribed, _, _ = w.until_entities(lambda subs, pubs, srvs: topic("policy/chunk") not in subs)
    assert topic("policy/chunk") not in subscribed


def test_the_supervisor_refuses_a_transition_its_state_does_not_have(supervisor):
    supervisor.refuses_what_it_does_not_offer()
    supervisor.step(Transition.TRANSITION_ACTIVATE, ACTIVE)


def test_cleanup_leaves_no_publishers_of_the_supervisor_behind(supervisor):
    w = supervisor
    for _ in range(2):  # a configure after a cleanup makes one set again, not a second
        w.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
        assert w.spin_until(lambda: w.node.count_publishers(topic(HEARTBEAT_TOPIC)) == 1, 3.0)
        w.step(Transition.TRANSITION_CLEANUP, UNCONFIGURED)
        assert w.spin_until(lambda: w.node.count_publishers(topic(HEARTBEAT_TOPIC)) == 0, 3.0), (
            f"{w.node.count_publishers(topic(HEARTBEAT_TOPIC))} heartbeat publishers after cleanup"
        )


# --- the arm bridge (AgileX Pipers emulated on virtual CAN) ---------------------------------------


class BridgeWorld(LifecycleManager):
    def __init__(self):
        def make(context):
            from wam_ros.ros.nodes.arm_bridge_node import ArmBridgeNode

            return ArmBridgeNode(
                context=context,
                namespace=NAMESPACE,
                parameter_overrides=[
                    Parameter("autostart", value=False),
                    Parameter("robot", value="agilex"),
                    Parameter("command_timeout", value=0.0),  # no supervisor here: no heartbeat watchdog
                    Parameter("agilex.can_interface", value="virtual"),
                    Parameter("agilex.emulate", value=True),
                    Parameter("agilex.can_ports", value=["vcan_lifecycle_left", "vcan_lifecycle_right"]),
                ],
            )

        super().__init__(make, "arm_bridge")
        n = self.node
        self.joint_states: list[JointState] = []
        self.diagnostics: list = []
        n.create_subscription(JointState, topic("joint_states"), self.joint_states.append, JOINT_STATE_QOS)
        n.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(s for s in m.status if s.name.startswith(f"{NAMESPACE}/arm_bridge")),
            DIAGNOSTICS_QOS,
        )
        self.trajectory_pub = n.create_publisher(JointTrajectory, topic("joint_trajectory"), COMMAND_QOS)

    def q(self, name: str) -> float:
        last = self.joint_states[-1]
        return last.position[list(last.name).index(name)]

    def send(self, name: str, position: float, after: float = 1.0) -> None:
        point = JointTrajectoryPoint(positions=[position])
        point.time_from_start.sec, point.time_from_start.nanosec = int(after), int(after % 1 * 1e9)
        self.trajectory_pub.publish(JointTrajectory(joint_names=[name], points=[point]))

    def diagnosed(self, mode: str, timeout: float = 3.0) -> dict[str, str]:
        """The bridge's next /diagnostics (1 Hz) once it reports `mode`."""
        self.diagnostics.clear()
        assert self.spin_until(
            lambda: any({v.key: v.value for v in s.values}.get("mode") == mode for s in self.diagnostics), timeout
        ), f"/diagnostics never said mode {mode}: {[(s.message, s.values) for s in self.diagnostics]}"
        status = next(s for s in self.diagnostics if {v.key: v.value for v in s.values}["mode"] == mode)
        return {"message": status.message, **{v.key: v.value for v in status.values}}

    def streams(self, seconds: float) -> int:
        before = len(self.joint_states)
        self.spin_for(seconds)
        return len(self.joint_states) - before


@pytest.fixture
def bridge():
    world = BridgeWorld()
    try:
        yield world
    finally:
        world.close()


def test_the_arm_bridge_refuses_a_transition_its_state_does_not_have(bridge):
    bridge.refuses_what_it_does_not_offer()
    bridge.step(Transition.TRANSITION_ACTIVATE, ACTIVE)


def test_the_arm_bridge_follows_configure_activate_deactivate_cleanup_shutdown(bridge):
    b = bridge
    # unconfigured: no driver, no joint_states
    assert b.state() == UNCONFIGURED
    assert b.diagnosed("unconfigured")["message"] == "not configured"
    assert b.streams(0.3) == 0

    # configure -> inactive: connected to the (emulated) arms, streaming joint_states at home, not moving
    b.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
    assert b.spin_until(lambda: len(b.joint_states) > 10, 5.0), "no joint_states after configure"
    start = b.q("left_joint1")
    assert start == pytest.approx(HOME["left_joint1"], abs=1e-4)
    assert b.diagnosed("inactive")["commands"] == "0"
    b.send("left_joint1", start + 0.2)
    b.spin_for(1.0)
    assert b.q("left_joint1") == pytest.approx(start, abs=1e-3), "an inactive bridge moved the arm"
    refused = b.diagnosed("inactive")
    assert (refused["rejected"], refused["last_rejection"]) == ("1", "bridge is inactive, not active")

    # activate -> active: a trajectory is followed
    b.step(Transition.TRANSITION_ACTIVATE, ACTIVE)
    assert b.diagnosed("active")
    b.send("left_joint1", start + 0.2)
    assert b.spin_until(lambda: abs(b.q("left_joint1") - (start + 0.2)) < 2e-3, 5.0), (
        f"the active bridge did not follow: left_joint1 at {b.q('left_joint1'):.4f}, target {start + 0.2:.4f}"
    )

    # deactivate -> inactive: the arm holds where it is and a new trajectory does not move it
    b.step(Transition.TRANSITION_DEACTIVATE, INACTIVE)
    assert b.diagnosed("inactive")
    held = b.q("left_joint1")
    b.send("left_joint1", start)
    b.spin_for(1.0)
    assert b.streams(0.3) > 0, "joint_states stopped while inactive"
    assert b.q("left_joint1") == pytest.approx(held, abs=1e-3), "a deactivated bridge moved the arm"
    refused = b.diagnosed("inactive")
    assert (refused["rejected"], refused["last_rejection"]) == ("2", "bridge is inactive, not active")

    # cleanup -> unconfigured: disconnected, joint_states stop
    b.step(Transition.TRANSITION_CLEANUP, UNCONFIGURED)
    assert b.diagnosed("unconfigured")["message"] == "not configured"
    b.spin_for(0.2)
    assert b.streams(0.5) == 0, "joint_states after cleanup"

    # the same virtual CAN ports again (cleanup released them), then shutdown from inactive
    b.step(Transition.TRANSITION_CONFIGURE, INACTIVE)
    assert b.streams(0.5) > 0
    b.step(Transition.TRANSITION_INACTIVE_SHUTDOWN, FINALIZED)
    b.spin_for(0.2)
    assert b.streams(0.5) == 0, "joint_states after shutdown"
    assert b.available() == set()
