"""A RealSense software device (librealsense's own virtual camera) with depth and color sensors,
used to feed real librealsense framesets and recordings to the backend under test."""

from __future__ import annotations

import numpy as np
import pyrealsense2 as rs

W, H = 64, 48
SERIAL, FIRMWARE = "123622270123", "5.16.0.1"


def intrinsics(model=None) -> rs.intrinsics:
    i = rs.intrinsics()
    i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = W, H, 50.0, 51.0, 31.5, 23.5
    i.model = model or rs.distortion.brown_conrady
    i.coeffs = [0.1, -0.05, 0.001, 0.002, 0.0]
    return i


class SoftwareCamera:
    def __init__(
        self, depth_units: float = 0.001, recording: str | None = None, domain=rs.timestamp_domain.hardware_clock
    ):
        self.device = rs.software_device()
        for info, value in (
            (rs.camera_info.name, "Intel RealSense D435 (software device)"),
            (rs.camera_info.serial_number, SERIAL),
            (rs.camera_info.firmware_version, FIRMWARE),
        ):
            self.device.register_info(info, value)
        self.depth_units, self.domain = depth_units, domain
        self.depth_sensor = self.device.add_sensor("Depth")
        self.color_sensor = self.device.add_sensor("Color")
        self.depth_profile = self._stream(self.depth_sensor, rs.stream.depth, rs.format.z16, 2, 0)
        self.color_profile = self._stream(self.color_sensor, rs.stream.color, rs.format.rgb8, 3, 1)
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        self.device.create_matcher(rs.matchers.dlr_c)
        self.recorder = rs.recorder(recording, self.device) if recording else None
        self.syncer = rs.syncer()
        self.depth_sensor.open(self.depth_profile)
        self.color_sensor.open(self.color_profile)
        self.depth_sensor.start(self.syncer)
        self.color_sensor.start(self.syncer)

    @staticmethod
    def _stream(sensor, kind, fmt, bpp, uid):
        s = rs.video_stream()
        s.type, s.index, s.uid, s.width, s.height, s.fps, s.bpp, s.fmt = kind, 0, uid, W, H, 30, bpp, fmt
        s.intrinsics = intrinsics()
        return sensor.add_video_stream(s)

    def push(self, k: int, t_ms: float, depth_raw: np.ndarray, rgb: np.ndarray) -> None:
        for sensor, pixels, profile, bpp in (
            (self.depth_sensor, depth_raw, self.depth_profile, 2),
            (self.color_sensor, rgb, self.color_profile, 3),
        ):
            frame = rs.software_video_frame()
            frame.pixels, frame.timestamp, frame.stride, frame.bpp = pixels, t_ms, W * bpp, bpp
            frame.profile, frame.frame_number, frame.domain = profile.as_video_stream_profile(), k, self.domain
            if bpp == 2:
                frame.depth_units = self.depth_units
            sensor.on_video_frame(frame)

    def close(self) -> None:
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.stop()
            sensor.close()
        self.recorder = None  # flushes and closes the recording
