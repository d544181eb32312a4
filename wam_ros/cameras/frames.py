"""What every camera backend delivers (ROS-free): one RGB-D frame with intrinsics and a host stamp."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wam_ros.config import ConfigError


@dataclass(frozen=True)
class CameraModel:
    width: int
    height: int
    K: np.ndarray  # 3x3
    distortion_model: str  # ROS names: plumb_bob, rational_polynomial, equidistant
    D: tuple[float, ...]


@dataclass
class RGBDFrame:
    color: np.ndarray  # H x W x 3 uint8, RGB
    depth_mm: np.ndarray  # H x W uint16 millimetres, 0 = no measurement
    color_model: CameraModel
    depth_model: CameraModel  # equals color_model when depth is aligned to color
    stamp: float  # host time (s), monotonic per camera
    frame_number: int
    depth_scale: float  # metres per raw depth unit of the device


def parse_profile(value: str, field: str) -> tuple[int, int, int]:
    """'640,480,30' (realsense2_camera style; 'x' also accepted) -> (width, height, fps)."""
    parts = value.replace("x", ",").split(",")
    try:
        width, height, fps = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{field}: expected 'width,height,fps', got {value!r}") from None
    if width <= 0 or height <= 0 or fps <= 0:
        raise ConfigError(f"{field}: values must be positive, got {value!r}")
    return width, height, fps


def depth_to_mm(raw: np.ndarray, depth_scale: float) -> np.ndarray:
    """Device depth units -> uint16 millimetres, honouring the device's depth scale."""
    if abs(depth_scale - 0.001) < 1e-9 and raw.dtype == np.uint16:
        return raw  # already millimetres: no copy
    return np.clip(np.rint(raw.astype(np.float64) * depth_scale * 1000.0), 0, 65535).astype(np.uint16)


class TimestampMapper:
    """Device timestamps (ms) to host seconds, never going backwards.

    Live: host-referenced domains (RealSense global/system time, Orbbec system/global) pass
    through; a device clock is mapped with the smallest observed host-minus-device offset (the
    frame with the least transport delay), which follows the device clock without host-side jitter.
    A recording (`anchored`) is replayed from now on in every domain: its first frame is mapped to
    the host time it is read at and the rest keep their recorded spacing (a recorded global time
    is the recording's past, not now).
    """

    def __init__(self, anchored: bool = False):
        self._offset = math.inf
        self._anchored = anchored
        self.last = -math.inf

    def __call__(self, device_ms: float, host_referenced: bool, host_now: float) -> float:
        t = device_ms / 1000.0
        if self._anchored or not host_referenced:
            if not (self._anchored and math.isfinite(self._offset)):
                self._offset = min(self._offset, host_now - t)
            t += self._offset
        self.last = max(t, self.last)
        return self.last
