"""The RealSense backend on librealsense's software device and on a recording made with rs.recorder."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from support.realsense_software import FIRMWARE, SERIAL, H, SoftwareCamera, W  # noqa: E402
from wam_ros.cameras.frames import TimestampMapper  # noqa: E402
from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings, frameset_to_rgbd  # noqa: E402
from wam_ros.config import ConfigError  # noqa: E402


def frames(k: int, depth_units: float):
    depth_raw = np.full((H, W), int(round(0.7 / depth_units)), np.uint16)  # 0.7 m
    depth_raw[0, 0] = 0
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, k
    return depth_raw, rgb


def recorded_images(path: str) -> dict[str, int]:
    """Images per stream in an rs.recorder .db3 (a rosbag2 SQLite file), counted without librealsense."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT t.name, COUNT(*) FROM messages m JOIN topics t ON m.topic_id = t.id "
            "WHERE t.name LIKE '%/image/data/%' GROUP BY t.name"
        ).fetchall()
    return {name.split("/")[3]: count for name, count in rows}  # /device_0/sensor_1/Color_0/image/data/...


@pytest.mark.parametrize("depth_units", [0.001, 0.0001])
def test_software_device_framesets_become_rgbd_frames(depth_units):
    cam = SoftwareCamera(depth_units)
    mapper = TimestampMapper()
    got = []
    try:
        for k in range(8):
            cam.push(k, 5000.0 + k * 33.3, *frames(k, depth_units))
            for _ in range(2):
                try:
                    fs = cam.syncer.wait_for_frames(200)
                except RuntimeError:
                    break
                frame = frameset_to_rgbd(fs, None, mapper, host_now=100.0 + k * 0.0333)
                if frame is not None:
                    got.append(frame)
    finally:
        cam.close()
    assert got, "no complete color+depth frameset"
    f = got[-1]
    assert f.color.shape == (H, W, 3) and f.color[0, 0, 0] == 200
    assert f.depth_mm.dtype == np.uint16 and f.depth_mm[1, 1] == 700 and f.depth_mm[0, 0] == 0  # scale honoured
    assert f.depth_scale == pytest.approx(depth_units)
    np.testing.assert_allclose(f.color_model.K, [[50.0, 0, 31.5], [0, 51.0, 23.5], [0, 0, 1]])
    assert f.color_model.distortion_model == "plumb_bob" and f.color_model.D[:2] == pytest.approx((0.1, -0.05))
    stamps = [x.stamp for x in got]
    assert stamps == sorted(stamps)
    # device clock mapped onto the host clock: 33.3 ms apart, anchored near host time 100 s
    assert np.diff(stamps) == pytest.approx(0.0333, abs=1e-4) and 100.0 - 0.1 < stamps[0] < 100.0 + 0.1


@pytest.mark.parametrize("domain", [rs.timestamp_domain.hardware_clock, rs.timestamp_domain.global_time])
def test_a_recording_plays_back_through_the_backend(tmp_path, domain):
    path = str(tmp_path / "session.db3")
    cam = SoftwareCamera(0.001, recording=path, domain=domain)
    for k in range(10):
        cam.push(k, 1000.0 + k * 33.3, *frames(k, 0.001))
        try:
            cam.syncer.wait_for_frames(200)
        except RuntimeError:
            pass
        time.sleep(0.01)  # a camera's pace, not a burst: the recorder writes on its own thread
    cam.close()
    del cam
    recorded = recorded_images(path)
    assert recorded["Color_0"] == recorded["Depth_0"] >= 5, f"rs.recorder kept too few frames: {recorded}"
    backend = RealSenseCamera(RealSenseSettings(rosbag_filename=path))
    opened_at = time.time()
    backend.open()
    played = []
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            frame = backend.read(2000)
            if frame is None:
                if played:
                    break
                continue
            played.append(frame)
    finally:
        backend.close()
    numbers = [f.frame_number for f in played]
    assert len(played) == recorded["Color_0"], (numbers, recorded)  # every recorded pair, once
    assert backend.device_info["serial_number"] == SERIAL and backend.device_info["firmware_version"] == FIRMWARE
    assert numbers == sorted(set(numbers)), "playback frames repeated or out of order"
    f = played[-1]
    assert f.color[0, 0, 1] == f.frame_number % 256 and f.depth_mm[5, 5] == 700
    np.testing.assert_allclose(f.color_model.K[0, 0], 50.0)
    np.testing.assert_allclose(f.depth_model.K[1, 1], 51.0)  # recordings deliver depth as recorded
    # replayed from now, in the recorded spacing, whatever the domain (a global-time recording
    # stamped 1970 + 1 s would make every set downstream 56 years old)
    stamps = np.array([p.stamp for p in played])
    assert opened_at - 1.0 < stamps[0] < time.time() and np.all(np.diff(stamps) > 0.03)
    assert stamps[-1] - stamps[0] == pytest.approx((numbers[-1] - numbers[0]) * 0.0333, abs=2e-3)


def test_bad_settings_and_missing_sources_are_named(tmp_path):
    with pytest.raises(ConfigError, match="rgb_camera.color_profile: expected 'width,height,fps'"):
        RealSenseSettings(color_profile="640x480")
    with pytest.raises(ConfigError, match="inter_cam_sync_mode: 7 is not one of"):
        RealSenseSettings(inter_cam_sync_mode=7)
    with pytest.raises(ConnectionError, match="RealSense recording .*missing.db3"):
        RealSenseCamera(RealSenseSettings(rosbag_filename=str(tmp_path / "missing.db3"))).open()
    # no camera on this machine: said at once (pipeline.start would take seconds), with what is connected
    start = time.monotonic()
    with pytest.raises(
        ConnectionError, match="RealSense camera 123456789: not connected; connected RealSense cameras: none"
    ):
        RealSenseCamera(RealSenseSettings(serial_no="123456789")).open()
    assert time.monotonic() - start < 5.0
