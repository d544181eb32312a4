"""Random field combinations into what the nodes run on each input: image_array and camera_matrix,
policy_node's observation conversion (multiview_arrays), and sync_node's callbacks and set assembly
(an in-process node fed through its callbacks). Each input is either handled or rejected with a
ValueError carrying its reason (ImageError naming the failed check); nothing else escapes, and no
set sync_node publishes is one that policy_node would refuse as malformed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import rclpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from wam_ros.data.images import ENCODINGS, ImageError, camera_matrix, image_array
from wam_ros.msg import MultiViewRGBD
from wam_ros.ros.conversions import VIEW_ENCODINGS, check_view, multiview_arrays, to_time, view_intrinsics

pytestmark = pytest.mark.ros

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHECKS = {"encoding", "size", "data size", "camera_info", "views"}
CAMERAS = ("head", "left_wrist", "right_wrist")
UINT32 = 2**32 - 1
# sizes: small ones (valid images), 0, and huge ones (whose data would not fit in memory)
DIMENSION = st.one_of(st.integers(0, 5), st.sampled_from([0, 100000, UINT32]), st.integers(0, UINT32))
# mostly a supported encoding, else an unsupported or random one
ENCODING = st.integers(0, 3).flatmap(
    lambda i: (
        st.sampled_from(list(ENCODINGS))
        if i
        else st.one_of(st.sampled_from(["yuv422", "8UC3", ""]), st.text(max_size=6))
    )
)
BYTES_PER_PIXEL = {e: np.dtype(dtype).itemsize * channels for e, (dtype, channels) in ENCODINGS.items()}


@st.composite
def image_fields(draw, encoding=ENCODING) -> dict:
    """sensor_msgs/Image fields: a small consistent image, often with some fields off (sizes 0 or
    huge, step, data length, byte order)."""
    enc = draw(encoding)
    bpp = BYTES_PER_PIXEL.get(enc) or draw(st.integers(1, 4))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    step = width * bpp + draw(st.sampled_from([0, 0, 1, 7]))  # rows may be padded
    fields = dict(height=height, width=width, encoding=enc, step=step, is_bigendian=0, size=step * height)
    for field in draw(
        st.lists(st.sampled_from(["height", "width", "step", "size", "is_bigendian"]), max_size=3, unique=True)
    ):
        fields[field] = draw({"is_bigendian": st.just(1), "size": st.integers(0, 64)}.get(field, DIMENSION))
    size = fields.pop("size")  # the data length is that of the image before its fields went off
    return dict(fields, data=draw(st.binary(min_size=size, max_size=size)))


FLOAT = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def intrinsics(draw) -> list[float]:
    """9 values of K: a calibrated camera, or anything (NaN, inf, zeros)."""
    if draw(st.booleans()):
        fx, fy, cx, cy = (draw(st.floats(-10.0, 1000.0)) for _ in range(4))
        return [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, draw(st.sampled_from([1.0, 1.0, 0.0, math.nan]))]
    return draw(st.lists(st.one_of(FLOAT, st.just(0.0)), min_size=9, max_size=9))


def image_msg(fields: dict, stamp: float = 0.0) -> Image:
    msg = Image(**fields)
    msg.header.stamp = to_time(stamp)
    return msg


def info_msg(k: list[float], width: int, height: int, stamp: float = 0.0) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, k=k)
    msg.header.stamp = to_time(stamp)
    return msg


def rejected(exc: ValueError) -> None:
    assert str(exc), "a rejection without a reason"
    if isinstance(exc, ImageError):
        assert exc.check in CHECKS, exc.check


@FUZZ
@given(image_fields(), st.sampled_from([tuple(ENCODINGS), VIEW_ENCODINGS["color"], VIEW_ENCODINGS["depth"]]))
def test_image_array_is_the_described_image_or_names_the_wrong_field(fields, encodings):
    try:
        array = image_array(**fields, encodings=encodings)
    except ImageError as exc:
        return rejected(exc)
    dtype, channels = ENCODINGS[fields["encoding"]]
    assert fields["encoding"] in encodings and array.dtype == dtype and array.size > 0
    assert array.shape == (
        (fields["height"], fields["width"], channels) if channels > 1 else (fields["height"], fields["width"])
    )


@FUZZ
@given(st.one_of(intrinsics(), st.lists(FLOAT, max_size=12)), DIMENSION, DIMENSION)
def test_camera_matrix_is_a_calibrated_camera_or_names_the_problem(k, width, height):
    try:
        K = camera_matrix(k, width, height)
    except ImageError as exc:
        return rejected(exc)
    assert K.shape == (3, 3) and np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0


CALIBRATED = [50.0, 0.0, 1.5, 0.0, 50.0, 1.0, 0.0, 0.0, 1.0]


def good_view(kind: str) -> tuple[Image, CameraInfo]:
    enc = VIEW_ENCODINGS[kind][0]
    return (
        image_msg(
            dict(
                height=2,
                width=3,
                encoding=enc,
                step=3 * BYTES_PER_PIXEL[enc],
                is_bigendian=0,
                data=bytes(6 * BYTES_PER_PIXEL[enc]),
            )
        ),
        info_msg(CALIBRATED, 3, 2),
    )


@st.composite
def random_view(draw) -> tuple[Image, CameraInfo]:
    """An image with random fields (any encoding), with calibrated or random intrinsics of its size or another."""
    fields = draw(image_fields())
    k = CALIBRATED if draw(st.booleans()) else draw(intrinsics())
    size = (fields["width"], fields["height"]) if draw(st.booleans()) else (draw(DIMENSION), draw(DIMENSION))
    return image_msg(fields), info_msg(k, *size)


@st.composite
def tampered_view(draw, kind: str) -> tuple[Image, CameraInfo]:
    """A well-formed view with one or two things changed, keeping the data length equal to step x
    height where it can: the cases that a data-length check alone lets through."""
    image, info = good_view(kind)
    for change in draw(
        st.lists(st.sampled_from(["size", "step", "k", "encoding", "big-endian"]), min_size=1, max_size=2, unique=True)
    ):
        if change == "size":  # 0 or huge, CameraInfo alike
            image.width, image.height = info.width, info.height = draw(DIMENSION), draw(DIMENSION)
            image.data = bytes(min(image.step * image.height, 64))
        elif change == "step":  # shorter than a row
            image.step = draw(st.integers(0, image.step - 1))
            # step x height after a huge "size" is gigabytes (a fresh clone's run died of MemoryError
            # allocating it): then the data stays short, as in "size"
            length = image.step * image.height
            image.data = bytes(length if length <= 2**20 else 64)
        elif change == "k":
            info.k = draw(intrinsics())
        elif change == "encoding":
            image.encoding = draw(ENCODING)
        else:
            image.is_bigendian = 1
    return image, info


def broken_view(kind: str) -> st.SearchStrategy[tuple[Image, CameraInfo]]:
    return st.one_of(random_view(), tampered_view(kind))


def view(kind: str) -> st.SearchStrategy[tuple[Image, CameraInfo]]:
    """Mostly a well-formed view of the kind (so that sets convert), else a broken one."""
    return st.integers(0, 5).flatmap(lambda i: st.just(good_view(kind)) if i else broken_view(kind))


@st.composite
def multiview(draw) -> MultiViewRGBD:
    """A MultiViewRGBD: camera names (maybe repeated), per-camera arrays mostly one entry per name,
    else of independent lengths."""
    names = draw(st.one_of(st.permutations(CAMERAS), st.lists(st.sampled_from([*CAMERAS, "top", ""]), max_size=4)))
    n = len(names)
    consistent = draw(st.integers(0, 3)) > 0
    lengths = [n if consistent else draw(st.sampled_from([n, 0, n + 1, max(n - 1, 0)])) for _ in range(3)]
    msg = MultiViewRGBD(camera_names=names, degraded=draw(st.booleans()))
    colors = [draw(view("color")) for _ in range(lengths[0])]
    depths = [draw(view("depth")) for _ in range(lengths[1])]
    msg.color, msg.color_info = [v for v, _ in colors], [i for _, i in colors]
    msg.depth, msg.depth_info = [v for v, _ in depths], [i for _, i in depths]
    msg.stamps = [to_time(0.0)] * lengths[2]
    return msg


@FUZZ
@given(multiview(), st.sampled_from([CAMERAS, CAMERAS[:1], ()]))
def test_policy_observation_conversion_returns_usable_views_or_a_reason(msg, cameras):
    try:
        images, depths, intrinsics_ = multiview_arrays(msg, cameras)
    except ValueError as exc:  # ImageError: malformed; ValueError: a camera missing
        return rejected(exc)
    assert set(images) == set(depths) == set(intrinsics_) == set(cameras)
    for cam in cameras:
        h, w = intrinsics_[cam][1]
        K = intrinsics_[cam][0]
        assert images[cam].shape == (h, w, 3) and images[cam].dtype == np.uint8 and h > 0 and w > 0
        assert depths[cam].ndim == 2 and depths[cam].size > 0 and np.isfinite(K).all() and K[0, 0] > 0


@FUZZ
@given(st.sampled_from(["color", "depth"]), image_fields(), intrinsics(), DIMENSION, DIMENSION)
def test_sync_image_and_camera_info_checks_accept_or_name_the_problem(kind, fields, k, width, height):
    image = image_msg(fields)
    try:
        check_view(image, kind)
        assert fields["encoding"] in VIEW_ENCODINGS[kind] and fields["width"] * fields["height"] > 0
    except ImageError as exc:
        rejected(exc)
    try:
        K = view_intrinsics(image, info_msg(k, width, height))
        assert (width, height) == (fields["width"], fields["height"]) and np.isfinite(K).all()
    except ImageError as exc:
        rejected(exc)


@pytest.fixture(scope="module")
def sync_node():
    """A sync_node in this process, fed through its callbacks; what it publishes is collected."""
    from wam_ros.ros.nodes.sync_node import SyncNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = SyncNode(context=context, parameter_overrides=[Parameter("reliability", value="reliable")])
    published: list[MultiViewRGBD] = []

    class Collector:
        publish = staticmethod(published.append)

    node.pub = Collector()
    try:
        yield node, published, itertools.count(101.0)  # the stamp of each example's frame: always later
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


@st.composite
def camera_frames(draw) -> list[tuple[str, str, Image | None, CameraInfo | None]]:
    """One frame of every stream, in any arrival order: (camera, kind, image, its CameraInfo). A few
    streams (often none, so that sets are matched) get a random view, or lose their image or
    CameraInfo."""
    streams = [(cam, kind) for cam in CAMERAS for kind in ("color", "depth")]
    broken = draw(st.lists(st.sampled_from(streams), max_size=3, unique=True))
    frames = []
    for cam, kind in streams:
        image, info = good_view(kind)
        if (cam, kind) in broken:
            image, info = draw(broken_view(kind))
            image, info = draw(st.sampled_from([(image, info), (None, info), (image, None)]))
        frames.append((cam, kind, image, info))
    return draw(st.permutations(frames))


@FUZZ
@given(camera_frames())
def test_sync_node_callbacks_never_raise_and_publish_only_well_formed_sets(sync_node, frames):
    node, published, stamps = sync_node
    stamp, start = to_time(next(stamps)), len(published)
    for cam, kind, image, info in frames:
        if info is not None:
            info.header.stamp = stamp
            node._on_info((cam, kind), info)
        if image is not None:
            image.header.stamp = stamp
            node._on_image(cam, kind, image)
    for msg in published[start:]:
        active = [c for c, stamp in zip(msg.camera_names, msg.stamps) if not msg.degraded or stamp.sec]
        multiview_arrays(msg, active)  # raises if the policy would refuse it as malformed
