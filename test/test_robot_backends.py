"""The vendor backends a robot setup gets (wam_ros.robots.backends), built without ROS: which
backends, from which settings, the settings refused, and what a failed start leaves behind."""

from __future__ import annotations

import numpy as np
import pytest

from wam_ros.config import ConfigError, load_robot_config
from wam_ros.robots.agilex import PiperBackend
from wam_ros.robots.backends import BackendSettings, make_backends
from wam_ros.robots.bridge import BridgeError
from wam_ros.robots.franka import FrankaBackend, FrankaSettings
from wam_ros.robots.piper_emulator import PiperEmulator
from wam_ros.robots.tienkung import TienKungBackend

AGILEX = load_robot_config("agilex")


def test_an_unknown_robot_names_the_robots_that_have_backends():
    with pytest.raises(
        ConfigError,
        match=r"robot 'sim' has no arm backends here \(robots: franka, agilex, "
        r"tienkung\); the simulated robot runs in sim_node",
    ):
        make_backends(BackendSettings("sim"), AGILEX)


def test_franka_gets_one_unconnected_franky_backend_per_fci_host():
    settings = FrankaSettings(dynamics_factor=0.5, realtime=False)
    backends = make_backends(BackendSettings("franka", ("10.0.0.2", "10.0.0.3"), settings), load_robot_config("franka"))
    assert [type(arm) for arm in backends.arms] == [FrankaBackend, FrankaBackend]
    assert [(arm.side, arm.host, arm.settings) for arm in backends.arms] == [
        ("left", "10.0.0.2", settings),
        ("right", "10.0.0.3", settings),
    ]
    assert all(arm.robot is None for arm in backends.arms)  # connecting is the bridge's configure
    assert not backends.leaders and not backends.emulators


def test_tienkung_commands_go_to_the_callers_publisher():
    sent = []
    backends = make_backends(
        BackendSettings("tienkung"),
        load_robot_config("tienkung"),
        lambda names, positions: sent.append((names, positions)),
    )
    [arm] = backends.arms
    assert isinstance(arm, TienKungBackend)
    arm.command(np.zeros(len(arm.joint_names)))
    assert sent and sent[0][0][:2] == ["11", "12"]  # motor ids as joint names
    with pytest.raises(ValueError, match="give tienkung_command"):
        make_backends(BackendSettings("tienkung"), load_robot_config("tienkung"))


@pytest.mark.parametrize(
    "settings, reason",
    [
        (
            BackendSettings("agilex", leader_can_ports=("can_master_left",)),
            r"agilex.leader_can_ports: give two ports \(left, right\), got \['can_master_left'\]",
        ),
        (BackendSettings("agilex", emulate=True), "agilex.emulate: needs agilex.can_interface:=virtual"),
    ],
)
def test_agilex_settings_that_cannot_work_are_refused(settings, reason):
    with pytest.raises(ConfigError, match=reason):
        make_backends(settings, AGILEX)


def test_emulated_agilex_starts_followers_and_leaders_and_reads_the_leaders():
    ports = ("vcan_backends_left", "vcan_backends_right")
    leader_ports = ("vcan_backends_master_left", "vcan_backends_master_right")
    backends = make_backends(
        BackendSettings(
            "agilex",
            can_ports=ports,
            leader_can_ports=leader_ports,
            can_interface="virtual",
            emulate=True,
            speed_percent=50,
        ),
        AGILEX,
    )
    try:
        assert [e.channel for e in backends.emulators] == [*ports, *leader_ports]
        assert [(arm.side, arm.can_port, arm.speed_percent, arm.sdk) for arm in backends.arms] == [
            ("left", ports[0], 50, None),
            ("right", ports[1], 50, None),
        ]  # followers: connected by the bridge
        home = AGILEX.home_positions()
        reading = backends.leaders["right"].read(0.0)  # leaders: connected here, read only
        assert reading.positions[0] == pytest.approx(home["right_joint1"], abs=1e-4)
    finally:
        backends.release()
    assert not backends.leaders and not backends.emulators


def test_a_leader_that_does_not_answer_stops_the_emulators_already_started(monkeypatch):
    stopped, stop = [], PiperEmulator.stop
    monkeypatch.setattr(PiperEmulator, "stop", lambda self: (stopped.append(self.channel), stop(self)))

    def no_answer(backend: PiperBackend) -> None:
        raise BridgeError(f"{backend.side} Piper: no joint feedback on CAN port {backend.can_port}")

    monkeypatch.setattr(PiperBackend, "connect", no_answer)
    ports, leader_ports = ("vcan_fail_left", "vcan_fail_right"), ("vcan_fail_master_left", "vcan_fail_master_right")
    with pytest.raises(BridgeError, match="left Piper: no joint feedback on CAN port vcan_fail_master_left"):
        make_backends(
            BackendSettings(
                "agilex", can_ports=ports, leader_can_ports=leader_ports, can_interface="virtual", emulate=True
            ),
            AGILEX,
        )
    assert stopped == [*ports, *leader_ports]
