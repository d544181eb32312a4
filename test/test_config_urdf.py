import math
import xml.etree.ElementTree as ET

import pytest
import yaml

from wam_ros.config import ROBOTS, ConfigError, RobotConfig, load_robot_config
from wam_ros.paths import share_dir
from wam_ros.robots.urdf import generate_urdf, write_urdfs


def test_committed_urdfs_match_their_yaml():
    assert write_urdfs(share_dir() / "urdf", check=True) == []


@pytest.mark.parametrize("robot", ROBOTS)
def test_urdf_has_frames_and_limits(robot):
    cfg = load_robot_config(robot)
    root = ET.fromstring(generate_urdf(cfg))
    links = {link.get("name") for link in root.iter("link")}
    for frame in (
        "world",
        "base",
        "head_color_optical_frame",
        "left_wrist_color_optical_frame",
        "right_wrist_color_optical_frame",
        "left_tcp",
        "right_tcp",
    ):
        assert frame in links
    joints = {j.get("name"): j for j in root.iter("joint")}
    for side in ("left", "right"):
        for spec, name in zip(cfg.arm.joints, cfg.arm_joint_names(side)):
            limit = joints[name].find("limit")
            assert float(limit.get("lower")) == pytest.approx(spec.lower)
            assert float(limit.get("upper")) == pytest.approx(spec.upper)


def test_fr3_limits_are_the_datasheet_values():
    joints = load_robot_config("franka").arm.joints
    assert [j.upper for j in joints] == [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]
    assert [j.lower for j in joints] == [-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]


def test_unknown_robot_names_allowed_values():
    with pytest.raises(ConfigError, match=r"robot: unknown value 'ur5'; allowed: franka, agilex, tienkung"):
        load_robot_config("ur5")


def test_malformed_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("arm: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_robot_config(bad)


def test_bad_field_is_named(tmp_path):
    data = yaml.safe_load((share_dir() / "config/robots/franka.yaml").read_text())
    data["arm"]["joints"][3]["lower"] = 1.0  # above upper (-0.1518)
    with pytest.raises(ConfigError, match=r"arm\.joints\[3\]: lower \(1\.0\) must be below upper"):
        RobotConfig.parse(data, "franka.yaml")
    data = yaml.safe_load((share_dir() / "config/robots/franka.yaml").read_text())
    data["cameras"]["head"]["xyz"] = [0, 0, math.nan]
    with pytest.raises(ConfigError, match=r"cameras\.head\.xyz: values must be finite"):
        RobotConfig.parse(data, "franka.yaml")


def test_home_is_one_list_or_one_per_side(tmp_path):
    data = yaml.safe_load((share_dir() / "config/robots/agilex.yaml").read_text())
    cfg = RobotConfig.parse(data, "agilex.yaml")
    home = cfg.home_positions()
    assert home["left_joint1"] == -home["right_joint1"] != 0.0
    data["arm"]["home"] = {"left": data["arm"]["home"]["left"]}
    with pytest.raises(ConfigError, match=r"arm\.home\.right: missing"):
        RobotConfig.parse(data, "agilex.yaml")
    data["arm"]["home"] = [0.0, 5.0, -1.3, 0.0, 0.9, 0.0]
    with pytest.raises(ConfigError, match=r"arm\.home: left joint2=5\.0 outside \[0\.0, 3\.14\]"):
        RobotConfig.parse(data, "agilex.yaml")


def test_missing_urdf_is_named(monkeypatch, tmp_path):
    from wam_ros.ros import system

    monkeypatch.setattr(system, "share_dir", lambda: tmp_path)
    with pytest.raises(
        ConfigError, match=r"robot: URDF .*franka_dual\.urdf is missing; regenerate it with `wam-ros urdf`"
    ):
        system.describe_system(system.SystemOptions(robot="franka"))
