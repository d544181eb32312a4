"""launch/dual_arm.launch.py and `wam-ros bringup` start the same nodes with the same parameters.

The launch file is evaluated against a recording stand-in of the launch API (launch is not
installable here); bringup's nodes are real rclpy nodes, created in-process and, for one
configuration, in a separate `wam-ros bringup` process queried over DDS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rcl_interfaces.srv import GetParameters
from transforms3d.quaternions import quat2mat

from support.launch_standin import evaluate_launch_file
from support.model_data import TASK, synthetic_dataset, tiny_config
from support.ros import SPARE_DOMAIN_IDS
from wam_ros.config import ConfigError
from wam_ros.model.train import TrainConfig, WindowDataset, train
from wam_ros.paths import share_dir
from wam_ros.ros.bringup import create_nodes
from wam_ros.ros.system import (
    DDS_VARIABLES,
    LAUNCH_ARGUMENTS,
    NODE_NAMES,
    SAFE_DOMAIN_IDS,
    SystemOptions,
    dds_environment,
    describe_system,
    isolated_domain_id,
)

pytestmark = pytest.mark.ros

LAUNCH_FILE = share_dir() / "launch" / "dual_arm.launch.py"

CONFIGURATIONS = [
    {},
    {"robot": "franka", "motion": "scripted"},
    {"robot": "tienkung", "namespace": "lab", "rviz": "true"},
    {"robot": "agilex", "cameras": "external", "motion": "scripted", "namespace": "/cell_2/"},
    {"robot": "agilex", "cameras": "orbbec", "namespace": "cell_3"},
    {"robot": "agilex", "checkpoint": "TINY", "chunking": "blend", "instruction": TASK},  # a trained checkpoint
    {"robot": "franka", "teleop": "scripted", "record": "true", "episodes_dir": "TMP", "instruction": "wave"},
    {"robot": "agilex", "teleop": "leader", "record": "true", "episodes_dir": "TMP", "record_source": "raw"},
    # the two hosts of a split deployment
    {"robot": "agilex", "split": "robot", "record": "true", "episodes_dir": "TMP"},
    {"robot": "agilex", "split": "policy", "checkpoint": "TINY", "instruction": TASK},
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    cfg = tiny_config()
    meta, episodes = synthetic_dataset(cfg)
    out = tmp_path_factory.mktemp("launch") / "tiny.pt"
    train(
        WindowDataset(episodes, meta, cfg),
        TrainConfig(video_stage_steps=2, joint_stage_steps=2, batch_size=2, checkpoint_every=1000),
        out,
        progress=False,
    )
    return str(out)


def _fqn(namespace: str | None, name: str) -> str:
    namespace = (namespace or "").strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


def _launch_nodes(overrides: dict[str, str]) -> dict[str, object]:
    launched = evaluate_launch_file(LAUNCH_FILE, overrides)
    return {_fqn(n.namespace, n.name): n for n in launched.nodes}


def test_launch_declares_every_argument_with_description_and_choices():
    launched = evaluate_launch_file(LAUNCH_FILE)
    declared = {a.name: a for a in launched.arguments}
    assert list(declared) == [a.name for a in LAUNCH_ARGUMENTS]
    for arg in LAUNCH_ARGUMENTS:
        assert declared[arg.name].description == arg.description and len(arg.description) > 15
        assert declared[arg.name].default_value == arg.default
        assert declared[arg.name].choices == (list(arg.choices) if arg.choices else None)


def test_launch_sets_the_dds_profile_unless_the_user_configured_fast_dds(monkeypatch):
    for name in DDS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    profile = share_dir() / "config" / "fastdds.xml"
    assert "<segment_size>" in profile.read_text()
    assert (
        evaluate_launch_file(LAUNCH_FILE).environment
        == dds_environment({})
        == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(profile), "FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}
    )
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")  # the user's choice stays
    assert evaluate_launch_file(LAUNCH_FILE).environment == {}


def test_private_domains_keep_their_ports_below_the_ephemeral_range():
    """Tests and benchmarks pick their domains here; a well-known port inside the ephemeral range can
    be taken by any outgoing socket, after which a participant's UDP and shared-memory ports diverge."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    highest_port = 7400 + 250 * max(SAFE_DOMAIN_IDS) + 10 + 2 * 100 + 1  # user unicast port of participant id 100
    assert highest_port < ephemeral_low
    for span in (1, 3):
        ids = {isolated_domain_id(seed, span) for seed in range(1000)}
        assert len(ids) == len(SAFE_DOMAIN_IDS) - span + 1
        assert all(d in SAFE_DOMAIN_IDS and d + span - 1 in SAFE_DOMAIN_IDS for d in ids)
    assert int(os.environ["ROS_DOMAIN_ID"]) in SAFE_DOMAIN_IDS and set(SPARE_DOMAIN_IDS) <= set(SAFE_DOMAIN_IDS)
    with pytest.raises(ValueError, match="span 0"):
        isolated_domain_id(1, 0)


