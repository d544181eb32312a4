"""Our image messages read by converters this package did not write: rosbags-image (OpenCV) always,
cv_bridge where a ROS install provides it. Our own conversions stay the fast path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.image import compressed_image_to_cvimage, image_to_cvimage
from sensor_msgs.msg import CompressedImage

from wam_ros.data.images import decode_compressed, encode_color, encode_depth
from wam_ros.ros.conversions import image_array, image_msg, to_time

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
DEPTH = RNG.integers(0, 65535, (48, 64), dtype=np.uint16)


def compressed(fmt_data: tuple[str, bytes]) -> CompressedImage:
    msg = CompressedImage(format=fmt_data[0])
    msg.data = fmt_data[1]
    return msg


def test_raw_images_read_the_same_in_opencv():
    np.testing.assert_array_equal(image_to_cvimage(image_msg(RGB, "rgb8", to_time(1.0), "cam"), "rgb8"), RGB)
    np.testing.assert_array_equal(image_to_cvimage(image_msg(RGB, "rgb8", to_time(1.0), "cam"), "bgr8"), RGB[..., ::-1])
    np.testing.assert_array_equal(image_to_cvimage(image_msg(DEPTH, "16UC1", to_time(1.0), "cam")), DEPTH)


def test_compressed_images_of_the_recorder_decode_in_opencv():
    """What the recorder stores with compression on: <topic>/compressed as image_transport's
    compressed (PNG: exact; JPEG: close) and compressedDepth (exact millimetres)."""
    np.testing.assert_array_equal(compressed_image_to_cvimage(compressed(encode_color(RGB, "png")), "rgb8"), RGB)
    y, x = np.mgrid[0:48, 0:64]
    ramps = np.stack([x * 4, y * 5, np.full_like(x, 50)], axis=-1).astype(np.uint8)  # red, green, blue apart
    fmt, data = encode_color(ramps, "jpeg", 95)
    jpeg = compressed_image_to_cvimage(compressed((fmt, data)), "rgb8").astype(int)
    assert np.abs(jpeg - decode_compressed(fmt, data)).max() <= 3  # two JPEG decoders agree
    assert np.abs(jpeg - ramps).mean() < 2 and np.abs(jpeg - ramps[..., ::-1]).mean() > 40  # channel order
    # compressedDepth (rosbags-image does not read it): OpenCV decodes the PNG after the 12-byte
    # ConfigHeader, as compressed_depth_image_transport's 16UC1 decoder does
    fmt, data = encode_depth(DEPTH)
    assert fmt == "16UC1; compressedDepth png"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED), DEPTH)


def test_cv_bridge_round_trips_our_images():
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge comes with a ROS install (not a PyPI wheel)")
    bridge = cv_bridge.CvBridge()
    for array, encoding in ((RGB, "rgb8"), (DEPTH, "16UC1")):
        msg = image_msg(array, encoding, to_time(1.0), "cam")
        np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, encoding), array)
        np.testing.assert_array_equal(image_array(bridge.cv2_to_imgmsg(array, encoding)), array)
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(compressed(encode_color(RGB, "png")), "rgb8"), RGB)
