"""Typed, validated configuration loaded from YAML. Errors name the offending field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from wam_ros.paths import share_dir

ROBOTS = ("franka", "agilex", "tienkung")
SIDES = ("left", "right")
CAMERA_NAMES = ("head", "left_wrist", "right_wrist")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the field."""


def _get(data: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    if key not in data:
        raise ConfigError(f"{where}.{key}: missing")
    return data[key]


def _floats(value: Any, n: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n:
        raise ConfigError(f"{where}: expected a list of {n} numbers, got {value!r}")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{where}: values must be finite, got {value!r}")
    return out


def _float(data: Mapping[str, Any], key: str, where: str, *, positive: bool = False) -> float:
    (value,) = _floats([_get(data, key, where)], 1, f"{where}.{key}")
    if positive and value <= 0.0:
        raise ConfigError(f"{where}.{key}: must be > 0, got {value}")
    return value


@dataclass(frozen=True)
class Pose:
    """A rigid transform as URDF writes it: translation (m) and fixed-axis roll/pitch/yaw (rad)."""

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def parse(data: Any, where: str) -> "Pose":
        return Pose(
            _floats(_get(data, "xyz", where), 3, f"{where}.xyz"), _floats(_get(data, "rpy", where), 3, f"{where}.rpy")
        )


@dataclass(frozen=True)
class JointSpec:
    """One revolute arm joint: its origin in the parent link, axis, and limits (ros2_control names)."""

    name: str
    origin: Pose
    axis: tuple[float, float, float]
    lower: float
    upper: float
    velocity: float
    acceleration: float
    jerk: float
    effort: float

    @staticmethod
    def parse(data: Any, where: str) -> "JointSpec":
        name = _get(data, "name", where)
        if "dh" in data:
            a, alpha, d, theta = _floats(data["dh"], 4, f"{where}.dh")
            origin = _pose_from_modified_dh(a, alpha, d, theta)
            axis = (0.0, 0.0, 1.0)
        else:
            origin = Pose.parse(data, where)
            axis = _floats(_get(data, "axis", where), 3, f"{where}.axis")
            if abs(math.dist(axis, (0, 0, 0)) - 1.0) > 1e-6:
                raise ConfigError(f"{where}.axis: must be a unit vector, got {axis}")
        lower, upper = _float(data, "lower", where), _float(data, "upper", where)
        if lower >= upper:
            raise ConfigError(f"{where}: lower ({lower}) must be below upper ({upper})")
        return JointSpec(
            str(name),
            origin,
            axis,
            lower,
            upper,
            *(_float(data, k, where, positive=True) for k in ("velocity", "acceleration", "jerk", "effort")),
        )


def _pose_from_modified_dh(a: float, alpha: float, d: float, theta: float) -> Pose:
    """Craig's convention: T = RotX(alpha) TransX(a) RotZ(theta) TransZ(d), as a URDF origin."""
    from wam_ros.geometry.transforms import matrix_to_pose, rot_x, rot_z, translation

    T = rot_x(alpha) @ translation(a, 0.0, 0.0) @ rot_z(theta) @ translation(0.0, 0.0, d)
    return Pose(*matrix_to_pose(T))


@dataclass(frozen=True)
class GripperSpec:
    stroke: float  # one finger's travel in metres; opening = 2 * stroke
    velocity: float
    effort: float
    finger_offset: float  # finger base distance from the flange along the tool axis

    @property
    def max_opening(self) -> float:
        return 2.0 * self.stroke


@dataclass(frozen=True)
class ArmSpec:
    model: str
    joints: tuple[JointSpec, ...]
    flange: Pose
    tcp: Pose
    gripper: GripperSpec
    home: dict[str, tuple[float, ...]]  # per side: arms may rest mirrored or turned inward
    link_radius: float


@dataclass(frozen=True)
class CameraMount:
    name: str
    parent: str
    pose: Pose


@dataclass(frozen=True)
class SceneObject:
    name: str
    pose: Pose
    size: tuple[float, float, float]  # box half-extents (m)
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class RobotConfig:
    """A dual-arm setup: one arm model mounted twice, three cameras, and the sim scene."""

    name: str
    description: str
    base_frame: str
    arm: ArmSpec
    mounts: dict[str, Pose]
    cameras: tuple[CameraMount, ...]
    table: SceneObject
    objects: tuple[SceneObject, ...]

    def arm_joint_names(self, side: str) -> list[str]:
        return [f"{side}_{j.name}" for j in self.arm.joints]

    def gripper_joint_name(self, side: str) -> str:
        return f"{side}_gripper"

    @property
    def joint_names(self) -> list[str]:
        """Every actuated joint in JointState order: left arm, left gripper, right arm, right gripper."""
        return [n for side in SIDES for n in (*self.arm_joint_names(side), self.gripper_joint_name(side))]

    def joint_limits(self) -> dict[str, tuple[float, float]]:
        limits = {}
        for side in SIDES:
            for j, name in zip(self.arm.joints, self.arm_joint_names(side)):
                limits[name] = (j.lower, j.upper)
            limits[self.gripper_joint_name(side)] = (0.0, self.arm.gripper.stroke)
        return limits

    def home_positions(self) -> dict[str, float]:
        """Home pose with the grippers open."""
        home = {}
        for side in SIDES:
            home.update(zip(self.arm_joint_names(side), self.arm.home[side]))
            home[self.gripper_joint_name(side)] = self.arm.gripper.stroke
        return home

    @staticmethod
    def parse(data: Any, where: str) -> "RobotConfig":
        arm_data = _get(data, "arm", where)
        joints_data = _get(arm_data, "joints", f"{where}.arm")
        if not isinstance(joints_data, list) or not joints_data:
            raise ConfigError(f"{where}.arm.joints: expected a non-empty list")
        joints = tuple(JointSpec.parse(j, f"{where}.arm.joints[{i}]") for i, j in enumerate(joints_data))
        g = _get(arm_data, "gripper", f"{where}.arm")
        gripper = GripperSpec(
            *(
                _float(g, k, f"{where}.arm.gripper", positive=True)
                for k in ("stroke", "velocity", "effort", "finger_offset")
            )
        )
        home = _parse_home(_get(arm_data, "home", f"{where}.arm"), joints, f"{where}.arm.home")
        arm = ArmSpec(
            str(_get(arm_data, "model", f"{where}.arm")),
            joints,
            Pose.parse(_get(arm_data, "flange", f"{where}.arm"), f"{where}.arm.flange"),
            Pose.parse(_get(arm_data, "tcp", f"{where}.arm"), f"{where}.arm.tcp"),
            gripper,
            home,
            _float(arm_data, "link_radius", f"{where}.arm", positive=True),
        )
        mounts_data = _get(data, "mounts", where)
        mounts = {
            side: Pose.parse(_get(mounts_data, side, f"{where}.mounts"), f"{where}.mounts.{side}") for side in SIDES
        }
        cams_data = _get(data, "cameras", where)
        cameras = []
        for cam in CAMERA_NAMES:
            c = _get(cams_data, cam, f"{where}.cameras")
            parent = str(_get(c, "parent", f"{where}.cameras.{cam}"))
            allowed = ("base", *(f"{s}_flange" for s in SIDES))
            if parent not in allowed:
                raise ConfigError(f"{where}.cameras.{cam}.parent: {parent!r} is not one of {allowed}")
            cameras.append(CameraMount(cam, parent, Pose.parse(c, f"{where}.cameras.{cam}")))
        scene = _get(data, "scene", where)
        return RobotConfig(
            name=str(_get(data, "name", where)),
            description=str(data.get("description", "")),
            base_frame=str(_get(data, "base_frame", where)),
            arm=arm,
            mounts=mounts,
            cameras=tuple(cameras),
            table=_scene_object({"name": "table", **_get(scene, "table", f"{where}.scene")}, f"{where}.scene.table"),
            objects=tuple(
                _scene_object(o, f"{where}.scene.objects[{i}]")
                for i, o in enumerate(_get(scene, "objects", f"{where}.scene"))
            ),
        )


def _parse_home(data: Any, joints: tuple[JointSpec, ...], where: str) -> dict[str, tuple[float, ...]]:
    """`home` is one list for both arms, or a mapping {left: [...], right: [...]}."""
    if isinstance(data, dict):
        home = {side: _floats(_get(data, side, where), len(joints), f"{where}.{side}") for side in SIDES}
    else:
        home = dict.fromkeys(SIDES, _floats(data, len(joints), where))
    for side, values in home.items():
        for j, q in zip(joints, values):
            if not j.lower <= q <= j.upper:
                raise ConfigError(f"{where}: {side} {j.name}={q} outside [{j.lower}, {j.upper}]")
    return home


def _scene_object(data: Any, where: str) -> SceneObject:
    rgba = _floats(data.get("rgba", [0.6, 0.5, 0.4, 1.0]), 4, f"{where}.rgba")
    return SceneObject(
        str(_get(data, "name", where)),
        Pose(_floats(_get(data, "xyz", where), 3, f"{where}.xyz")),
        _floats(_get(data, "size", where), 3, f"{where}.size"),
        rgba,
    )


def gripper_columns(names: Sequence[str]) -> list[int]:
    """Indices of the gripper joints among `names` (a gripper's opening is absolute in every action
    space, so it is normalised and encoded apart from the arm joints)."""
    return [i for i, n in enumerate(names) if n.endswith("gripper")]


def load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None


def check_choice(field: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"{field}: unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def robot_config_path(robot: str) -> Path:
    return share_dir() / "config" / "robots" / f"{check_choice('robot', robot, ROBOTS)}.yaml"


def load_robot_config(robot_or_path: str | Path) -> RobotConfig:
    """Load by robot name (franka, agilex, tienkung) or by path to a YAML file."""
    path = Path(robot_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = robot_config_path(str(robot_or_path))
    return RobotConfig.parse(load_yaml(path), path.name)
