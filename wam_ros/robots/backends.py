"""The vendor arm backends of a robot setup, built from the bridge's settings (ROS-free).

franka: one FrankaBackend (franky) per FR3, by FCI host. agilex: one PiperBackend (piper_sdk) per
follower arm, by CAN port; with leader ports also the Cobot Magic leader arms, connected here and
only ever read (teleop commands reach the followers through the supervisor); with `emulate`,
emulated Pipers answering on python-can's virtual bus (dry runs). tienkung: one TienKungBackend,
a topic bridge whose command publisher the caller supplies (and which the caller feeds status).
The simulated robot has no backend here: sim_node runs the bridge on the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from wam_ros.config import SIDES, ConfigError, RobotConfig
from wam_ros.robots.agilex import DEFAULT_CAN_PORTS, PiperBackend
from wam_ros.robots.bridge import ArmBackend
from wam_ros.robots.franka import DEFAULT_FCI_HOSTS, FrankaBackend, FrankaSettings
from wam_ros.robots.tienkung import TienKungBackend

DRIVERS = {"franka": "franky", "agilex": "piper", "tienkung": "tienkung"}  # robot setup -> its arms' driver


@dataclass(frozen=True)
class BackendSettings:
    robot: str  # a key of DRIVERS
    franka_hosts: tuple[str, ...] = DEFAULT_FCI_HOSTS  # FCI host of the left, then the right FR3
    franka: FrankaSettings = FrankaSettings()
    can_ports: tuple[str, ...] = DEFAULT_CAN_PORTS  # CAN port of the left, then the right Piper
    leader_can_ports: tuple[str, ...] = ()  # of the left and right leader arms; (): none
    can_interface: str = "socketcan"  # python-can interface: virtual for dry runs
    emulate: bool = False  # answer on virtual CAN with emulated Pipers
    speed_percent: int = 100  # Piper MOVE J speed (%)


@dataclass
class Backends:
    arms: list[ArmBackend]  # what the bridge drives
    leaders: dict[str, PiperBackend] = field(default_factory=dict)  # side -> connected leader arm, read only
    emulators: list = field(default_factory=list)  # started PiperEmulators

    def release(self) -> None:
        """Disconnect the leaders and stop the emulators (the bridge disconnects the arms)."""
        for leader in self.leaders.values():
            leader.disconnect()
        self.leaders.clear()
        for emulator in self.emulators:
            emulator.stop()
        self.emulators.clear()


def make_backends(
    settings: BackendSettings,
    robot: RobotConfig,
    tienkung_command: Callable[[list[str], list[float]], None] | None = None,
) -> Backends:
    """The backends of `settings.robot`, not yet connected (leaders excepted); `tienkung_command`
    publishes TienKung's commands. Raises ConfigError for settings that cannot work, and what
    connecting a leader raises; what was started by then is released."""
    if settings.robot == "franka":
        return Backends(
            [FrankaBackend(side, host, settings.franka) for side, host in zip(SIDES, settings.franka_hosts)]
        )
    if settings.robot == "agilex":
        return _piper_backends(settings, robot)
    if settings.robot == "tienkung":
        if tienkung_command is None:
            raise ValueError("robot tienkung: give tienkung_command, the publisher of its arm commands")
        return Backends([TienKungBackend(tienkung_command)])
    raise ConfigError(
        f"robot {settings.robot!r} has no arm backends here (robots: {', '.join(DRIVERS)}); "
        "the simulated robot runs in sim_node"
    )


def _piper_backends(settings: BackendSettings, robot: RobotConfig) -> Backends:
    leader_ports, interface = settings.leader_can_ports, settings.can_interface
    if leader_ports and len(leader_ports) != 2:
        raise ConfigError(f"agilex.leader_can_ports: give two ports (left, right), got {list(leader_ports)}")
    if settings.emulate and interface != "virtual":
        raise ConfigError("agilex.emulate: needs agilex.can_interface:=virtual")
    backends = Backends(
        [PiperBackend(side, port, interface, settings.speed_percent) for side, port in zip(SIDES, settings.can_ports)]
    )
    try:
        if settings.emulate:
            from wam_ros.robots.piper_emulator import PiperEmulator  # python-can: only dry runs need it here

            for ports in (settings.can_ports, leader_ports):  # followers, then leaders
                for side, port in zip(SIDES, ports):
                    emulator = PiperEmulator.at_home(robot, side, port)
                    emulator.start()
                    backends.emulators.append(emulator)
        for side, port in zip(SIDES, leader_ports):
            leader = PiperBackend(side, port, interface)
            leader.connect()
            backends.leaders[side] = leader
    except BaseException:
        backends.release()
        raise
    return backends
