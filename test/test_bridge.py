"""The arm bridge core: its checks and watchdog on a scripted backend with a hand-driven clock, and
with real drivers where this machine allows: piper_sdk over python-can's virtual bus against an
emulated Piper, and the MuJoCo simulator."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wam_ros.config import load_robot_config
from wam_ros.robots.agilex import PiperBackend
from wam_ros.robots.bridge import (
    ArmState,
    Bridge,
    BridgeError,
    BridgeLimits,
    BridgeMode,
    CommandRejected,
    LimitedFollower,
)
from wam_ros.robots.piper_emulator import PiperEmulator

ROBOT = load_robot_config("agilex")
NAMES = ROBOT.joint_names
HOME = ROBOT.home_positions()
LIMITS = BridgeLimits.for_robot(ROBOT, NAMES)
J1, J2 = NAMES.index("left_joint1"), NAMES.index("left_joint2")


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dt=st.sampled_from([0.002, 0.01, 0.02]))
def test_the_follower_never_exceeds_position_velocity_or_acceleration_limits(seed, dt):
    rng = np.random.default_rng(seed)
    start = rng.uniform(LIMITS.lower, LIMITS.upper)
    follower = LimitedFollower(LIMITS, start)
    positions = [follower.position.copy()]
    target = rng.uniform(LIMITS.lower - 0.5, LIMITS.upper + 0.5)  # also targets outside the range
    for k in range(300):
        if k % 60 == 0:
            target = rng.uniform(LIMITS.lower - 0.5, LIMITS.upper + 0.5)
        positions.append(follower.step(target, dt))
    p = np.array(positions)
    assert (p >= LIMITS.lower - 1e-12).all() and (p <= LIMITS.upper + 1e-12).all()
    v = np.diff(p, axis=0) / dt
    assert (np.abs(v) <= LIMITS.max_velocity + 1e-9).all()
    a = np.diff(v, axis=0) / dt
    # clipping at a position limit may stop a joint harder; away from the limits acceleration holds
    free = (p > LIMITS.lower + 1e-6) & (p < LIMITS.upper - 1e-6)
    inside = free[:-2] & free[1:-1] & free[2:]
    assert (np.abs(a[inside]) <= np.broadcast_to(LIMITS.max_acceleration, a.shape)[inside] + 1e-6).all()


def test_the_follower_settles_on_a_target_without_overshoot():
    follower = LimitedFollower(LIMITS, np.array([HOME[n] for n in NAMES]))
    target = np.clip(
        follower.position + 0.4 * np.sign((LIMITS.lower + LIMITS.upper) / 2 - follower.position),
        LIMITS.lower,
        LIMITS.upper,
    )
    trace = np.array([follower.step(target, 0.01) for _ in range(400)])
    np.testing.assert_allclose(trace[-1], target, atol=1e-6)
    overshoot = np.max((trace - target) * np.sign(target - trace[0]), axis=0)
    assert (overshoot < 1e-3).all()


@pytest.fixture
def piper_pair(request):
    """Two emulated Pipers on virtual CAN ports, and a bridge driving them through piper_sdk."""
    suffix = request.node.name[-20:]
    ports = {side: f"can_{side}_{suffix}" for side in ("left", "right")}
    emulators = {side: PiperEmulator.at_home(ROBOT, side, port) for side, port in ports.items()}
    for emulator in emulators.values():
        emulator.start()
    bridge = Bridge([PiperBackend(side, port, interface="virtual") for side, port in ports.items()], LIMITS, NAMES)
    clock = time.monotonic
    bridge.configure(clock())
    bridge.activate(clock())
    yield bridge, emulators, clock
    bridge.cleanup()
    for emulator in emulators.values():
        emulator.stop()


def run(bridge, clock, seconds: float, dt: float = 0.01) -> None:
    end = clock() + seconds
    while clock() < end:
        bridge.step(clock(), dt)
        time.sleep(dt)


def test_piper_bridge_reads_both_arms_and_tracks_a_trajectory(piper_pair):
    bridge, emulators, clock = piper_pair
    start = bridge.measured.copy()
    np.testing.assert_allclose(start, [HOME[n] for n in NAMES], atol=1e-4)  # 0.001 deg resolution
    goal = start.copy()
    goal[NAMES.index("left_joint1")] += 0.3
    goal[NAMES.index("right_joint3")] -= 0.2
    goal[NAMES.index("left_gripper")] = 0.01
    now = clock()
    bridge.set_trajectory(NAMES, np.array([now + 0.5, now + 1.0]), np.vstack([(start + goal) / 2, goal]), now)
    run(bridge, clock, 1.6)
    np.testing.assert_allclose(bridge.measured, goal, atol=2e-3)
    np.testing.assert_allclose(emulators["left"].joints[0], goal[0], atol=1e-4)
    assert emulators["left"].gripper_mm == pytest.approx(20.0, abs=0.05)  # opening = 2 x travel
    assert emulators["left"].enabled and emulators["left"].ctrl_mode == 0x01
    assert 0.0 <= bridge.status.latency < 0.05


@pytest.mark.parametrize(
    "names, positions, reason",
    [
        (["left_joint1", "elbow"], [[0.0, 0.0]], re.escape("unknown or repeated ['elbow']")),
        (["left_joint1"], [[float("nan")]], "non-finite target"),
        (["left_joint2"], [[3.5]], r"left_joint2=3.5000 at point 0 outside \[0.0000, 3.1400\]"),
        (["left_joint1"], [[0.2]], r"left_joint1: first point is 0.800 from the commanded position \(max_step 0.35\)"),
    ],
)
def test_bad_commands_are_rejected_and_the_arms_hold(piper_pair, names, positions, reason):
    bridge, emulators, clock = piper_pair
    before = bridge.measured.copy()
    with pytest.raises(CommandRejected, match=reason):
        bridge.set_trajectory(names, np.array([clock() + 0.5]), np.array(positions), clock())
    run(bridge, clock, 0.3)
    np.testing.assert_allclose(bridge.measured, before, atol=1e-4)
    assert bridge.status.rejected == 1 and bridge.status.mode == BridgeMode.ACTIVE


def test_silent_can_is_an_error_that_needs_explicit_recovery(piper_pair):
    bridge, emulators, clock = piper_pair
    emulators["right"].silent = True
    with pytest.raises(BridgeError, match=r"no state from the driver of right_joint1\.\.\. for 0\.5"):
        run(bridge, clock, 1.5)
    assert bridge.status.mode == BridgeMode.ERROR
    with pytest.raises(CommandRejected, match="bridge is error, not active"):
        bridge.set_trajectory(NAMES, np.array([clock() + 0.5]), bridge.measured[None, :], clock())
    emulators["right"].silent = False
    time.sleep(0.1)
    bridge.recover(clock())
    assert bridge.status.mode == BridgeMode.INACTIVE  # recovery holds; activation is explicit too
    bridge.activate(clock())
    run(bridge, clock, 0.2)


def test_an_arm_fault_is_reported_by_name(piper_pair):
    bridge, emulators, clock = piper_pair
    emulators["left"].arm_status = 0x07
    with pytest.raises(BridgeError, match=r"arm status 0x07 \(collision\)"):
        run(bridge, clock, 0.5)


def test_no_feedback_at_connect_is_a_clear_error():
    backend = PiperBackend("left", "can_nobody_home", interface="virtual", feedback_timeout=0.3)
    with pytest.raises(BridgeError, match="left Piper: no joint feedback on CAN port can_nobody_home within 0.3 s"):
        backend.connect()


# --- the core on a scripted arm and a hand-driven clock ----------------------------------------
class FakeArm:
    """A backend whose arm is wherever it was last commanded. `offset` glitches its readings (not
    the arm); hold() holds at its latest reading, as PiperBackend and TienKungBackend do."""

    def __init__(self, names: list[str], start: np.ndarray):
        self.joint_names = names
        self.q = np.array(start, dtype=float)
        self.offset = np.zeros(len(names))
        self.error = ""

    def connect(self) -> None: ...
    def enable(self) -> None: ...
    def recover(self) -> None: ...
    def disconnect(self) -> None: ...

    def read(self, now: float) -> ArmState:
        return ArmState(self.q + self.offset, np.zeros(len(self.q)), np.zeros(len(self.q)), now, self.error)

    def command(self, positions: np.ndarray) -> None:
        self.q = np.array(positions, dtype=float)

    def hold(self) -> None:
        self.command(self.q + self.offset)


def fake_bridge(start: dict[str, float] | None = None, **kwargs) -> tuple[Bridge, FakeArm]:
    """An active bridge at t = 0 over two scripted arms; returns the bridge and the left arm."""
    q = {**HOME, **(start or {})}
    arms = [
        FakeArm([n for n in NAMES if n.startswith(side)], [q[n] for n in NAMES if n.startswith(side)])
        for side in ("left", "right")
    ]
    bridge = Bridge(arms, LIMITS, NAMES, **kwargs)
    bridge.configure(0.0)
    bridge.activate(0.0)
    return bridge, arms[0]


def advance(bridge: Bridge, t: float, seconds: float, dt: float = 0.01, each=None) -> float:
    """Step the bridge from t for `seconds`, calling each(now) before every step; returns the new t."""
    for _ in range(round(seconds / dt)):
        t += dt
        if each is not None:
            each(t)
        bridge.step(t, dt)
    return t


def start_move(bridge: Bridge, now: float, distance: float = 1.0, duration: float = 4.0) -> None:
    """left_joint1 moves `distance` over `duration` s, in points 0.1 s apart."""
    times = now + np.arange(1, round(duration / 0.1) + 1) * 0.1
    positions = bridge.commanded[J1] + distance * (times - now)[:, None] / duration
    bridge.set_trajectory(["left_joint1"], times, positions, now)


def test_a_rejected_trajectory_stops_the_running_one_and_the_arm_decelerates():
    bridge, arm = fake_bridge()
    start = bridge.commanded[J1]
    start_move(bridge, 0.0)
    t = advance(bridge, 0.0, 1.0)
    assert bridge.commanded[J1] - start > 0.2  # under way
    with pytest.raises(CommandRejected, match=r"left_joint2=-0.0100 at point 0 outside \[0.0000, 3.1400\]"):
        bridge.set_trajectory(["left_joint2"], np.array([t]), np.array([[-0.01]]), t)
    at_rejection = bridge.commanded[J1]
    advance(bridge, t, 2.0)
    # 0.25 rad/s braked at 10 rad/s^2: a few mrad
    assert abs(arm.q[0] - at_rejection) < 0.01
    assert bridge.status.rejected == 1 and "left_joint2=-0.0100" in bridge.status.last_rejection
    assert bridge.status.mode == BridgeMode.ACTIVE


def test_a_hold_a_hair_outside_a_limit_is_clipped_into_it_and_anything_further_is_rejected():
    bridge, arm = fake_bridge(start={"left_joint2": 0.0002})
    bridge.set_trajectory(["left_joint2"], np.array([0.0]), np.array([[-0.0005]]), 0.0)  # a hold from a reading
    advance(bridge, 0.0, 0.5)
    assert bridge.status.rejected == 0
    assert arm.q[1] == pytest.approx(0.0, abs=1e-9)  # the lower limit, not beyond
    with pytest.raises(CommandRejected, match=r"left_joint2=-0.0020 at point 0 outside"):
        bridge.set_trajectory(["left_joint2"], np.array([0.5]), np.array([[-0.002]]), 0.5)
    with pytest.raises(CommandRejected, match=r"left_joint2=-0.0005 at point 1 outside"):  # a trajectory is no hold
        bridge.set_trajectory(["left_joint2"], np.array([0.6, 0.7]), np.array([[0.0], [-0.0005]]), 0.5)
    assert bridge.status.rejected == 2


H1 = HOME["left_joint1"]


@pytest.mark.parametrize(
    "max_step, times, positions, reason",
    [
        (0.35, [math.nan], [[H1]], "non-finite point time"),
        (0.35, [61.0], [[H1]], r"last point due 61.0 s after arrival \(at most 60 s\)"),
        (0.35, [0.1, 0.1005], [[H1], [H1]], r"points 0 and 1 are 0.500 ms apart \(at least 1 ms\)"),
        (
            0.35,
            [0.1, 0.2],
            [[H1], [H1 + 0.4]],
            r"left_joint1: 4.000 rad/s between points 0 and 1 exceeds max_velocity 3.142",
        ),
        # allowed by a large max_step, but no joint gets 0.8 rad away at once
        (
            1.0,
            [0.0],
            [[H1 + 0.8]],
            r"left_joint1: 3\.\d+ rad/s from the commanded position to the first point exceeds "
            r"max_velocity 3.142",
        ),
        # stale: its points lie 3 s in the past, and the point due now is its last
        (
            0.35,
            [-3.0, -2.0],
            [[H1], [H1 + 0.8]],
            r"left_joint1: point due now \(3.000 s after the first\) is 0\.5\d+ from",
        ),
    ],
)
def test_absurd_timing_is_rejected_and_stops_the_running_trajectory(max_step, times, positions, reason):
    bridge, arm = fake_bridge(max_step=max_step)
    start_move(bridge, 0.0)
    t = advance(bridge, 0.0, 1.0)
    with pytest.raises(CommandRejected, match=reason):
        bridge.set_trajectory(["left_joint1"], t + np.array(times), np.array(positions), t)
    at_rejection = bridge.commanded[J1]
    advance(bridge, t, 1.0)
    assert abs(arm.q[0] - at_rejection) < 0.01
    assert bridge.status.rejected == 1 and re.search(reason, bridge.status.last_rejection)


def test_a_gripper_target_is_a_set_point_that_may_change_in_one_step():
    bridge, arm = fake_bridge()
    stroke = ROBOT.arm.gripper.stroke
    bridge.set_trajectory(["left_gripper"], np.array([0.05, 0.1]), np.array([[0.0], [stroke]]), 0.0)
    advance(bridge, 0.0, 1.0)
    assert arm.q[6] == pytest.approx(stroke, abs=1e-6)  # at the gripper's 0.1 m/s, not in 50 ms


def test_a_refused_message_counts_as_a_rejection_and_stops_the_running_trajectory():
    bridge, arm = fake_bridge()
    start_move(bridge, 0.0)
    t = advance(bridge, 0.0, 1.0)
    bridge.reject("every point needs 2 positions, one per joint name")
    at_rejection = bridge.commanded[J1]
    advance(bridge, t, 1.0)
    assert abs(arm.q[0] - at_rejection) < 0.01
    assert bridge.status.rejected == 1 and bridge.status.last_rejection.startswith("every point needs 2")


def test_the_watchdog_drops_a_running_trajectory_when_heartbeats_stop():
    bridge, arm = fake_bridge(command_timeout=0.5)
    start = bridge.commanded[J1]
    start_move(bridge, 0.0)
    t = advance(bridge, 0.0, 1.0, each=bridge.heartbeat)  # the supervisor beats at 100 Hz
    t = advance(bridge, t, 0.45)  # silence within the timeout: still moving
    assert bridge.status.watchdog_stops == 0 and bridge.commanded[J1] - start > 0.3
    t = advance(bridge, t, 0.1)
    assert bridge.status.watchdog_stops == 1
    assert re.fullmatch(r"no supervisor heartbeat for 0\.5\d s: holding", bridge.status.watchdog)
    stopped = arm.q[0]
    advance(bridge, t, 3.0)
    assert abs(arm.q[0] - stopped) < 0.01
    assert bridge.status.mode == BridgeMode.ACTIVE and bridge.status.watchdog_stops == 1
    # the next trajectory runs, and clears the reason
    bridge.set_trajectory(["left_joint1"], np.array([t + 0.5]), np.array([[stopped - 0.1]]), t)
    assert bridge.status.watchdog == ""


@pytest.mark.parametrize("command_timeout, heartbeats", [(0.5, True), (0.0, False)])
def test_a_trajectory_runs_to_its_end_with_heartbeats_or_without_a_watchdog(command_timeout, heartbeats):
    bridge, arm = fake_bridge(command_timeout=command_timeout)
    goal = bridge.commanded[J1] + 1.0
    start_move(bridge, 0.0)
    advance(bridge, 0.0, 5.0, each=bridge.heartbeat if heartbeats else None)
    assert arm.q[0] == pytest.approx(goal, abs=1e-6) and bridge.status.watchdog_stops == 0


@pytest.mark.parametrize(
    "glitch, reason",
    [
        (0.5, r"left_joint1 jumped 0\.50\d+ to 0\.1\d+ in 10 ms \(max_velocity 3.142\)"),
        (math.nan, "left_joint1 reads nan"),
        (-3.0, r"left_joint1 reads -3\.\d+, outside its range \[-2.6179, 2.6179\]"),
    ],
)
def test_an_implausible_reading_is_a_fault_that_holds_and_never_commands_the_glitch(glitch, reason):
    bridge, arm = fake_bridge()
    start_move(bridge, 0.0)
    t = advance(bridge, 0.0, 1.0)
    plausible = bridge.measured.copy()
    arm.offset[0] = glitch
    with pytest.raises(BridgeError, match=r"left_joint1\.\.\.: implausible reading, " + reason):
        advance(bridge, t, 0.01)
    t += 0.01
    assert bridge.status.mode == BridgeMode.ERROR and "implausible reading" in bridge.status.error
    # held at the last commanded position (not at the glitch, where its own hold() would go)
    assert abs(arm.q[0] - plausible[J1]) < 0.01
    np.testing.assert_array_equal(bridge.measured, plausible)  # joint_states keep the last plausible reading
    with pytest.raises(BridgeError, match="implausible reading"):
        bridge.recover(t)
    arm.offset[0] = 0.0
    for _ in range(2):  # the reading back from a jump is a jump too; the one after is steady
        t += 0.01
        try:
            bridge.step(t, 0.01)
        except BridgeError:
            pass
    bridge.recover(t)
    bridge.activate(t)
    assert bridge.commanded[J1] == pytest.approx(arm.q[0])  # from the sane reading
    held = arm.q.copy()
    advance(bridge, t, 0.5)
    np.testing.assert_allclose(arm.q, held, atol=1e-9)


def test_a_lasting_glitch_refuses_recovery_instead_of_driving_the_arm_to_it():
    bridge, arm = fake_bridge()
    t = advance(bridge, 0.0, 0.1)
    held = arm.q.copy()
    arm.offset[0] = 2.0  # a steady, in-range wrong reading
    with pytest.raises(BridgeError, match="jumped"):
        advance(bridge, t, 0.01)
    t += 0.01
    for _ in range(3):  # steady now, but not where the arm was held
        t += 0.01
        with pytest.raises(BridgeError, match=r"left_joint1 reads 1\.4000, 2\.000 from -0\.6000 where it was held"):
            bridge.recover(t)
    np.testing.assert_allclose(arm.q, held, atol=1e-9)
    arm.offset[0] = 0.0
    with pytest.raises(BridgeError, match="jumped"):  # back from the glitch: a jump too
        bridge.recover(t + 0.01)
    bridge.recover(t + 0.02)
    assert bridge.status.mode == BridgeMode.INACTIVE
    np.testing.assert_allclose(bridge.commanded[:7], held, atol=1e-9)


# --- faults through piper_sdk and the emulated Piper ------------------------------------------
@pytest.mark.parametrize(
    "side, attribute, value, reason",
    [
        (
            "left",
            "arm_status",
            0x0B,
            re.escape("arm in teach mode (0x0B teach record): leave teach mode on the arm, then ~/recover"),
        ),
        ("right", "arm_status", 0x0D, re.escape("arm in teach mode (0x0D teach pause)")),
        (
            "right",
            "err_code",
            0x0204,
            re.escape("err_code 0x0204: joint 3 communication error, joint 2 beyond its angle limit"),
        ),
    ],
)
def test_teach_mode_and_joint_error_bits_are_piper_faults(piper_pair, side, attribute, value, reason):
    bridge, emulators, clock = piper_pair
    setattr(emulators[side], attribute, value)
    with pytest.raises(BridgeError, match=reason):
        run(bridge, clock, 0.5)
    with pytest.raises(BridgeError, match=reason):
        bridge.recover(clock())
    setattr(emulators[side], attribute, 0)
    time.sleep(0.05)
    bridge.recover(clock())
    assert bridge.status.mode == BridgeMode.INACTIVE


def test_a_glitched_piper_reading_holds_the_arm_and_recovery_waits_for_sane_readings(piper_pair):
    bridge, emulators, clock = piper_pair
    left = emulators["left"]
    now = clock()
    goal = bridge.commanded[J1] + 0.5
    start_move(bridge, now, 0.5, 2.0)
    run(bridge, clock, 0.5)
    left.reading_offset[0] = 1.0  # one joint's feedback frame turns to garbage
    with pytest.raises(BridgeError, match=r"implausible reading, left_joint1 jumped"):
        run(bridge, clock, 0.5)
    time.sleep(0.3)
    stopped = left.joints[0]
    assert goal - stopped > 0.2  # the trajectory went with the fault
    with pytest.raises(BridgeError, match="where it was held"):
        bridge.recover(clock())
    time.sleep(0.3)
    assert left.joints[0] == pytest.approx(stopped, abs=1e-3)  # never commanded towards the glitch
    left.reading_offset[0] = 0.0
    time.sleep(0.05)
    try:
        bridge.recover(clock())  # the first sane reading after the glitch reads as a jump back
    except BridgeError:
        time.sleep(0.05)
        bridge.recover(clock())
    bridge.activate(clock())
    assert bridge.commanded[J1] == pytest.approx(stopped, abs=1e-3)
    run(bridge, clock, 0.5)
    assert left.joints[0] == pytest.approx(stopped, abs=1e-3)
