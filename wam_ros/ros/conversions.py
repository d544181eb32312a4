"""numpy <-> ROS message conversion without per-element Python work."""

from __future__ import annotations

import array
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from trajectory_msgs.msg import JointTrajectory

from wam_ros.data.images import ENCODINGS, ImageError, camera_matrix, depth_to_millimetres, image_layout  # noqa: F401 (nodes import it from here)
from wam_ros.data.images import image_array as image_fields_array
from wam_ros.geometry.lifting import CLOUD_DTYPE, PointCloud
from wam_ros.robots.bridge import MAX_HORIZON, MIN_SPACING


def to_time(seconds: float) -> Time:
    # round the total first: 0.9999999999 s is 1 s, not 0 s + a wrapped-around nanosecond field
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def from_time(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


# Generated message classes copy a uint8[] field on assignment (array.array('B', value)) unless
# they check fields, in which case an array('B') is taken as it is: messages with large payloads
# are built with check_fields=True, which saves one copy of every image and cloud.
CHECKED = {"check_fields": True}


def bytes_field(a: np.ndarray) -> array.array:
    # Fast path: array('B').frombytes(memoryview) is ~0.05 ms per 900 KB; .tolist() is ~20 ms.
    buf = array.array("B")
    buf.frombytes(memoryview(np.ascontiguousarray(a)).cast("B"))
    return buf


def image_msg(a: np.ndarray, encoding: str, stamp: Time, frame_id: str) -> Image:
    dtype, channels = ENCODINGS[encoding]
    if a.dtype != dtype or a.ndim != (3 if channels > 1 else 2) or (channels > 1 and a.shape[2] != channels):
        raise ValueError(f"array {a.dtype}{a.shape} does not match encoding {encoding}")
    msg = Image(**CHECKED)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = a.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = a.shape[1] * channels * np.dtype(dtype).itemsize
    msg.data = bytes_field(a)
    return msg


def image_array(msg: Image) -> np.ndarray:
    """View of msg.data as an array (no copy). Raises ValueError on a malformed image."""
    return image_fields_array(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)


# The encodings of a camera's views (MultiViewRGBD; sync_node's inputs)
VIEW_ENCODINGS = {"color": ("rgb8", "bgr8"), "depth": ("16UC1", "32FC1")}


def check_view(msg: Image, kind: str) -> None:
    """A camera's color or depth image whose fields describe its data, in an encoding of that kind.
    Raises ImageError naming the failed check."""
    image_layout(msg.height, msg.width, msg.encoding, msg.step, len(msg.data), msg.is_bigendian, VIEW_ENCODINGS[kind])


def view_array(msg: Image, kind: str) -> np.ndarray:
    """image_array of a camera's color or depth view, in an encoding of that kind (no copy unless
    rows are padded). Raises ImageError naming the failed check."""
    return image_fields_array(
        msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian, VIEW_ENCODINGS[kind]
    )


def view_intrinsics(image: Image, info: CameraInfo) -> np.ndarray:
    """K of the CameraInfo that goes with an image: of the image's size, and calibrated. Raises ImageError."""
    if (info.width, info.height) != (image.width, image.height):
        raise ImageError(f"image {image.width}x{image.height} but CameraInfo {info.width}x{info.height}", "size")
    return camera_matrix(info.k, info.width, info.height)


def view_indices(msg, cameras: Sequence[str]) -> dict[str, int]:
    """camera -> index into the per-view arrays of a (Compressed)MultiViewRGBD, for `cameras`.
    Raises ImageError when the names do not index the arrays one to one, ValueError when a camera
    is missing."""
    names = list(msg.camera_names)
    lengths = {field: len(getattr(msg, field)) for field in ("color", "depth", "color_info", "depth_info", "stamps")}
    if len(set(names)) != len(names) or any(n != len(names) for n in lengths.values()):
        raise ImageError(f"camera names {names} do not index the views: {lengths}", "views")
    missing = [c for c in cameras if c not in names]
    if missing:
        raise ValueError(f"observation lacks cameras {missing} the checkpoint needs")
    return {cam: names.index(cam) for cam in cameras}


def multiview_arrays(
    msg, cameras: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, tuple[np.ndarray, tuple[int, int]]]]:
    """(RGB images, depth images, intrinsics (K, (height, width))) by camera of a wam_ros/MultiViewRGBD,
    for `cameras`, as views on its data. Raises ImageError when the set is malformed (arrays not one
    entry per camera name, a view not matching its fields or its CameraInfo), ValueError when it
    lacks one of the cameras."""
    images, depths, intrinsics = {}, {}, {}
    for cam, i in view_indices(msg, cameras).items():
        color, depth, info = msg.color[i], msg.depth[i], msg.color_info[i]
        where = f"{cam}/color"  # which part a rejection names
        try:
            rgb = view_array(color, "color")
            images[cam] = rgb if color.encoding == "rgb8" else rgb[..., ::-1]
            where = f"{cam}/depth"
            depths[cam] = view_array(depth, "depth")
            where = f"{cam}/color_info"
            intrinsics[cam] = (view_intrinsics(color, info), (info.height, info.width))
        except ImageError as exc:
            raise ImageError(f"{where}: {exc}", exc.check) from None
    return images, depths, intrinsics


