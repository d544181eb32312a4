"""Depth images to coloured points in the robot base frame (ROS-free, vectorised numpy).

A predicted future is V views x T frames of depth and colour. Each view's camera pose in the base
frame comes from the robot's kinematics: static cameras are fixed links of the URDF (extrinsics),
wrist cameras hang off the flange by the hand-eye transform, so their pose follows the (predicted)
joint state of that frame. Points carry the index of the frame they belong to.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np

# x, y, z (m, base frame), rgb (0x00RRGGBB, RViz's packed colour), frame (predicted frame index)
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("frame", "<u4")])
_RED, _GREEN, _BLUE = 14, 13, 12  # byte offsets of the colour channels in a little-endian point


@dataclass
class PointCloud:
    """Points packed as PointCloud2 lays them out (CLOUD_DTYPE), so publishing copies no fields.

    An organised cloud (width > 0: rows of `width` pixels) keeps every pixel, NaN where there was no
    depth, like depth_image_proc's clouds; `buffer` is the array('B') the points live in, which a
    PointCloud2 can take without a copy."""

    data: np.ndarray  # (N,) CLOUD_DTYPE
    width: int = 0  # pixels per row of an organised cloud; 0: unorganised
    buffer: array.array | None = None

    @staticmethod
    def allocate(count: int, width: int = 0) -> "PointCloud":
        buffer = array.array("B", bytes(CLOUD_DTYPE.itemsize * count))
        return PointCloud(np.frombuffer(buffer, CLOUD_DTYPE), width, buffer)

    @staticmethod
    def from_arrays(points: np.ndarray, colors: np.ndarray, frames: np.ndarray) -> "PointCloud":
        data = np.zeros(len(points), CLOUD_DTYPE)
        data["x"], data["y"], data["z"] = points[:, 0], points[:, 1], points[:, 2]
        data["frame"] = frames
        cloud = PointCloud(data)
        cloud.set_colors(colors)
        return cloud

    def valid(self) -> "PointCloud":
        """The points with a position (an unorganised copy)."""
        return PointCloud(self.data[np.isfinite(self.data["z"])])

    def __len__(self) -> int:
        return len(self.data)

    @property
    def points(self) -> np.ndarray:
        """(N, 3) float32 view."""
        return self.data.view(np.float32).reshape(-1, 5)[:, :3]

    @property
    def colors(self) -> np.ndarray:
        """(N, 3) uint8 RGB (a copy)."""
        return self.data.view(np.uint8).reshape(-1, CLOUD_DTYPE.itemsize)[:, [_RED, _GREEN, _BLUE]]

    def set_colors(self, colors: np.ndarray) -> None:
        """(N, 3) RGB written into the packed rgb field."""
        self.data.view(np.uint8).reshape(-1, CLOUD_DTYPE.itemsize)[:, [_RED, _GREEN, _BLUE]] = colors

    @property
    def frames(self) -> np.ndarray:
        return self.data["frame"]


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from (height, width) to (height, width)."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    scaled = np.array(K, dtype=float)
    scaled[0, 0] *= sx
    scaled[0, 2] = (scaled[0, 2] + 0.5) * sx - 0.5
    scaled[1, 1] *= sy
    scaled[1, 2] = (scaled[1, 2] + 0.5) * sy - 0.5
    return scaled


def lift(
    depth: np.ndarray,
    rgb: np.ndarray,
    K: np.ndarray,
    camera_poses: np.ndarray,
    depth_range: tuple[float, float] = (0.05, 4.0),
    stride: int = 1,
    out: PointCloud | None = None,
) -> PointCloud:
    """depth (V, T, h, w) metres (0: none), rgb (V, T, h, w, 3) uint8, K (V, 3, 3) for (h, w), and
    camera_poses (T, V, 4, 4) base <- camera optical frame, every `stride`-th pixel per axis ->
    an organised cloud (rows of w pixels, views and frames stacked), NaN where depth is missing or
    outside depth_range. `out`: a cloud of the same size to write into (a fresh 40 MB buffer costs
    more in page faults than the lifting itself).

    torch does the per-pixel work (multi-threaded, writing straight into the packed points)."""
    import torch

    depth = np.asarray(depth, dtype=np.float32)[..., ::stride, ::stride]
    rgb = np.asarray(rgb)[..., ::stride, ::stride, :]
    views, frames, h, w = depth.shape
    if rgb.shape != (views, frames, h, w, 3) or camera_poses.shape != (frames, views, 4, 4) or len(K) != views:
        raise ValueError(
            f"shapes do not agree: depth {depth.shape}, rgb {rgb.shape}, K {np.shape(K)}, "
            f"camera_poses {camera_poses.shape} (expected (T, V, 4, 4))"
        )
    count = views * frames * h * w
    cloud = out if out is not None and len(out) == count and out.buffer is not None else PointCloud.allocate(count)
    cloud.width = w
    packed = torch.frombuffer(cloud.buffer, dtype=torch.float32).view(views, frames, h, w, 5)
    d = torch.from_numpy(np.ascontiguousarray(depth))
    d = torch.where((d > depth_range[0]) & (d < depth_range[1]), d, torch.tensor(float("nan")))[..., None]
    k = torch.from_numpy(np.asarray(K, dtype=np.float32))
    # pixel rays are separable: x depends on the column, y on the row; in base axes,
    # ray = rx * R[:, 0] + ry * R[:, 1] + R[:, 2], so the rotation never meets a per-pixel product
    rx = (torch.arange(w, dtype=torch.float32)[None] * stride - k[:, 0, 2, None]) / k[:, 0, 0, None]  # (V, w)
    ry = (torch.arange(h, dtype=torch.float32)[None] * stride - k[:, 1, 2, None]) / k[:, 1, 1, None]  # (V, h)
    pose = torch.from_numpy(np.asarray(camera_poses, dtype=np.float32)).transpose(0, 1)  # (V, T, 4, 4)
    column = rx[:, None, None, :, None] * pose[:, :, None, None, :3, 0] + pose[:, :, None, None, :3, 2]  # (V,T,1,w,3)
    row = ry[:, None, :, None, None] * pose[:, :, None, None, :3, 1]  # (V,T,h,1,3)
    xyz = packed[..., :3]
    torch.mul(column, d, out=xyz)
    xyz.addcmul_(row, d)
    xyz.add_(pose[:, :, None, None, :3, 3])
    channels = torch.frombuffer(cloud.buffer, dtype=torch.uint8).view(views, frames, h, w, CLOUD_DTYPE.itemsize)
    colour = torch.from_numpy(np.ascontiguousarray(rgb))
    for byte, channel in ((_RED, 0), (_GREEN, 1), (_BLUE, 2)):
        channels[..., byte].copy_(colour[..., channel])
    channels[..., 15] = 0
    index = torch.frombuffer(cloud.buffer, dtype=torch.int32).view(views, frames, h * w, 5)[..., 4]
    index.copy_(torch.arange(frames, dtype=torch.int32)[None, :, None].expand(views, frames, h * w))
    return cloud


def voxel_downsample(cloud: PointCloud, voxel: float) -> PointCloud:
    """One point (the first) per occupied voxel and frame, without the NaN points of an organised
    cloud; voxel <= 0 returns the valid points."""
    cloud = cloud.valid()
    if voxel <= 0 or not len(cloud):
        return cloud
    cells = np.floor(cloud.points / voxel).astype(np.int64)
    keys = np.concatenate([cells, cloud.frames[:, None].astype(np.int64)], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    first.sort()
    return PointCloud(cloud.data[first])


def fade(cloud: PointCloud, count: int, floor: float = 0.35) -> PointCloud:
    """Colours blended towards white with the frame index, so that later predicted frames look
    further away in time."""
    if count <= 1 or not len(cloud):
        return cloud
    weight = 1.0 - (1.0 - floor) * cloud.frames.astype(np.float32) / (count - 1)
    colors = cloud.colors * weight[:, None] + 255.0 * (1.0 - weight[:, None])
    faded = PointCloud(cloud.data.copy())
    faded.set_colors(colors.astype(np.uint8))
    return faded