@pytest.mark.parametrize(
    "overrides", CONFIGURATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults"
)
def test_launch_and_in_process_bringup_agree(overrides, request):
    if overrides.get("checkpoint") == "TINY":
        overrides = {**overrides, "checkpoint": request.getfixturevalue("tiny_checkpoint")}
    if overrides.get("episodes_dir") == "TMP":
        overrides = {**overrides, "episodes_dir": str(request.getfixturevalue("tmp_path"))}
    launched = _launch_nodes(overrides)
    rclpy.init(domain_id=SPARE_DOMAIN_IDS[0])
    try:
        nodes, skipped = create_nodes(describe_system(SystemOptions.from_arguments(overrides)))
        try:
            started = {n.get_fully_qualified_name(): n for n in nodes}
            external = {_fqn(s.namespace, s.name): s for s in skipped}
            assert sorted(launched) == sorted([*started, *external])
            assert all(s.package != "wam_ros" for s in skipped)
            for fqn, node in started.items():
                spec = launched[fqn]
                # robot_state_publisher runs in-process as its equivalent, with the same parameters
                assert (
                    (spec.package, spec.executable) == ("robot_state_publisher", "robot_state_publisher")
                    or spec.package == "wam_ros"
                    and spec.executable
                    in {
                        "sim_node",
                        "scripted_motion_node",
                        "supervisor_node",
                        "sync_node",
                        "orbbec_node",
                        "policy_node",
                        "recorder_node",
                        "teleop_node",
                        "observation_encoder_node",
                    }
                )
                (parameters,) = spec.parameters
                assert parameters, f"{fqn} launched without parameters"
                for name, value in parameters.items():
                    assert node.get_parameter(name).value == value, f"{fqn}: parameter {name}"
            if overrides.get("checkpoint") and overrides.get("split") != "policy":
                assert started["/policy"].get_parameter("chunking").value == "blend"
            if overrides.get("split") == "robot":  # the link end; no policy on the robot host
                assert "/observation_encoder" in started and "/policy" not in started and "/sim" in started
            if overrides.get("split") == "policy":  # the policy host: the policy alone, fed by the link
                assert set(started) == {"/policy"}
                assert started["/policy"].get_parameter("observation_transport").value == "compressed"
            if overrides.get("record") == "true":
                recorder = started["/recorder"]
                assert recorder.get_parameter("teleop").value == overrides.get("teleop", "none")
                assert recorder.get_parameter("directory").value == overrides["episodes_dir"]
            if overrides.get("cameras") == "orbbec":  # one camera node per view, by serial, in its namespace
                assert {f"/cell_3/{cam}/camera" for cam in ("head", "left_wrist", "right_wrist")} <= set(started)
            for fqn, spec in external.items():
                assert (launched[fqn].package, launched[fqn].executable) == (spec.package, spec.executable)
                assert launched[fqn].parameters == [spec.parameters]
                assert launched[fqn].arguments == list(spec.arguments)
        finally:
            for node in nodes:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_bringup_process_runs_the_launched_nodes_with_their_parameters(bringup):
    """A separate `wam-ros bringup` process, asked over the parameter services."""
    launched = _launch_nodes(bringup.arguments)
    graph = {_fqn(ns, name) for name, ns in bringup.probe.get_node_names_and_namespaces()}
    wam_nodes = {fqn: n for fqn, n in launched.items() if n.package == "wam_ros"}
    assert set(wam_nodes) <= graph, f"launched {sorted(wam_nodes)}, graph has {sorted(graph)}"
    for fqn, spec in wam_nodes.items():
        (parameters,) = spec.parameters
        client = bringup.probe.create_client(GetParameters, f"{fqn}/get_parameters")
        reply = bringup.call_service(client, GetParameters.Request(names=list(parameters)), attempts=3)
        values = [_parameter_value(v) for v in reply.values]
        assert dict(zip(parameters, values)) == parameters, fqn


