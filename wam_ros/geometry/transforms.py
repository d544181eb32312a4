"""Homogeneous transforms. Quaternions are (w, x, y, z) as in transforms3d."""

from __future__ import annotations

import numpy as np
import transforms3d.euler as euler
import transforms3d.quaternions as quaternions


def translation(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def rot_x(angle: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = euler.euler2mat(angle, 0.0, 0.0, "sxyz")
    return T


def rot_z(angle: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = euler.euler2mat(0.0, 0.0, angle, "sxyz")
    return T


def pose_to_matrix(xyz, rpy) -> np.ndarray:
    """URDF origin (xyz, fixed-axis rpy) to a 4x4 matrix."""
    T = np.eye(4)
    T[:3, :3] = euler.euler2mat(*rpy, "sxyz")
    T[:3, 3] = xyz
    return T


def matrix_to_pose(T: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """4x4 matrix to URDF origin (xyz, rpy); tiny values snapped to zero for readable files."""
    xyz = tuple(float(v) if abs(v) > 1e-12 else 0.0 for v in T[:3, 3])
    rpy = tuple(float(v) if abs(v) > 1e-12 else 0.0 for v in euler.mat2euler(T[:3, :3], "sxyz"))
    return xyz, rpy


def matrix_to_quaternion(T: np.ndarray) -> np.ndarray:
    """Rotation part as (w, x, y, z)."""
    return quaternions.mat2quat(T[:3, :3])


def rotation_angle_between(R1: np.ndarray, R2: np.ndarray) -> float:
    """Geodesic angle (rad) between two rotation matrices."""
    cos = (np.trace(R1.T @ R2) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))
