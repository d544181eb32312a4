"""Depth images to coloured points in the robot base frame (ROS-free, vectorised numpy).

A predicted future is V views x T frames of depth and colour. Each view's camera pose in the base
frame comes from the robot's kinematics: static cameras are fixed links of the URDF (extrinsics),
wrist cameras hang off the flange by the hand-eye transform, so their pose follows the (predicted)
joint state of that frame. Points carry the index of the frame they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PointCloud:
    points: np.ndarray   # (N, 3) float32, metres in the base frame
    colors: np.ndarray   # (N, 3) uint8 RGB
    frames: np.ndarray   # (N,) uint32: index of the predicted frame (0: the first future frame)

    def __len__(self) -> int:
        return len(self.points)


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from (height, width) to (height, width)."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    scaled = np.array(K, dtype=float)
    scaled[0, 0] *= sx
    scaled[0, 2] = (scaled[0, 2] + 0.5) * sx - 0.5
    scaled[1, 1] *= sy
    scaled[1, 2] = (scaled[1, 2] + 0.5) * sy - 0.5
    return scaled


def lift(depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, camera_poses: np.ndarray,
         depth_range: tuple[float, float] = (0.05, 4.0), stride: int = 1) -> PointCloud:
    """depth (V, T, h, w) metres (0: none), rgb (V, T, h, w, 3) uint8, K (V, 3, 3) for (h, w), and
    camera_poses (T, V, 4, 4) base <- camera optical frame. Every `stride`-th pixel per axis."""
    depth = np.asarray(depth, dtype=np.float32)[..., ::stride, ::stride]
    rgb = np.asarray(rgb)[..., ::stride, ::stride, :]
    views, frames, h, w = depth.shape
    if rgb.shape != (views, frames, h, w, 3) or camera_poses.shape != (frames, views, 4, 4) or len(K) != views:
        raise ValueError(f"shapes do not agree: depth {depth.shape}, rgb {rgb.shape}, K {np.shape(K)}, "
                         f"camera_poses {camera_poses.shape} (expected (T, V, 4, 4))")
    v_idx, u_idx = np.mgrid[0:h, 0:w]
    u = (u_idx * stride).astype(np.float32)
    v = (v_idx * stride).astype(np.float32)
    K = np.asarray(K, dtype=np.float32)
    # rays in each view's optical frame (z forward), then scaled by depth
    rays = np.stack([(u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None],
                     (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None],
                     np.ones((views, h, w), np.float32)], axis=-1)                  # (V, h, w, 3)
    valid = (depth > depth_range[0]) & (depth < depth_range[1])                       # (V, T, h, w)
    local = rays[:, None] * depth[..., None]                                          # (V, T, h, w, 3)
    poses = np.asarray(camera_poses, dtype=np.float32).transpose(1, 0, 2, 3)          # (V, T, 4, 4)
    world = np.einsum("vtij,vthwj->vthwi", poses[..., :3, :3], local) + poses[:, :, None, None, :3, 3]
    frame_index = np.broadcast_to(np.arange(frames, dtype=np.uint32)[None, :, None, None], valid.shape)
    return PointCloud(world[valid], rgb[valid], frame_index[valid])


def voxel_downsample(cloud: PointCloud, voxel: float) -> PointCloud:
    """One point (the first) per occupied voxel and frame; voxel <= 0 returns the cloud as is."""
    if voxel <= 0 or not len(cloud):
        return cloud
    cells = np.floor(cloud.points / voxel).astype(np.int64)
    keys = np.concatenate([cells, cloud.frames[:, None].astype(np.int64)], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    first.sort()
    return PointCloud(cloud.points[first], cloud.colors[first], cloud.frames[first])


def fade(colors: np.ndarray, frames: np.ndarray, count: int, floor: float = 0.35) -> np.ndarray:
    """Colours dimmed with the frame index, so that later predicted frames look further away in time."""
    if count <= 1:
        return colors
    weight = 1.0 - (1.0 - floor) * frames.astype(np.float32) / (count - 1)
    background = 255.0
    return (colors * weight[:, None] + background * (1.0 - weight[:, None])).astype(np.uint8)
