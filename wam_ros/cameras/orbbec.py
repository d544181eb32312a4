"""Orbbec backend (pyorbbecsdk2, Gemini 330 series).

Parameter names follow orbbec_camera (serial_number, color_width/height/fps, depth_width/...,
align_mode, sync_mode, depth_delay_us, color_delay_us, time_domain). Only the configuration and
conversion code below runs without a device; `OrbbecCamera.open()` needs a camera.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from wam_ros.cameras.frames import CameraModel, RGBDFrame, TimestampMapper, depth_to_mm
from wam_ros.config import ConfigError, check_choice

ALIGN_MODES = ("HW", "SW", "NONE")
SYNC_MODES = (
    "free_run",
    "standalone",
    "primary",
    "secondary",
    "secondary_synced",
    "software_triggering",
    "hardware_triggering",
)
TIME_DOMAINS = ("device", "global", "system")
COLOR_FORMATS = ("RGB", "BGR", "MJPG", "YUYV")


@dataclass(frozen=True)
class OrbbecSettings:
    serial_number: str = ""
    color_width: int = 640
    color_height: int = 480
    color_fps: int = 30
    color_format: str = "MJPG"
    depth_width: int = 640
    depth_height: int = 480
    depth_fps: int = 30
    align_mode: str = "SW"  # HW (on the camera), SW (in the SDK), NONE
    sync_mode: str = "standalone"
    depth_delay_us: int = 0
    color_delay_us: int = 0
    trigger_to_image_delay_us: int = 0
    time_domain: str = "global"  # device clock, global (device clock mapped to host) or system

    def __post_init__(self) -> None:
        check_choice("align_mode", self.align_mode, ALIGN_MODES)
        check_choice("sync_mode", self.sync_mode, SYNC_MODES)
        check_choice("time_domain", self.time_domain, TIME_DOMAINS)
        check_choice("color_format", self.color_format, COLOR_FORMATS)
        for name in ("color_width", "color_height", "color_fps", "depth_width", "depth_height", "depth_fps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("depth_delay_us", "color_delay_us", "trigger_to_image_delay_us"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0 us, got {getattr(self, name)}")


def sync_config(settings: OrbbecSettings):
    """The SDK's multi-device sync configuration for these settings."""
    import pyorbbecsdk as ob

    config = ob.OBMultiDeviceSyncConfig()
    config.mode = getattr(ob.OBMultiDeviceSyncMode, settings.sync_mode.upper())
    config.depth_delay_us = settings.depth_delay_us
    config.color_delay_us = settings.color_delay_us
    config.trigger_to_image_delay_us = settings.trigger_to_image_delay_us
    return config


def align_mode(settings: OrbbecSettings):
    import pyorbbecsdk as ob

    return {"HW": ob.OBAlignMode.HW_MODE, "SW": ob.OBAlignMode.SW_MODE, "NONE": ob.OBAlignMode.DISABLE}[
        settings.align_mode
    ]