def _parameter_value(value):
    from rclpy.parameter import parameter_value_to_python

    return parameter_value_to_python(value)


@pytest.mark.parametrize(
    "argument, message",
    [
        ("robot:=ur5", "robot: unknown value 'ur5'; allowed: franka, agilex, tienkung"),
        ("cameras:=kinect", "cameras: unknown value 'kinect'; allowed: sim, realsense, orbbec, external"),
        ("arms:=3", "unknown argument(s) ['arms']"),
        ("chunking:=smooth", "chunking: unknown value 'smooth'; allowed: rtc, blend, naive"),
        ("teleop:=joystick", "teleop: unknown value 'joystick'; allowed: none, scripted, leader, spacemouse, keyboard"),
        ("teleop:=leader robot:=franka", "leader arms are the AgileX (Cobot Magic) master arms"),
        ("teleop:=scripted motion:=scripted", "motion and teleop all command the arms; use one of them"),
        ("split:=robot checkpoint:=/tmp/p.pt", "split:=robot: the policy runs on the policy host"),
        ("split:=policy", "split:=policy: the policy host runs a policy; give checkpoint:="),
        (
            "split:=policy checkpoint:=/tmp/p.pt task:=pick_place record:=true",
            "split:=policy: record:=true, task:=pick_place belong(s) to the robot host",
        ),
    ],
)
def test_bringup_refuses_bad_arguments_by_name(argument, message):
    result = subprocess.run(
        [sys.executable, "-m", "wam_ros.cli", "bringup", *argument.split()], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_a_params_file_overlays_the_nodes_it_names(tmp_path):
    """The ROS 2 parameter-file layout: /** for every node, a node's name or fully qualified name,
    nested keys as dotted names; the shipped example applies to the hardware configuration."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "/**:\n  ros__parameters:\n    use_sim_time: false\n"
        "supervisor:\n  ros__parameters:\n    clamp: true\n"
        "/head/camera:\n  ros__parameters:\n    serial_no: '123622270123'\n"
        "arm_bridge:\n  ros__parameters:\n    agilex:\n      emulate: true\n      can_interface: virtual\n"
    )
    specs = {
        (s.namespace, s.name): s.parameters
        for s in describe_system(
            SystemOptions.from_arguments({"sim": "false", "cameras": "realsense", "params_file": str(site)})
        )
    }
    assert specs[("", "supervisor")]["clamp"] is True and specs[("", "sync")]["use_sim_time"] is False
    assert (
        specs[("", "arm_bridge")]["agilex.emulate"] is True
        and specs[("", "arm_bridge")]["agilex.can_interface"] == "virtual"
    )
    assert specs[("head", "camera")]["serial_no"] == "123622270123"
    assert specs[("left_wrist", "camera")].get("serial_no") != "123622270123"  # only the camera it names
    # one site file serves simulation too (its arm_bridge section is simply not used there)
    sim = {s.name: s.parameters for s in describe_system(SystemOptions.from_arguments({"params_file": str(site)}))}
    assert sim["supervisor"]["clamp"] is True and "arm_bridge" not in sim
    example = share_dir() / "config" / "params" / "agilex_lab.example.yaml"
    real = {
        s.name: s.parameters
        for s in describe_system(
            SystemOptions.from_arguments(
                {"sim": "false", "cameras": "external", "record": "true", "params_file": str(example)}
            )
        )
    }
    assert (
        real["arm_bridge"]["agilex.can_ports"] == ["can_left", "can_right"]
        and real["recorder"]["compression"] == "none"
    )
    for text, message in (
        ("supervsior:\n  ros__parameters: {clamp: true}\n", "names node(s) ['supervsior']"),
        ("supervisor:\n  clamp: true\n", "supervisor: expected `ros__parameters:`"),
        ("- a list\n", "is not a mapping"),
    ):
        site.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            describe_system(SystemOptions.from_arguments({"params_file": str(site)}))
    with pytest.raises(ConfigError, match="params_file: .*missing.yaml: file not found"):
        describe_system(SystemOptions.from_arguments({"params_file": str(tmp_path / "missing.yaml")}))


def test_every_node_name_of_every_configuration_may_be_named_in_a_params_file():
    hardware = {"sim": "false", "cameras": "realsense", "record": "true", "teleop": "leader", "robot": "agilex"}
    names = {
        spec.name
        for overrides in [*CONFIGURATIONS, hardware]
        for spec in describe_system(SystemOptions.from_arguments(overrides))
    }
    assert names <= set(NODE_NAMES)


def test_bringup_help_lists_every_argument_with_default_and_choices():
    result = subprocess.run(
        [sys.executable, "-m", "wam_ros.cli", "bringup", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for arg in LAUNCH_ARGUMENTS:
        assert f"{arg.name}:={arg.default!r}" in result.stdout
        if arg.choices:
            assert " | ".join(arg.choices) in result.stdout
    version = subprocess.run(
        [sys.executable, "-m", "wam_ros.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("wam-ros ")


def test_rviz_config_shows_what_the_system_publishes(bringup):
    import xml.etree.ElementTree as ET

    import yaml

    launched = _launch_nodes({"rviz": "true", "robot": bringup.arguments["robot"]})
    rviz = launched["/rviz2"]
    config = yaml.safe_load(open(rviz.arguments[rviz.arguments.index("-d") + 1]))
    manager = config["Visualization Manager"]
    urdf = launched["/robot_state_publisher"].parameters[0]["robot_description"]
    assert manager["Global Options"]["Fixed Frame"] in {link.get("name") for link in ET.fromstring(urdf).iter("link")}
    published = dict(bringup.probe.get_topic_names_and_types())
    images = [d["Topic"]["Value"] for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert len(images) == 3
    for topic in images:
        assert not topic.startswith("/"), "relative, so that it follows the namespace"
        assert published.get(f"/{bringup.namespace}/{topic}") == ["sensor_msgs/msg/Image"], topic
    (model,) = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/RobotModel"]
    assert model["Description Topic"]["Value"] == "robot_description"  # robot_state_publisher's latched topic


def test_bringup_publishes_the_robot_description_and_tf_like_robot_state_publisher(bringup):
    """In-process, robot_state_publisher's job is done by state_publisher_node: a latched
    robot_description, /tf_static for fixed joints, /tf for movable ones at the joint states'
    stamps; chained, the transforms give the links where Pinocchio's FK puts them. TFMessage has
    Jazzy's type hash (RViz and tf2 on a ROS install read it)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.system import robot_description

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got = {"description": [], "static": [], "tf": [], "states": []}
    node = bringup.probe
    subs = [
        node.create_subscription(String, f"/{bringup.namespace}/robot_description", got["description"].append, latched),
        node.create_subscription(TFMessage, "/tf_static", got["static"].append, latched),
        node.create_subscription(TFMessage, "/tf", got["tf"].append, QoSProfile(depth=100)),
        node.create_subscription(
            JointState, f"/{bringup.namespace}/joint_states", got["states"].append, QoSProfile(depth=100)
        ),
    ]
    try:
        assert bringup.spin_until(lambda: got["description"] and got["static"] and len(got["tf"]) > 20, 30.0), {
            k: len(v) for k, v in got.items()
        }
    finally:
        for sub in subs:
            node.destroy_subscription(sub)
    urdf = robot_description(bringup.arguments["robot"])
    assert got["description"][-1].data == urdf
    jazzy = get_typestore(Stores.ROS2_JAZZY).hash_rihs01("tf2_msgs/msg/TFMessage")
    hashes = [info.topic_type_hash for info in node.get_publishers_info_by_topic("/tf")]
    assert hashes and all(f"RIHS01_{bytes(h.value).hex()}" == jazzy for h in hashes), (hashes, jazzy)
    frames = {t.child_frame_id: t for t in got["static"][-1].transforms}
    stamps = {from_time(s.header.stamp): s for s in got["states"]}
    message = next(m for m in reversed(got["tf"]) if from_time(m.transforms[0].header.stamp) in stamps)
    frames.update({t.child_frame_id: t for t in message.transforms})
    state = stamps[from_time(message.transforms[0].header.stamp)]

    def pose(link: str) -> np.ndarray:
        T = np.eye(4)
        while link in frames:
            t = frames[link].transform
            M = np.eye(4)
            M[:3, :3] = quat2mat([t.rotation.w, t.rotation.x, t.rotation.y, t.rotation.z])
            M[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
            T, link = M @ T, frames[link].header.frame_id
        return T

    fk = Kinematics(urdf)
    positions = dict(zip(state.name, state.position))
    for link in ("left_tcp", "right_finger2", "left_wrist_color_optical_frame", "head_color_optical_frame"):
        np.testing.assert_allclose(pose(link), fk.frame_pose(positions, link), atol=1e-6)
