"""The joints of a URDF as parent -> child transforms (ROS-free): what robot_state_publisher
publishes on /tf (movable joints, from joint positions) and /tf_static (fixed joints)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import transforms3d.axangles as axangles

from wam_ros.geometry.transforms import pose_to_matrix

MOVABLE = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True)
class TreeJoint:
    name: str
    kind: str  # fixed, revolute, continuous, prismatic
    parent: str
    child: str
    origin: np.ndarray  # 4x4, parent link -> joint frame at zero position
    axis: np.ndarray  # unit vector in the joint frame
    mimic: tuple[str, float, float] | None = None  # (joint, multiplier, offset)

    def transform(self, position: float = 0.0) -> np.ndarray:
        """parent link -> child link at `position` (rad or m)."""
        if self.kind in ("revolute", "continuous"):
            motion = np.eye(4)
            motion[:3, :3] = axangles.axangle2mat(self.axis, position)
            return self.origin @ motion
        if self.kind == "prismatic":
            motion = np.eye(4)
            motion[:3, 3] = self.axis * position
            return self.origin @ motion
        return self.origin


def _floats(text: str | None, default: str) -> list[float]:
    return [float(v) for v in (text or default).split()]


def parse_joints(urdf: str) -> list[TreeJoint]:
    """Every joint of a URDF string; floating and planar joints are refused (none of our robots has one)."""
    joints = []
    for element in ET.fromstring(urdf).iter("joint"):
        kind = element.get("type", "")
        if kind not in ("fixed", *MOVABLE):
            raise ValueError(f"joint {element.get('name')!r}: type {kind!r} is not supported")
        origin = element.find("origin")
        axis = np.asarray(
            _floats(element.find("axis").get("xyz") if element.find("axis") is not None else None, "1 0 0")
        )
        mimic = element.find("mimic")
        joints.append(
            TreeJoint(
                element.get("name"),
                kind,
                element.find("parent").get("link"),
                element.find("child").get("link"),
                pose_to_matrix(
                    _floats(origin.get("xyz") if origin is not None else None, "0 0 0"),
                    _floats(origin.get("rpy") if origin is not None else None, "0 0 0"),
                ),
                axis / np.linalg.norm(axis),
                (mimic.get("joint"), float(mimic.get("multiplier", 1.0)), float(mimic.get("offset", 0.0)))
                if mimic is not None
                else None,
            )
        )
    return joints


def movable_transforms(joints: list[TreeJoint], positions: Mapping[str, float]) -> dict[str, np.ndarray]:
    """child link -> (parent -> child) transform for every movable joint whose position is known
    (directly, or through the joint it mimics)."""
    out = {}
    for joint in joints:
        if joint.kind not in MOVABLE:
            continue
        if joint.mimic is not None and joint.mimic[0] in positions:
            source, multiplier, offset = joint.mimic
            out[joint.child] = joint.transform(multiplier * positions[source] + offset)
        elif joint.name in positions:
            out[joint.child] = joint.transform(positions[joint.name])
    return out
