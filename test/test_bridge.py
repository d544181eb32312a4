"""The arm bridge core with real drivers where this machine allows: piper_sdk over python-can's
virtual bus against an emulated Piper, and the MuJoCo simulator."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from wam_ros.config import load_robot_config
from wam_ros.robots.agilex import PiperBackend
from wam_ros.robots.bridge import Bridge, BridgeError, BridgeLimits, BridgeMode, CommandRejected, LimitedFollower
from wam_ros.robots.piper_emulator import PiperEmulator

ROBOT = load_robot_config("agilex")
NAMES = ROBOT.joint_names
HOME = ROBOT.home_positions()
LIMITS = BridgeLimits.for_robot(ROBOT, NAMES)


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
    target = np.clip(follower.position + 0.4 * np.sign((LIMITS.lower + LIMITS.upper) / 2 - follower.position),
                     LIMITS.lower, LIMITS.upper)
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
    bridge = Bridge([PiperBackend(side, port, interface="virtual") for side, port in ports.items()],
                    LIMITS, NAMES)
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


@pytest.mark.parametrize("names, positions, reason", [
    (["left_joint1", "elbow"], [[0.0, 0.0]], re.escape("unknown or repeated ['elbow']")),
    (["left_joint1"], [[float("nan")]], "non-finite target"),
    (["left_joint2"], [[3.5]], r"left_joint2=3.5000 at point 0 outside \[0.0000, 3.1400\]"),
    (["left_joint1"], [[0.2]], r"left_joint1: first point is 0.800 from the commanded position \(max_step 0.35\)"),
])
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
