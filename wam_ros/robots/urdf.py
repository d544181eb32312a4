"""Generate the dual-arm URDFs in urdf/ from config/robots/*.yaml.

The YAML is the single source of kinematics and limits; `wam-ros urdf --check` (run by the tests)
fails when a committed URDF no longer matches its YAML. Geometry is simple (capsule-like
cylinders between joint origins); kinematics, limits and camera frames are exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from wam_ros.config import ROBOTS, SIDES, JointSpec, Pose, RobotConfig, load_robot_config
from wam_ros.geometry.transforms import matrix_to_pose
from wam_ros.paths import share_dir

# ROS camera convention: <cam>_link has x forward, z up; the optical frame has z forward, y down.
OPTICAL_FROM_LINK = Pose((0.0, 0.0, 0.0), (-math.pi / 2, 0.0, -math.pi / 2))
LINK_MASS = 1.0


def _fmt(values) -> str:
    return " ".join(f"{v:.10g}" for v in values)


def _origin(pose: Pose) -> str:
    return f'<origin xyz="{_fmt(pose.xyz)}" rpy="{_fmt(pose.rpy)}"/>'


def _segment_geometry(end: np.ndarray, radius: float) -> tuple[Pose, str]:
    """A cylinder from the link origin to `end` (both in the link frame), or a sphere if short."""
    length = float(np.linalg.norm(end))
    if length < 2 * radius:
        return Pose(), f'<sphere radius="{radius:.4g}"/>'
    z = end / length
    axis = np.cross([0.0, 0.0, 1.0], z)
    angle = math.atan2(np.linalg.norm(axis), z[2])
    R = np.eye(4)
    if np.linalg.norm(axis) > 1e-9:
        from transforms3d.axangles import axangle2mat

        R[:3, :3] = axangle2mat(axis / np.linalg.norm(axis), angle)
    elif z[2] < 0:
        R[:3, :3] = np.diag([1.0, -1.0, -1.0])
    R[:3, 3] = end / 2.0
    xyz, rpy = matrix_to_pose(R)
    return Pose(xyz, rpy), f'<cylinder radius="{radius:.4g}" length="{length:.6g}"/>'


def _link(name: str, geometry: tuple[Pose, str] | None, rgba: str, mass: float = LINK_MASS) -> list[str]:
    lines = [f'  <link name="{name}">']
    if geometry is not None:
        pose, shape = geometry
        for tag in ("visual", "collision"):
            extra = f'<material name="{rgba}"/>' if tag == "visual" else ""
            lines.append(f"    <{tag}>{_origin(pose)}<geometry>{shape}</geometry>{extra}</{tag}>")
        inertia = 0.01 * mass
        lines.append(
            f'    <inertial>{_origin(Pose(pose.xyz))}<mass value="{mass}"/>'
            f'<inertia ixx="{inertia}" ixy="0" ixz="0" iyy="{inertia}" iyz="0" izz="{inertia}"/>'
            "</inertial>"
        )
    lines.append("  </link>")
    return lines


def _fixed(name: str, parent: str, child: str, pose: Pose) -> list[str]:
    return [
        f'  <joint name="{name}" type="fixed">{_origin(pose)}<parent link="{parent}"/><child link="{child}"/></joint>'
    ]


def _revolute(name: str, parent: str, child: str, j: JointSpec) -> list[str]:
    return [
        f'  <joint name="{name}" type="revolute">{_origin(j.origin)}'
        f'<parent link="{parent}"/><child link="{child}"/><axis xyz="{_fmt(j.axis)}"/>'
        f'<limit lower="{j.lower:.10g}" upper="{j.upper:.10g}" velocity="{j.velocity:.10g}" '
        f'effort="{j.effort:.10g}"/></joint>'
    ]


def _arm(cfg: RobotConfig, side: str) -> list[str]:
    arm = cfg.arm
    r = arm.link_radius
    names = cfg.arm_joint_names(side)
    lines = _fixed(f"{side}_mount", cfg.base_frame, f"{side}_link0", cfg.mounts[side])
    # each link's cylinder runs to the next joint's origin (the flange for the last link)
    ends = [np.array(j.origin.xyz) for j in arm.joints] + [np.array(arm.flange.xyz)]
    lines += _link(f"{side}_link0", _segment_geometry(ends[0], r * 1.2), "dark")
    for i, (joint, name) in enumerate(zip(arm.joints, names), start=1):
        lines += _revolute(name, f"{side}_link{i - 1}", f"{side}_link{i}", joint)
        lines += _link(f"{side}_link{i}", _segment_geometry(ends[i], r), "light" if i % 2 else "dark")
    n = len(arm.joints)
    lines += _fixed(f"{side}_flange_joint", f"{side}_link{n}", f"{side}_flange", arm.flange)
    lines += _link(
        f"{side}_flange",
        (
            Pose((0.0, 0.0, arm.gripper.finger_offset / 2)),
            f'<box size="{_fmt((0.04, 2.4 * arm.gripper.stroke + 0.02, arm.gripper.finger_offset))}"/>',
        ),
        "dark",
        mass=0.5,
    )
    lines += _fixed(f"{side}_tcp_joint", f"{side}_flange", f"{side}_tcp", arm.tcp)
    lines += _link(f"{side}_tcp", None, "")
    g = arm.gripper
    finger = (Pose((0.0, 0.0, 0.025)), '<box size="0.02 0.012 0.05"/>')
    for k, sign in ((1, 1.0), (2, -1.0)):
        joint = cfg.gripper_joint_name(side) if k == 1 else f"{side}_gripper_mirror"
        mimic = "" if k == 1 else f'<mimic joint="{cfg.gripper_joint_name(side)}" multiplier="1" offset="0"/>'
        lines.append(
            f'  <joint name="{joint}" type="prismatic"><origin xyz="0 0 {g.finger_offset:.6g}" rpy="0 0 0"/>'
            f'<parent link="{side}_flange"/><child link="{side}_finger{k}"/><axis xyz="0 {sign:g} 0"/>'
            f'<limit lower="0" upper="{g.stroke:.6g}" velocity="{g.velocity:.6g}" effort="{g.effort:.6g}"/>'
            f"{mimic}</joint>"
        )
        lines += _link(f"{side}_finger{k}", finger, "dark", mass=0.05)
    return lines


def generate_urdf(cfg: RobotConfig) -> str:
    lines = [
        '<?xml version="1.0"?>',
        f"<!-- GENERATED by `wam-ros urdf` from config/robots/{cfg.name}.yaml: edit the YAML, not this file.",
        f"     {cfg.description}. -->",
        f"<robot name={quoteattr('wam_' + cfg.name)}>",
        '  <material name="light"><color rgba="0.85 0.85 0.88 1"/></material>',
        '  <material name="dark"><color rgba="0.25 0.25 0.28 1"/></material>',
        '  <link name="world"/>',
    ]
    lines += _fixed("world_to_base", "world", cfg.base_frame, Pose())
    lines += _link(cfg.base_frame, None, "")
    for side in SIDES:
        lines += _arm(cfg, side)
    for cam in cfg.cameras:
        lines += _fixed(f"{cam.name}_mount", cam.parent, f"{cam.name}_link", cam.pose)
        lines += _link(f"{cam.name}_link", None, "")
        lines += _fixed(
            f"{cam.name}_optical_joint", f"{cam.name}_link", f"{cam.name}_color_optical_frame", OPTICAL_FROM_LINK
        )
        lines += _link(f"{cam.name}_color_optical_frame", None, "")
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


def urdf_path(robot: str) -> Path:
    return share_dir() / "urdf" / f"{robot}_dual.urdf"


def write_urdfs(out_dir: Path, check: bool = False) -> list[str]:
    """Write every robot's URDF into out_dir; with check=True only report the stale ones."""
    stale = []
    for robot in ROBOTS:
        text = generate_urdf(load_robot_config(robot))
        path = out_dir / f"{robot}_dual.urdf"
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(path))
        if not check:
            path.write_text(text, encoding="utf-8")
    return stale
