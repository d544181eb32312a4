"""The one description of the running system: which nodes, names, parameters and remaps.

Both `launch/dual_arm.launch.py` and `wam-ros bringup` are generated from `describe_system`,
so a launched system and an in-process one cannot disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from wam_ros.config import CAMERA_NAMES, ROBOTS, ConfigError, check_choice, load_yaml
from wam_ros.control.chunking import MODES as CHUNKING_MODES
from wam_ros.model.model_config import SAMPLERS
from wam_ros.paths import share_dir
from wam_ros.sim.tasks import CONDITIONS, PERTURBATIONS, TASKS, get_task

CAMERA_SOURCES = ("sim", "realsense", "orbbec", "external")
MOTION_SOURCES = ("none", "scripted")
TELEOP_SOURCES = ("none", "scripted", "leader", "spacemouse", "keyboard")
RECORD_SOURCES = ("synced", "raw")
BOOLEANS = ("true", "false")
HARDWARE_FAILURE_POLICIES = ("exit", "stay")
VIEWERS = ("none", "web")
SPLITS = ("none", "robot", "policy")
# A user's own Fast DDS configuration wins over the package's profile.
DDS_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
# A domain's participants listen on ports 7400 + 250 * domain + 10.. (RTPS well-known ports). Up to
# domain 100 they stay below Linux's ephemeral range (32768+); above it, any outgoing socket (Fast DDS
# opens several per participant) can hold a port a later participant needs, which then takes other
# UDP and shared-memory ports than its id implies.
SAFE_DOMAIN_IDS = range(1, 101)
# every node name describe_system gives (a parameter file may name any of them: one site file serves
# the simulated and the real robot)
NODE_NAMES = (
    "robot_state_publisher",
    "sim",
    "arm_bridge",
    "camera",
    "sync",
    "supervisor",
    "scripted_motion",
    "teleop",
    "recorder",
    "observation_encoder",
    "policy",
    "viewer",
    "rviz2",
)


def isolated_domain_id(seed: int, span: int = 1) -> int:
    """A ROS domain id for a private graph (a test session, a benchmark), chosen from `seed` so that
    concurrent runs rarely share one; `span` consecutive ids from it are all in SAFE_DOMAIN_IDS."""
    if not 1 <= span <= len(SAFE_DOMAIN_IDS):
        raise ValueError(f"span {span} is not within 1..{len(SAFE_DOMAIN_IDS)}")
    return SAFE_DOMAIN_IDS[seed % (len(SAFE_DOMAIN_IDS) - span + 1)]


def use_private_graph(domain_id: int | None = None) -> int:
    """Put this process (and the processes it starts) on a DDS domain of its own, on this host only:
    for the commands that run a simulated robot (demo, benchmark). Their /clock, joint trajectories
    and camera streams must never reach a real robot's nodes or another simulation on this machine
    (two simulations on one domain corrupted each other's episodes). Returns the domain id."""
    domain = isolated_domain_id(os.getpid()) if domain_id is None else domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return domain


def dds_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set so every wam_ros process uses config/fastdds.xml (shared memory
    large enough for whole camera sets); nothing when `environ` already configures Fast DDS."""
    if any(environ.get(name) for name in DDS_VARIABLES):
        return {}
    profile = str(share_dir() / "config" / "fastdds.xml")
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile}


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


LAUNCH_ARGUMENTS = (
    LaunchArgument("robot", "agilex", "Dual-arm setup: Franka FR3 pair, AgileX Piper (Cobot Magic), TienKung", ROBOTS),
    LaunchArgument(
        "cameras",
        "sim",
        "Camera source: simulator, RealSense or Orbbec nodes, or external "
        "drivers already publishing <cam>/color/image_raw etc.",
        CAMERA_SOURCES,
    ),
    LaunchArgument("sim", "true", "Run the MuJoCo simulator instead of hardware bridges (sets use_sim_time)", BOOLEANS),
    LaunchArgument("motion", "none", "Command source for the arms: none, or a scripted demo motion", MOTION_SOURCES),
    LaunchArgument("rviz", "false", "Start RViz with config/wam.rviz", BOOLEANS),
    LaunchArgument("record", "false", "Record demonstrations to rosbag2 (MCAP), one bag per episode", BOOLEANS),
    LaunchArgument(
        "teleop",
        "none",
        "Teleoperation source: AgileX leader arms, SpaceMouse, keyboard, or the scripted expert in the simulator",
        TELEOP_SOURCES,
    ),
    LaunchArgument("episodes_dir", "episodes", "Directory the recorder writes episode bags to"),
    LaunchArgument("record_source", "synced", "Record synced observations or the raw camera topics", RECORD_SOURCES),
    LaunchArgument("checkpoint", "", "Path of a policy checkpoint (wam-ros train); empty runs no policy"),
    LaunchArgument("instruction", "", "Task instruction for the policy (empty: the checkpoint's only task)"),
    LaunchArgument(
        "chunking", "rtc", "Policy chunk hand-over: rtc (real-time chunking), blend or naive", CHUNKING_MODES
    ),
    LaunchArgument(
        "sampler", "", "Policy flow sampler: euler or unipc (empty: the checkpoint's config)", ("", *SAMPLERS)
    ),
    LaunchArgument("namespace", "", "ROS namespace for every node of the system"),
    LaunchArgument(
        "task",
        "",
        "Simulated benchmark task (pick_place, stack, handover): its scene, stage markers "
        "on task/state, and with teleop:=scripted its scripted expert; empty: the plain scene",
        ("", *TASKS),
    ),
    LaunchArgument(
        "condition",
        "clean",
        "Task condition: clean (the demonstrations' range) or random "
        "(lighting, table texture, colours, clutter, positions)",
        CONDITIONS,
    ),
    LaunchArgument("seed", "0", "Task episode seed (object positions, appearance, expert noise)"),
    LaunchArgument(
        "perturbation",
        "none",
        "Task perturbation: the object dropped after the grasp (landing "
        "3-5 cm away), slipping from the grasp (landing where it was lifted), or nudged as the "
        "gripper approaches",
        PERTURBATIONS,
    ),
    LaunchArgument(
        "on_hardware_failure",
        "exit",
        "An arm bridge that cannot reach its arms: exit (bring-up "
        "ends with code 3, the fix printed) or stay (up, NOT OPERATIONAL in /diagnostics)",
        HARDWARE_FAILURE_POLICIES,
    ),
    LaunchArgument(
        "viewer",
        "none",
        "A live view without RViz: web (a browser at http://<host>:8080: the robot, "
        "the predicted and live clouds, the head camera, the value)",
        VIEWERS,
    ),
    LaunchArgument(
        "split",
        "none",
        "Two-machine deployment: none (everything on this host); robot (this host runs "
        "the simulator or arm bridges, cameras, sync, supervisor, recorder, and sends observations "
        "resized and compressed to the policy host); policy (this host runs the policy, the viewer "
        "and RViz; needs checkpoint). Both hosts: the same ROS_DOMAIN_ID, and ROS_STATIC_PEERS=<the "
        "other host> where multicast does not pass",
        SPLITS,
    ),
    LaunchArgument(
        "params_file",
        "",
        "YAML of node parameters for this robot or site, in the ROS 2 parameter "
        "file layout (<node name>: or /**: with ros__parameters:), overlaid on the defaults",
    ),
)


@dataclass(frozen=True)
class SystemOptions:
    robot: str = "agilex"
    cameras: str = "sim"
    sim: bool = True
    motion: str = "none"
    rviz: bool = False
    record: bool = False
    teleop: str = "none"
    episodes_dir: str = "episodes"
    record_source: str = "synced"
    checkpoint: str = ""
    instruction: str = ""
    chunking: str = "rtc"
    sampler: str = ""
    namespace: str = ""
    task: str = ""
    condition: str = "clean"
    seed: int = 0
    perturbation: str = "none"
    params_file: str = ""
    on_hardware_failure: str = "exit"
    viewer: str = "none"
    split: str = "none"

    @staticmethod
    def from_arguments(values: Mapping[str, str]) -> "SystemOptions":
        """Build from launch-argument strings (missing ones take their defaults); validates."""
        known = {a.name: a for a in LAUNCH_ARGUMENTS}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown argument(s) {sorted(unknown)}; allowed: {', '.join(known)}")
        raw = {name: str(values.get(name, arg.default)).strip() for name, arg in known.items()}
        for name, arg in known.items():
            if arg.choices:
                check_choice(name, raw[name].lower() if arg.choices is BOOLEANS else raw[name], arg.choices)
        opts = SystemOptions(
            robot=raw["robot"],
            cameras=raw["cameras"],
            sim=raw["sim"].lower() == "true",
            motion=raw["motion"],
            rviz=raw["rviz"].lower() == "true",
            record=raw["record"].lower() == "true",
            teleop=raw["teleop"],
            episodes_dir=raw["episodes_dir"],
            record_source=raw["record_source"],
            checkpoint=raw["checkpoint"],
            instruction=raw["instruction"],
            chunking=raw["chunking"],
            sampler=raw["sampler"],
            namespace=raw["namespace"].strip("/"),
            task=raw["task"],
            condition=raw["condition"],
            seed=_seed(raw["seed"]),
            perturbation=raw["perturbation"],
            params_file=raw["params_file"],
            on_hardware_failure=raw["on_hardware_failure"],
            viewer=raw["viewer"],
            split=raw["split"],
        )
        opts.validate()
        return opts

    def validate(self) -> None:
        check_choice("robot", self.robot, ROBOTS)
        check_choice("cameras", self.cameras, CAMERA_SOURCES)
        check_choice("motion", self.motion, MOTION_SOURCES)
        check_choice("chunking", self.chunking, CHUNKING_MODES)
        check_choice("sampler", self.sampler, ("", *SAMPLERS))
        check_choice("teleop", self.teleop, TELEOP_SOURCES)
        check_choice("record_source", self.record_source, RECORD_SOURCES)
        check_choice("on_hardware_failure", self.on_hardware_failure, HARDWARE_FAILURE_POLICIES)
        check_choice("viewer", self.viewer, VIEWERS)
        check_choice("split", self.split, SPLITS)
        if self.split == "robot" and self.checkpoint:
            raise ConfigError(
                "split:=robot: the policy runs on the policy host; give checkpoint:= there (split:=policy)"
            )
        if self.split == "policy":
            if not self.checkpoint:
                raise ConfigError("split:=policy: the policy host runs a policy; give checkpoint:=")
            robot_side = [
                f"{name}:={str(value).lower()}"
                for name, value, default in (
                    ("motion", self.motion, "none"),
                    ("teleop", self.teleop, "none"),
                    ("record", self.record, False),
                    ("task", self.task, ""),
                )
                if value != default
            ]
            if robot_side:
                raise ConfigError(f"split:=policy: {', '.join(robot_side)} belong(s) to the robot host (split:=robot)")
        commanders = [
            name
            for name, on in (
                ("checkpoint", bool(self.checkpoint)),
                ("motion", self.motion != "none"),
                ("teleop", self.teleop != "none"),
            )
            if on
        ]
        if len(commanders) > 1:
            raise ConfigError(f"{' and '.join(commanders)} all command the arms; use one of them")
        if self.teleop == "scripted" and not self.sim:
            raise ConfigError("teleop: the scripted expert runs in the simulator (sim:=true)")
        if self.teleop == "leader" and self.robot != "agilex":
            raise ConfigError("teleop: leader arms are the AgileX (Cobot Magic) master arms; robot:=agilex")
        check_choice("task", self.task, ("", *TASKS))
        check_choice("condition", self.condition, CONDITIONS)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        if self.task and not self.sim:
            raise ConfigError("task: benchmark tasks are simulated scenes (sim:=true)")
        if self.task:
            get_task(self.task).layout(self.robot)  # raises for a robot that cannot reach the layout
        if self.cameras == "sim" and not self.sim:
            raise ConfigError("cameras: 'sim' needs sim:=true; with hardware use realsense, orbbec or external")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise ConfigError(f"seed: expected an integer, got {text!r}") from None
    if not 0 <= seed < 2**31:
        raise ConfigError(f"seed: expected 0 <= seed < 2^31, got {seed}")
    return seed


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()

    @property
    def in_process(self) -> bool:
        """Nodes of this package run inside `wam-ros bringup`; others (RViz, ...) only in launch."""
        return self.package == "wam_ros"


def camera_config(vendor: str) -> dict[str, Any]:
    """config/cameras.yaml for one vendor: per camera node parameters, and `sync` for sync_node."""
    data = load_yaml(share_dir() / "config" / "cameras.yaml") or {}
    section = data.get(vendor)
    if not isinstance(section, dict):
        raise ConfigError(f"cameras.yaml: no section {vendor!r}")
    missing = [cam for cam in CAMERA_NAMES if not isinstance(section.get(cam), dict)]
    if missing:
        raise ConfigError(f"cameras.yaml.{vendor}: missing cameras {missing}")
    return section


def robot_description(robot: str) -> str:
    path = share_dir() / "urdf" / f"{check_choice('robot', robot, ROBOTS)}_dual.urdf"
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"robot: URDF {path} is missing; regenerate it with `wam-ros urdf`") from None


def launch_arguments_help() -> str:
    """Every launch argument with its default and choices (`wam-ros bringup --help`)."""
    lines = ["arguments (name:=value, as in dual_arm.launch.py):"]
    for arg in LAUNCH_ARGUMENTS:
        choices = f" [{' | '.join(arg.choices)}]" if arg.choices else ""
        lines.append(f"  {arg.name}:={arg.default!r}{choices}\n      {arg.description}")
    return "\n".join(lines)


def _node_keys(spec: NodeSpec) -> set[str]:
    """How a parameter file may name a node: its name, or its fully qualified name."""
    return {spec.name, "/" + "/".join(p for p in (spec.namespace.strip("/"), spec.name) if p)}


def _flatten(parameters: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted names, as ROS 2 reads a parameter file (agilex: {emulate: x}
    is agilex.emulate)."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, f"{name}.") if isinstance(value, Mapping) else {name: value})
    return out


def apply_params_file(specs: list[NodeSpec], path: str) -> list[NodeSpec]:
    """`specs` with a ROS 2 parameter file overlaid: `/**` applies to every node, a node name (or
    fully qualified name) to that node. A section naming no node, or without ros__parameters, is
    refused by name, so a typo cannot silently leave a robot on its defaults; sections for nodes this
    configuration does not run (arm_bridge in simulation) are allowed."""
    file = Path(path).expanduser()
    try:
        data = load_yaml(file)
    except ConfigError as exc:
        raise ConfigError(f"params_file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params_file: {file} is not a mapping of node names to ros__parameters")
    names = set(NODE_NAMES).union(*(_node_keys(s) for s in specs))
    unknown = sorted(k for k in data if k != "/**" and k not in names and str(k).rsplit("/", 1)[-1] not in NODE_NAMES)
    if unknown:
        raise ConfigError(
            f"params_file: {file} names node(s) {unknown} that no wam_ros system runs; "
            f"node names: {', '.join(NODE_NAMES)}"
        )
    for key, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ConfigError(f"params_file: {file}: {key}: expected `ros__parameters:` with a mapping under it")
    everyone = _flatten(data.get("/**", {}).get("ros__parameters", {}))
    out = []
    for spec in specs:
        mine = {
            k: v
            for key, section in data.items()
            if key in _node_keys(spec)
            for k, v in _flatten(section["ros__parameters"]).items()
        }
        out.append(replace(spec, parameters={**spec.parameters, **everyone, **mine}) if everyone or mine else spec)
    return out


def with_parameters(specs: list[NodeSpec], executable: str, parameters: Mapping[str, Any]) -> list[NodeSpec]:
    """The specs with `parameters` set on every node of `executable` (tools that tune one node)."""
    return [replace(s, parameters={**s.parameters, **parameters}) if s.executable == executable else s for s in specs]


def _policy_host(opts: SystemOptions, common: dict[str, Any]) -> list[NodeSpec]:
    """split:=policy: the nodes of the GPU host, fed over the network by the robot host."""
    specs = [
        NodeSpec(
            "wam_ros",
            "policy_node",
            "policy",
            opts.namespace,
            _policy_parameters(opts, common) | {"observation_transport": "compressed", "live_cloud_stride": 1},
        )
    ]  # the views arrive at the model's size: every pixel makes the live cloud
    return specs + with_parameters(_viewers(opts, common), "viewer_node", {"observation_transport": "compressed"})


def _policy_parameters(opts: SystemOptions, common: dict[str, Any]) -> dict[str, Any]:
    return {
        **common,
        "robot": opts.robot,
        "checkpoint": str(Path(opts.checkpoint).resolve()),
        "instruction": opts.instruction,
        "chunking": opts.chunking,
        "sampler": opts.sampler,
    }


def _viewers(opts: SystemOptions, common: dict[str, Any]) -> list[NodeSpec]:
    specs = []
    if opts.viewer == "web":
        specs.append(NodeSpec("wam_ros", "viewer_node", "viewer", opts.namespace, {**common, "robot": opts.robot}))
    if opts.rviz:
        specs.append(
            NodeSpec(
                "rviz2",
                "rviz2",
                "rviz2",
                opts.namespace,
                dict(common),
                arguments=("-d", str(share_dir() / "config" / "wam.rviz")),
            )
        )
    return specs


def describe_system(opts: SystemOptions) -> list[NodeSpec]:
    opts.validate()
    common = {"use_sim_time": opts.sim}
    if opts.split == "policy":
        specs = _policy_host(opts, common)
        return apply_params_file(specs, opts.params_file) if opts.params_file else specs
    ns = opts.namespace
    episode = {"task": opts.task, "condition": opts.condition, "seed": opts.seed, "perturbation": opts.perturbation}
    instruction = opts.instruction or (get_task(opts.task).instruction if opts.task else "")
    specs = [
        NodeSpec(
            "robot_state_publisher",
            "robot_state_publisher",
            "robot_state_publisher",
            ns,
            {**common, "robot_description": robot_description(opts.robot)},
        ),
    ]
    if opts.sim:
        # The simulator owns the clock, so it never runs on sim time itself; it runs the bridge
        # core on the simulated arms.
        specs.append(
            NodeSpec(
                "wam_ros",
                "sim_node",
                "sim",
                ns,
                {"robot": opts.robot, "cameras_enabled": opts.cameras == "sim", **episode},
            )
        )
    else:
        specs.append(
            NodeSpec(
                "wam_ros",
                "arm_bridge_node",
                "arm_bridge",
                ns,
                {"robot": opts.robot, "exit_on_failure": opts.on_hardware_failure == "exit"},
            )
        )
    sync_parameters = {}
    if opts.cameras in ("realsense", "orbbec"):
        cameras = camera_config(opts.cameras)
        sync_parameters = cameras.get("sync", {})
        for cam in CAMERA_NAMES:
            specs.append(
                NodeSpec(
                    "wam_ros",
                    f"{opts.cameras}_node",
                    "camera",
                    f"{ns}/{cam}".strip("/"),
                    {"camera_name": cam, **cameras[cam]},
                )
            )
    # one matched set of all camera views per frame, from whichever source publishes the topics
    specs.append(
        NodeSpec("wam_ros", "sync_node", "sync", ns, {**common, "cameras": list(CAMERA_NAMES), **sync_parameters})
    )
    # the one gate between command sources (policy, scripted motion) and the arms
    specs.append(NodeSpec("wam_ros", "supervisor_node", "supervisor", ns, {**common, "robot": opts.robot}))
    if opts.motion == "scripted" or opts.teleop == "scripted":
        specs.append(
            NodeSpec(
                "wam_ros", "scripted_motion_node", "scripted_motion", ns, {**common, "robot": opts.robot, **episode}
            )
        )
    if opts.teleop in ("leader", "spacemouse", "keyboard"):
        specs.append(
            NodeSpec("wam_ros", "teleop_node", "teleop", ns, {**common, "robot": opts.robot, "source": opts.teleop})
        )
    if opts.record:
        specs.append(
            NodeSpec(
                "wam_ros",
                "recorder_node",
                "recorder",
                ns,
                {
                    **common,
                    "robot": opts.robot,
                    "directory": str(Path(opts.episodes_dir).expanduser()),
                    "source": opts.record_source,
                    "teleop": opts.teleop,
                    "instruction": instruction,
                },
            )
        )
    if opts.split == "robot":  # the link to the policy host: what the policy asks for, small
        specs.append(NodeSpec("wam_ros", "observation_encoder_node", "observation_encoder", ns, dict(common)))
    if opts.checkpoint:
        specs.append(NodeSpec("wam_ros", "policy_node", "policy", ns, _policy_parameters(opts, common)))
    specs += _viewers(opts, common)
    return apply_params_file(specs, opts.params_file) if opts.params_file else specs
