"""The Orbbec backend's configuration and conversion code, against pyorbbecsdk2's own types.
No device exists here: opening a camera is only checked to fail clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest

ob = pytest.importorskip("pyorbbecsdk")

from wam_ros.cameras.orbbec import (  # noqa: E402
    OrbbecCamera,
    OrbbecSettings,
    align_mode,
    camera_model,
    color_to_rgb,
    depth_frame_to_mm,
    sync_config,
)
from wam_ros.config import ConfigError  # noqa: E402


def test_settings_map_onto_the_sdk_sync_and_align_configuration():
    s = OrbbecSettings(
        sync_mode="secondary_synced",
        depth_delay_us=1200,
        color_delay_us=300,
        trigger_to_image_delay_us=50,
        align_mode="HW",
    )
    config = sync_config(s)
    assert config.mode == ob.OBMultiDeviceSyncMode.SECONDARY_SYNCED
    assert (config.depth_delay_us, config.color_delay_us, config.trigger_to_image_delay_us) == (1200, 300, 50)
    assert align_mode(s) == ob.OBAlignMode.HW_MODE
    assert align_mode(OrbbecSettings(align_mode="NONE")) == ob.OBAlignMode.DISABLE


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sync_mode", "leader", "sync_mode: unknown value 'leader'; allowed: free_run, standalone, primary"),
        ("align_mode", "GPU", "align_mode: unknown value 'GPU'; allowed: HW, SW, NONE"),
        ("time_domain", "gps", "time_domain: unknown value 'gps'"),
        ("depth_fps", 0, "depth_fps: must be positive"),
        ("depth_delay_us", -5, "depth_delay_us: must be >= 0 us"),
    ],
)
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        OrbbecSettings(**{field: value})


def test_color_formats_convert_to_rgb():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_to_rgb(rgb.ravel(), "RGB", 6, 4), rgb)
    np.testing.assert_array_equal(color_to_rgb(rgb[..., ::-1].ravel(), "BGR", 6, 4), rgb)
    from PIL import Image

    flat = np.zeros((16, 16, 3), np.uint8)
    flat[...] = (200, 40, 90)
    jpeg = io.BytesIO()
    Image.fromarray(flat).save(jpeg, format="JPEG", quality=95)
    decoded = color_to_rgb(np.frombuffer(jpeg.getvalue(), np.uint8), "MJPG", 16, 16)
    assert np.abs(decoded.astype(int) - flat).max() <= 3
    # YUYV of a mid-grey and of pure red (BT.601 full range)
    grey = np.array([128, 128, 128, 128] * 2, np.uint8)  # Y U Y V for 4 pixels
    np.testing.assert_array_equal(color_to_rgb(grey, "YUYV", 4, 1), np.full((1, 4, 3), 128))
    red = np.array([76, 85, 76, 255] * 2, np.uint8)
    assert np.abs(color_to_rgb(red, "YUYV", 4, 1)[0, 0].astype(int) - [255, 0, 0]).max() <= 3
    with pytest.raises(ValueError, match="RGB buffer of 10 bytes is not 6x4x3"):
        color_to_rgb(np.zeros(10, np.uint8), "RGB", 6, 4)


def test_intrinsics_and_depth_scale_map_to_ros_conventions():
    intrinsic, distortion = ob.OBCameraIntrinsic(), ob.OBCameraDistortion()
    intrinsic.fx, intrinsic.fy, intrinsic.cx, intrinsic.cy, intrinsic.width, intrinsic.height = (
        600,
        601,
        320,
        240,
        640,
        480,
    )
    distortion.k1, distortion.k2, distortion.p1, distortion.p2, distortion.k3 = 0.1, -0.2, 0.001, 0.002, 0.03
    distortion.k4, distortion.k5, distortion.k6 = 0.4, 0.5, 0.6
    model = camera_model(intrinsic, distortion)
    assert model.distortion_model == "rational_polynomial" and (model.width, model.height) == (640, 480)
    np.testing.assert_allclose(model.K, [[600, 0, 320], [0, 601, 240], [0, 0, 1]])
    assert model.D == pytest.approx((0.1, -0.2, 0.001, 0.002, 0.03, 0.4, 0.5, 0.6))
    raw = np.array([[1000, 0], [65535, 2500]], np.uint16)
    np.testing.assert_array_equal(depth_frame_to_mm(raw, 1.0), raw)
    np.testing.assert_array_equal(depth_frame_to_mm(raw, 0.1), [[100, 0], [6554, 250]])


def test_opening_without_a_device_fails_with_its_serial():
    with pytest.raises(ConnectionError, match="Orbbec camera CP1234: not connected; connected Orbbec cameras: none"):
        OrbbecCamera(OrbbecSettings(serial_number="CP1234")).open()
