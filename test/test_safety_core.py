"""The supervisor's fault catalogue (issue "Safety chain"), without ROS: every case ends in a safe
state with a named reason, and no input makes the core raise or forward a point outside a limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.supervisor_harness import ARM, DT, GRIPPERS, LIMITS, ROBOT, Harness, make_config, running
from wam_ros.config import ConfigError
from wam_ros.control.commands import Chunk, Command
from wam_ros.control.limits import JointLimits, WorkspaceBox, robot_joint_limits
from wam_ros.control.supervisor import (
    Rejection,
    RollbackFired,
    Supervisor,
    SupervisorConfig,
    SupervisorMode,
    Transition,
)
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.actions import EE_AXES, EE_DELTA, ActionConverter
from wam_ros.robots.urdf import generate_urdf

LO = np.array([LIMITS[n].min_position for n in ARM])
HI = np.array([LIMITS[n].max_position for n in ARM])
STROKE = ROBOT.arm.gripper.stroke


def commands(events: list) -> list[Command]:
    return [e for e in events if isinstance(e, Command)]


def assert_inside_limits(command: Command) -> None:
    p = command.positions
    assert np.isfinite(p).all()
    assert (p[:, :12] >= LO).all() and (p[:, :12] <= HI).all(), f"{command.source} leaves the limits"
    assert (p[:, 12:] >= 0).all() and (p[:, 12:] <= STROKE).all()


def test_a_hold_at_a_reading_just_outside_a_limit_is_clipped_into_it():
    h = running()
    h.q = h.q.copy()
    h.q[1] = HI[1] + 5e-4  # encoder noise at a limit
    h.feed(0.1)
    hold = commands(h.sup.hold(0.1, "test"))[0]
    assert_inside_limits(hold)
    assert hold.positions[0, 1] == HI[1]


@pytest.mark.parametrize("dt", [2.0**32, 3e9, 1e-10, 5e-324, 0.0, -DT, math.nan, math.inf])
def test_absurd_time_steps_are_rejected_before_anything_divides_by_them(dt):
    h = running()
    chunk = Chunk(7, h.now, list(ARM), np.tile(h.q, (15, 1)) + np.linspace(0, 0.1, 15)[:, None], dt)
    events = h.sup.submit_chunk(h.now, chunk)
    assert len(events) == 1 and isinstance(events[0], Rejection) and "dt" in events[0].reason
    assert h.sup.last_rejection == events[0].reason and h.sup.rejected == 1


def test_a_chunk_lasting_longer_than_a_minute_is_rejected():
    h = running()
    events = h.sup.submit_chunk(h.now, Chunk(9, h.now, list(ARM), np.tile(h.q, (200, 1)), 0.5))
    assert isinstance(events[0], Rejection) and "longer than 60" in events[0].reason


def test_a_rollback_to_a_checkpoint_read_outside_a_limit_stays_inside_the_limits():
    h = running(make_config(consecutive=1))
    h.q = h.q.copy()
    h.q[3] = LO[3] - 0.02  # a bad reading at the peak
    h.feed(0.6)
    h.value(0.9)
    h.q = h.q.copy()
    h.q[3] = LO[3] + 0.2
    h.feed(1.2)
    events = h.value(0.3)
    assert any(isinstance(e, RollbackFired) for e in events)
    rollback = commands(events)[0]
    assert rollback.source == "rollback"
    assert_inside_limits(rollback)
    # arriving at the clipped target counts as reaching the checkpoint
    h.q = rollback.positions[-1, :12].copy()
    h.feed(1.2 + len(rollback.positions) * rollback.dt)
    assert h.sup.tick(h.now)[0].new == SupervisorMode.RESAMPLING


@pytest.mark.parametrize("bad", [math.inf, -math.inf, 1e300, math.nan, 1e30])
def test_absurd_end_effector_deltas_are_rejected_not_raised(bad):
    h = Harness(make_config(), converter=ActionConverter(ROBOT, Kinematics(generate_urdf(ROBOT))))
    h.feed(0.0)
    rows = np.zeros((15, 12))
    rows[3:, 4] = bad
    names = [f"{side}_{a}" for side in ("left", "right") for a in EE_AXES]
    events = h.chunk(rows, action_space=EE_DELTA, joint_names=names)
    assert len(events) == 1 and isinstance(events[0], Rejection), events
    assert h.sup.mode == SupervisorMode.HOLD


def test_joint_states_with_fewer_positions_than_names_are_ignored_with_a_reason():
    h = running()
    events = h.sup.update_joint_state(0.1, [*ARM, *GRIPPERS], [0.0] * 5)
    assert isinstance(events[0], Rejection) and "5 positions for 14 names" in events[0].reason
    np.testing.assert_allclose(h.sup._q_arm, h.q)  # the last good reading stays


def test_a_clock_going_back_holds_and_nothing_from_before_counts_as_fresh():
    h = running()
    h.feed(1000.0)
    h.value(0.5)
    h.chunk()
    assert h.sup.tick(1000.0) == []
    events = h.sup.tick(10.0)  # /clock rewound 990 s
    assert events[0].new == SupervisorMode.HOLD and "clock jumped back 990.000 s" in events[0].reason
    assert commands(events), "the arms are told to hold"
    # old readings stamped 1000 s must not look fresh at 10.5 s: a chunk needs new streams
    h.now = 10.5
    assert "no joint state" in h.chunk()[0].reason
    h.feed(10.6)
    h.value(0.5)
    assert h.chunk()[0].new == SupervisorMode.RUNNING


def test_the_node_reported_jump_is_handled_once():
    h = running()
    h.feed(5.0)
    events = h.sup.clock_jumped(2.0, -3.0)
    assert events[0].new == SupervisorMode.HOLD and "clock jumped back 3.000 s" in events[0].reason
    assert h.sup.tick(2.01) == []


@pytest.mark.parametrize("value", [1e30, 1.5, -0.2, math.inf, -math.inf])
def test_values_outside_their_range_are_rejected_and_never_become_the_peak(value):
    h = running()
    h.feed(0.1)
    h.value(0.6)
    events = h.value(value)
    assert isinstance(events[-1], Rejection) and "outside [0.0, 1.0]" in events[-1].reason
    assert h.sup.peak == pytest.approx(0.6) and h.sup.values_rejected == 1
    h.feed(0.2)
    assert not any(isinstance(e, RollbackFired) for e in h.value(0.55))


def test_a_chunks_value_heard_twice_counts_once():
    h = running(make_config(consecutive=2))
    h.feed(0.1)
    h.sup.update_value(0.1, 0.9, 20)
    h.feed(0.2)
    # the node hears chunk 21's value in its ActionChunk and in its ValueEstimate: one dip
    assert h.sup.update_value(0.2, 0.4, 21) == []
    assert h.sup.update_value(0.2, 0.4, 21) == []
    assert h.sup.mode == SupervisorMode.RUNNING
    h.feed(0.3)
    assert any(isinstance(e, RollbackFired) for e in h.sup.update_value(0.3, 0.4, 22)), "a second dip fires"


def test_a_resampled_chunk_starting_from_rest_gets_a_lead_in_instead_of_a_hold():
    h = running(make_config(consecutive=1))
    h.feed(0.6)
    h.value(0.9)
    h.q = h.q + np.eye(12)[0] * 0.3
    h.feed(1.2)
    rollback = commands(h.value(0.3))[0]
    h.q = rollback.positions[-1, :12].copy()
    h.feed(1.2 + len(rollback.positions) * rollback.dt)
    h.sup.tick(h.now)
    assert h.sup.mode == SupervisorMode.RESAMPLING
    far = np.tile(h.q + np.eye(12)[0] * 0.6, (15, 1))  # the policy's chunk starts 0.6 rad away (> max_start_deviation)
    events = h.chunk(far)
    assert commands(events), events
    command = commands(events)[-1]
    assert h.sup.mode == SupervisorMode.RUNNING
    np.testing.assert_allclose(command.positions[0, :12], h.q)
    np.testing.assert_allclose(command.positions[-1, :12], far[-1])
    assert_inside_limits(command)
    velocity = np.abs(np.diff(command.positions[:, :12], axis=0)) / DT
    assert (velocity <= np.array([LIMITS[n].max_velocity for n in ARM]) + 1e-6).all()
    # in RUNNING the same jump is still a fault of the policy
    events = h.chunk(np.tile(h.q + np.eye(12)[0] * 0.6, (15, 1)))
    assert isinstance(events[0], Rejection) and "max_start_deviation" in events[0].reason


def test_malformed_limits_and_workspace_are_named_at_configure():
    with pytest.raises(ConfigError, match="max_velocity: expected a number, got 'fast'"):
        robot_joint_limits(ROBOT, {"left_joint1": {"max_velocity": "fast"}})
    with pytest.raises(ConfigError, match="has_jerk_limits: expected true or false"):
        JointLimits(has_jerk_limits="yes")
    with pytest.raises(ConfigError, match=r"workspace.min: expected 3 finite numbers"):
        WorkspaceBox(("left_tcp",), (0.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="must be below max"):
        WorkspaceBox(("left_tcp",), (0.0, 0.0, 0.0), (1.0, -1.0, 1.0))


finite = st.floats(-1e6, 1e6, allow_nan=False)
anything = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324]))


@settings(max_examples=120, deadline=None)
@given(
    script=st.lists(
        st.tuples(
            st.sampled_from(["joints", "chunk", "value", "tick", "estop", "reset", "episode"]),
            st.floats(-5.0, 5.0),  # time step (negative: the clock goes back)
            st.integers(0, 2**32),
            st.lists(anything, min_size=0, max_size=4),
            st.integers(0, 3),
        ),
        max_size=25,
    ),
    clamp=st.booleans(),
)
def test_no_input_sequence_raises_or_forwards_a_point_outside_the_limits(script, clamp):
    config = SupervisorConfig.for_robot(ROBOT, clamp=clamp)
    sup = Supervisor(config, converter=ActionConverter(ROBOT, Kinematics(generate_urdf(ROBOT))))
    rng = np.random.default_rng(len(script))
    now = 0.0
    q = np.array([ROBOT.home_positions()[n] for n in ARM])
    for kind, step, number, values, variant in script:
        now += step
        if kind == "joints":
            q = np.clip(q + rng.normal(0.0, 0.05, q.shape), LO - 0.01, HI + 0.01)
            positions = [*q, STROKE, STROKE][: 14 - (variant == 3) * 3]
            if values and variant == 2:
                positions[number % len(positions)] = values[0]
            events = sup.update_joint_state(now, [*ARM, *GRIPPERS], positions)
            sup.update_observation(now)
        elif kind == "chunk":
            horizon = 1 + number % 20
            rows = np.tile(q, (horizon, 1)) + rng.normal(0.0, 0.1, (horizon, 12)).cumsum(axis=0)
            dt = values[0] if values and variant == 1 else DT
            if values and variant == 2:
                rows[number % horizon, number % 12] = values[-1]
            names, space = list(ARM), 0
            if variant == 3:
                names, space = [f"{s}_{a}" for s in ("left", "right") for a in EE_AXES], EE_DELTA
                rows = rng.normal(0.0, 0.02, (horizon, 12)) * (values[0] if values else 1.0)
            gripper = np.clip(rng.random((horizon, 2)), -0.5 if clamp else 0, 1.5)
            events = sup.submit_chunk(now, Chunk(number, now, names, rows, dt, list(GRIPPERS), gripper, space))
        elif kind == "value":
            events = sup.update_value(now, values[0] if values else 0.5, number % 5)
        elif kind == "tick":
            events = sup.tick(now)
        elif kind == "estop":
            events = sup.estop(now)
        elif kind == "reset":
            events = sup.reset(now)
        else:
            events = sup.start_episode(now)
        for event in events:
            assert isinstance(event, (Transition, Command, Rejection, RollbackFired)) or hasattr(event, "positions")
            if isinstance(event, Command):
                assert_inside_limits(event)
                assert event.dt == 0.0 or 1e-3 <= event.dt <= 1.0
                assert len(event.positions) == 1 or (len(event.positions) - 1) * event.dt <= 60.0


def test_a_stopped_clock_holds_and_refuses_chunks_until_time_advances():
    h = running()
    h.feed(0.1)
    events = h.sup.clock_stopped(0.1, 1.2)
    assert events[0].new == SupervisorMode.HOLD and "has not advanced for 1.20 s" in events[0].reason
    assert "has not advanced" in h.chunk()[0].reason  # streams "fresh" at a standing clock prove nothing
    h.feed(0.2)
    h.value(0.5)
    assert h.chunk()[0].new == SupervisorMode.RUNNING