def color_to_rgb(data: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """An Orbbec color buffer (bytes as uint8) in RGB, BGR, MJPG or YUYV -> H x W x 3 RGB."""
    data = np.asarray(data, dtype=np.uint8).ravel()
    if fmt in ("RGB", "BGR"):
        if data.size != width * height * 3:
            raise ValueError(f"{fmt} buffer of {data.size} bytes is not {width}x{height}x3")
        rgb = data.reshape(height, width, 3)
        return rgb if fmt == "RGB" else np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "MJPG":
        from PIL import Image

        image = Image.open(io.BytesIO(data.tobytes())).convert("RGB")
        if image.size != (width, height):
            raise ValueError(f"MJPG frame is {image.size[0]}x{image.size[1]}, expected {width}x{height}")
        return np.asarray(image)
    if fmt == "YUYV":
        if data.size != width * height * 2:
            raise ValueError(f"YUYV buffer of {data.size} bytes is not {width}x{height}x2")
        yuyv = data.reshape(height, width // 2, 4).astype(np.float32)
        y = np.stack([yuyv[..., 0], yuyv[..., 2]], axis=-1).reshape(height, width)
        u = np.repeat(yuyv[..., 1], 2, axis=1) - 128.0
        v = np.repeat(yuyv[..., 3], 2, axis=1) - 128.0
        rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    raise ValueError(f"color format {fmt!r} is not one of {COLOR_FORMATS}")


def camera_model(intrinsic, distortion) -> CameraModel:
    """OBCameraIntrinsic + OBCameraDistortion -> CameraModel (rational_polynomial: k1 k2 p1 p2 k3 k4 k5 k6)."""
    K = np.array([[intrinsic.fx, 0.0, intrinsic.cx], [0.0, intrinsic.fy, intrinsic.cy], [0.0, 0.0, 1.0]])
    d = distortion
    return CameraModel(
        int(intrinsic.width),
        int(intrinsic.height),
        K,
        "rational_polynomial",
        tuple(float(v) for v in (d.k1, d.k2, d.p1, d.p2, d.k3, d.k4, d.k5, d.k6)),
    )


def depth_frame_to_mm(raw: np.ndarray, value_scale_mm: float) -> np.ndarray:
    """Orbbec depth: raw Y16 values times the frame's depth scale give millimetres."""
    return depth_to_mm(raw, value_scale_mm / 1000.0)


class OrbbecCamera:
    """A Gemini 330 through pyorbbecsdk's Pipeline. Needs a device: not exercised on this machine."""

    def __init__(self, settings: OrbbecSettings):
        self.settings = settings
        self._pipeline = None
        self._align = None
        self._mapper = TimestampMapper()
        self.device_info: dict[str, str] = {}  # of the opened device

    def open(self) -> None:
        import pyorbbecsdk as ob

        s = self.settings
        devices = ob.Context().query_devices()
        device, serials = None, []
        for k in range(devices.get_count()):
            candidate = devices.get_device_by_index(k)
            serials.append(candidate.get_device_info().get_serial_number())
            if device is None and (not s.serial_number or serials[-1] == s.serial_number):
                device = candidate
        if device is None:
            raise ConnectionError(
                f"Orbbec camera {s.serial_number or '(any)'}: not connected; connected Orbbec "
                f"cameras: {', '.join(serials) or 'none'}" + (" (set serial_number to one of them)" if serials else "")
            )
        info = device.get_device_info()
        self.device_info = {
            "name": info.get_name(),
            "serial_number": info.get_serial_number(),
            "firmware_version": info.get_firmware_version(),
            "connection_type": info.get_connection_type(),
        }
        device.set_multi_device_sync_config(sync_config(s))
        pipeline = ob.Pipeline(device)
        config = ob.Config()
        color_format = getattr(ob.OBFormat, s.color_format)
        color_profiles = pipeline.get_stream_profile_list(ob.OBSensorType.COLOR_SENSOR)
        depth_profiles = pipeline.get_stream_profile_list(ob.OBSensorType.DEPTH_SENSOR)
        config.enable_stream(
            color_profiles.get_video_stream_profile(s.color_width, s.color_height, color_format, s.color_fps)
        )
        config.enable_stream(
            depth_profiles.get_video_stream_profile(s.depth_width, s.depth_height, ob.OBFormat.Y16, s.depth_fps)
        )
        if s.align_mode == "HW":
            config.set_align_mode(align_mode(s))
        pipeline.start(config)
        self._pipeline = pipeline
        self._align = ob.AlignFilter(align_to_stream=ob.OBStreamType.COLOR_STREAM) if s.align_mode == "SW" else None
        self._params = pipeline.get_camera_param()

    def read(self, timeout_ms: int = 1000) -> RGBDFrame | None:
        frames = self._pipeline.wait_for_frames(timeout_ms)
        if frames is None:
            return None
        if self._align is not None:
            frames = self._align.process(frames).as_frame_set()
        color, depth = frames.get_color_frame(), frames.get_depth_frame()
        if color is None or depth is None:
            return None
        w, h = color.get_width(), color.get_height()
        rgb = color_to_rgb(np.asanyarray(color.get_data()), self.settings.color_format, w, h)
        raw = np.frombuffer(depth.get_data(), dtype=np.uint16).reshape(depth.get_height(), depth.get_width())
        color_model = camera_model(self._params.rgb_intrinsic, self._params.rgb_distortion)
        aligned = self.settings.align_mode != "NONE"
        depth_model = (
            color_model if aligned else camera_model(self._params.depth_intrinsic, self._params.depth_distortion)
        )
        domain = self.settings.time_domain
        device_ms = (
            color.get_system_timestamp()
            if domain == "system"
            else color.get_global_timestamp()
            if domain == "global"
            else color.get_timestamp()
        )
        stamp = self._mapper(device_ms, domain in ("system", "global"), time.time())
        return RGBDFrame(
            rgb,
            depth_frame_to_mm(raw, depth.get_depth_scale()),
            color_model,
            depth_model,
            stamp,
            int(color.get_index()),
            depth.get_depth_scale() / 1000.0,
        )

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None
