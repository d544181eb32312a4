"""Observation views made small for a network link (split deployment), ROS-free.

A paper-scale policy runs on a GPU workstation, the cameras on the robot PC. Whole camera sets
(three 640x480 RGB-D views, 4.6 MB) at 15-30 Hz are more than a gigabit link carries, and the policy
only reads them at its own input size. So the robot side resizes every view to the size the policy
asks for, exactly as the policy would (wam_ros.model.policy.resize_images: area for colour, nearest
for depth, so the policy's own resize is then the identity), scales the intrinsics with it, and
compresses in image_transport's formats: colour JPEG (or lossless PNG), depth the lossless
compressedDepth PNG of millimetres. `wam-ros bench split` measures the sizes and times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wam_ros.data.images import (
    ImageError,
    check_jpeg_quality,
    decode_compressed,
    depth_to_millimetres,
    encode_color,
    encode_depth,
)
from wam_ros.geometry.lifting import scale_intrinsics
from wam_ros.model.policy import resize_images

COLOR_CODECS = ("jpeg", "png")


@dataclass(frozen=True)
class LinkCodec:
    color: str = "jpeg"  # jpeg (lossy, small) or png (lossless)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.color not in COLOR_CODECS:
            raise ValueError(f"color codec {self.color!r}: expected one of {', '.join(COLOR_CODECS)}")
        check_jpeg_quality(self.jpeg_quality)


@dataclass(frozen=True)
class CompactView:
    """One camera view as it crosses the link: CompressedImage formats and payloads, and the
    intrinsics K of the resized images (colour and depth share the size)."""

    color_format: str
    color: bytes
    depth_format: str
    depth: bytes
    K: np.ndarray
    size: tuple[int, int]  # (height, width)


def compact_view(
    rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, size: tuple[int, int], codec: LinkCodec
) -> CompactView:
    """rgb (H, W, 3) uint8, depth (H, W) uint16 mm or float metres aligned to it, K for (H, W) ->
    the view resized to `size` (height, width) and compressed. Float depth becomes millimetres
    (rounded; NaN and inf become 0, no measurement)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"colour must be (H, W, 3) uint8, got {rgb.dtype}{rgb.shape}")
    full = tuple(rgb.shape[:2])
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ImageError(f"size {size}: expected height and width >= 1")
    if depth.shape != full:
        raise ImageError(f"depth {depth.shape} is not aligned to colour {full}")
    color_format, color = encode_color(
        np.ascontiguousarray(resize_images(rgb, size, "area")), codec.color, codec.jpeg_quality
    )
    millimetres = depth if depth.dtype == np.uint16 else depth_to_millimetres(depth)
    depth_format, depth_data = encode_depth(np.ascontiguousarray(resize_images(millimetres, size, "nearest")))
    return CompactView(color_format, color, depth_format, depth_data, scale_intrinsics(K, full, size), size)


def expand_view(
    color_format: str, color: bytes, depth_format: str, depth: bytes, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (h, w, 3) uint8, depth (h, w) uint16 mm) of a CompactView's payloads, checked to be of
    `size` (its CameraInfo's). Raises ImageError naming what does not fit."""
    if "compressedDepth" not in depth_format:
        raise ImageError(f"depth format {depth_format!r}: expected 16UC1; compressedDepth png", "encoding")
    return decode_compressed(color_format, color, size), decode_compressed(depth_format, depth, size)