def camera_info_msg(
    K: np.ndarray,
    width: int,
    height: int,
    stamp: Time,
    frame_id: str,
    distortion_model: str = "plumb_bob",
    D: Sequence[float] = (0.0,) * 5,
) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = distortion_model
    msg.d = [float(v) for v in D]
    msg.k = [float(v) for v in K.ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def trajectory_arrays(msg: JointTrajectory, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(joint names, absolute point times in s, points x joints) of a JointTrajectory.

    A zero header stamp means "start now", as in ros2_control. Raises ValueError on a
    malformed message: no points, ragged points, a negative time_from_start, one beyond the
    bridge's horizon (MAX_HORIZON), or points closer than MIN_SPACING (which also makes the
    times strictly increasing).
    """
    names = list(msg.joint_names)
    if not msg.points:
        raise ValueError("trajectory has no points")
    if any(len(point.positions) != len(names) for point in msg.points):
        raise ValueError(f"every point needs {len(names)} positions, one per joint name")
    # integer nanoseconds: the spacing check is exact
    ns = np.array(
        [p.time_from_start.sec * 1_000_000_000 + p.time_from_start.nanosec for p in msg.points], dtype=np.int64
    )
    offsets = ns * 1e-9
    if (ns < 0).any():
        raise ValueError(f"time_from_start must be >= 0, got {offsets.min():.3f} s")
    if offsets.max() > MAX_HORIZON:
        raise ValueError(f"time_from_start {offsets.max():.1f} s is beyond the {MAX_HORIZON:.0f} s horizon")
    spacing = np.diff(ns)
    if (spacing < round(MIN_SPACING * 1e9)).any():
        k = int(np.argmax(spacing < round(MIN_SPACING * 1e9)))
        raise ValueError(
            f"time_from_start of points {k} and {k + 1} are {spacing[k] * 1e-6:.3f} ms apart "
            f"(they must increase by at least {MIN_SPACING * 1e3:.0f} ms)"
        )
    start = from_time(msg.header.stamp) or now
    return names, start + offsets, np.array([list(p.positions) for p in msg.points], dtype=float)


def pointcloud_msg(cloud: PointCloud, stamp: Time, frame_id: str) -> PointCloud2:
    """A PointCloud2 with the fields of CLOUD_DTYPE: organised (rows of cloud.width) or not. A cloud
    allocated by lifting hands its buffer over without a copy."""
    data = cloud.data
    width = cloud.width or len(data)
    msg = PointCloud2(
        **CHECKED,
        height=len(data) // width if width else 1,
        width=width,
        is_bigendian=False,
        point_step=CLOUD_DTYPE.itemsize,
        row_step=CLOUD_DTYPE.itemsize * width,
        is_dense=not cloud.width,
    )  # organised clouds keep NaN pixels
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    # RViz reads rgb as a FLOAT32 whose bits are 0x00RRGGBB
    types = {
        "x": PointField.FLOAT32,
        "y": PointField.FLOAT32,
        "z": PointField.FLOAT32,
        "rgb": PointField.FLOAT32,
        "frame": PointField.UINT32,
    }
    msg.fields = [
        PointField(name=name, offset=CLOUD_DTYPE.fields[name][1], datatype=types[name], count=1)
        for name in CLOUD_DTYPE.names
    ]
    whole = cloud.buffer is not None and len(cloud.buffer) == data.nbytes
    msg.data = cloud.buffer if whole else bytes_field(data)
    return msg


def pointcloud_from_msg(msg: PointCloud2) -> PointCloud:
    """A PointCloud2 written by pointcloud_msg (no copy)."""
    if [f.name for f in msg.fields] != list(CLOUD_DTYPE.names) or msg.point_step != CLOUD_DTYPE.itemsize:
        raise ValueError(f"not a wam_ros cloud: fields {[f.name for f in msg.fields]}, point_step {msg.point_step}")
    return PointCloud(
        np.frombuffer(msg.data, CLOUD_DTYPE, count=msg.width * msg.height), msg.width if msg.height > 1 else 0
    )
