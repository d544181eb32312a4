"""Intel RealSense backend (pyrealsense2): a live camera by serial number, or a recording.

Parameter names follow realsense2_camera (serial_no, rgb_camera.color_profile,
depth_module.depth_profile, align_depth.enable, depth_module.inter_cam_sync_mode,
global_time_enabled, rosbag_filename).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wam_ros.cameras.frames import CameraModel, RGBDFrame, TimestampMapper, depth_to_mm, parse_profile
from wam_ros.config import ConfigError

# librealsense distortion models -> ROS sensor_msgs/CameraInfo distortion_model
DISTORTION_MODELS = {
    "brown_conrady": "plumb_bob",
    "modified_brown_conrady": "plumb_bob",
    "inverse_brown_conrady": "plumb_bob",
    "none": "plumb_bob",
    "kannala_brandt4": "equidistant",
    "ftheta": "equidistant",
}
SYNC_MODES = {0: "default", 1: "master", 2: "slave", 3: "full slave"}


@dataclass(frozen=True)
class RealSenseSettings:
    serial_no: str = ""
    color_profile: str = "640,480,30"
    depth_profile: str = "640,480,30"
    align_depth: bool = True
    inter_cam_sync_mode: int = 0
    global_time_enabled: bool = True
    rosbag_filename: str = ""  # play a recording (.db3 / .bag) instead of a device

    def __post_init__(self) -> None:
        parse_profile(self.color_profile, "rgb_camera.color_profile")
        parse_profile(self.depth_profile, "depth_module.depth_profile")
        if self.inter_cam_sync_mode not in SYNC_MODES:
            raise ConfigError(
                f"depth_module.inter_cam_sync_mode: {self.inter_cam_sync_mode} is not one of "
                f"{', '.join(f'{k} ({v})' for k, v in SYNC_MODES.items())}"
            )


DEVICE_INFO = ("name", "serial_number", "firmware_version", "usb_type_descriptor", "product_line")


def device_info(device) -> dict[str, str]:
    """What a librealsense device (live or a recording's) says about itself, for /diagnostics."""
    import pyrealsense2 as rs

    return {
        key: device.get_info(getattr(rs.camera_info, key))
        for key in DEVICE_INFO
        if device.supports(getattr(rs.camera_info, key))
    }


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense cameras on this machine (answers in tens of milliseconds)."""
    import pyrealsense2 as rs

    return [
        d.get_info(rs.camera_info.serial_number)
        for d in rs.context().query_devices()
        if d.supports(rs.camera_info.serial_number)
    ]


def camera_model(intrinsics) -> CameraModel:
    K = np.array([[intrinsics.fx, 0.0, intrinsics.ppx], [0.0, intrinsics.fy, intrinsics.ppy], [0.0, 0.0, 1.0]])
    model = str(intrinsics.model).split(".")[-1]
    return CameraModel(
        intrinsics.width,
        intrinsics.height,
        K,
        DISTORTION_MODELS.get(model, "plumb_bob"),
        tuple(float(c) for c in intrinsics.coeffs),
    )


def frameset_to_rgbd(frames, align, mapper: TimestampMapper, host_now: float) -> RGBDFrame | None:
    """A librealsense frameset -> RGBDFrame (None unless it holds both color and depth)."""
    if align is not None:
        frames = align.process(frames)
    color, depth = frames.get_color_frame(), frames.get_depth_frame()
    if not color or not depth:
        return None
    return frames_to_rgbd(color, depth, align is not None, mapper, host_now)


def frames_to_rgbd(color, depth, aligned: bool, mapper: TimestampMapper, host_now: float) -> RGBDFrame:
    import pyrealsense2 as rs

    fmt = color.get_profile().format()
    if fmt not in (rs.format.rgb8, rs.format.bgr8):
        raise ValueError(f"color format {fmt} is not rgb8/bgr8")
    rgb = np.asanyarray(color.get_data())
    if fmt == rs.format.bgr8:
        rgb = rgb[..., ::-1]
    depth_scale = float(depth.get_units())
    color_model = camera_model(color.get_profile().as_video_stream_profile().intrinsics)
    depth_model = color_model if aligned else camera_model(depth.get_profile().as_video_stream_profile().intrinsics)
    domain = color.get_frame_timestamp_domain()
    host_referenced = domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)
    stamp = mapper(color.get_timestamp(), host_referenced, host_now)
    return RGBDFrame(
        np.ascontiguousarray(rgb),
        depth_to_mm(np.asanyarray(depth.get_data()), depth_scale),
        color_model,
        depth_model,
        stamp,
        int(color.get_frame_number()),
        depth_scale,
    )


class RealSenseCamera:
    def __init__(self, settings: RealSenseSettings):
        self.settings = settings
        self._pipeline = None  # live device
        self._sensors = []  # recording: its sensors, read one by one
        self._align = None
        self._mapper = TimestampMapper()
        self._last_frame_number = -1
        self.device_info: dict[str, str] = {}  # of the opened device or recording

    def open(self) -> None:
        if self.settings.rosbag_filename:
            self._open_recording()
        else:
            self._open_device()

    def _open_recording(self) -> None:
        """Recordings are read sensor by sensor and paired here by timestamp: rs.pipeline's syncer
        drops most frames of a non-real-time playback. Depth comes as recorded (unaligned). Frames
        are released at the recorded pace, as the camera delivered them: a burst would overrun the
        subscribers' history and drop frames."""
        import pyrealsense2 as rs

        path = self.settings.rosbag_filename
        try:
            device = rs.context().load_device(path)
        except RuntimeError as exc:
            raise ConnectionError(f"RealSense recording {path}: {exc}") from None
        playback = device.as_playback()
        playback.set_real_time(False)
        self._mapper = TimestampMapper(anchored=True)  # recorded time, replayed from now on
        self._queue = rs.frame_queue(256, keep_frames=True)
        self._sensors = device.query_sensors()
        # paused while the sensors start: otherwise the first sensor's frames run ahead of the
        # others' and the pairing below has to hold them all
        playback.pause()
        for sensor in self._sensors:
            sensor.open(sensor.get_stream_profiles())
            sensor.start(self._queue)
        playback.resume()
        self._playback = device
        self.device_info = {**device_info(device), "recording": path}
        self._unpaired: dict[str, dict[float, object]] = {"color": {}, "depth": {}}
        self._pace_origin: tuple[float, float] | None = None  # (first recorded ms, host monotonic s)

    def _read_recording(self, timeout_ms: int) -> RGBDFrame | None:
        import pyrealsense2 as rs

        while True:
            try:
                frame = self._queue.wait_for_frame(timeout_ms)
            except RuntimeError:
                return None  # end of the recording
            kind, other = (
                ("color", "depth") if frame.get_profile().stream_type() == rs.stream.color else ("depth", "color")
            )
            frame = frame.as_video_frame() if kind == "color" else frame.as_depth_frame()
            stamp = frame.get_timestamp()
            # the sensors' frames arrive in any interleaving: pair them by timestamp
            match = next((t for t in self._unpaired[other] if abs(t - stamp) < 1.0), None)
            if match is None:
                self._unpaired[kind][stamp] = frame
                while len(self._unpaired[kind]) > 64:
                    self._unpaired[kind].pop(min(self._unpaired[kind]))
                continue
            partner = self._unpaired[other].pop(match)
            color, depth = (frame, partner) if kind == "color" else (partner, frame)
            self._wait_for_recorded_time(color.get_timestamp())
            return frames_to_rgbd(color, depth, False, self._mapper, time.time())

    def _wait_for_recorded_time(self, recorded_ms: float) -> None:
        if self._pace_origin is None:
            self._pace_origin = (recorded_ms, time.monotonic())
        first_ms, first_host = self._pace_origin
        delay = first_host + (recorded_ms - first_ms) / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _open_device(self) -> None:
        import pyrealsense2 as rs

        s = self.settings
        serials = connected_serials()  # before pipeline.start: it takes seconds to fail on a missing camera
        if not serials or (s.serial_no and s.serial_no not in serials):
            raise ConnectionError(
                f"RealSense camera {s.serial_no or '(any)'}: not connected; connected RealSense "
                f"cameras: {', '.join(serials) or 'none'}" + (" (set serial_no to one of them)" if serials else "")
            )
        config = rs.config()
        if s.serial_no:
            config.enable_device(s.serial_no)
        cw, ch, cfps = parse_profile(s.color_profile, "rgb_camera.color_profile")
        dw, dh, dfps = parse_profile(s.depth_profile, "depth_module.depth_profile")
        config.enable_stream(rs.stream.color, cw, ch, rs.format.rgb8, cfps)
        config.enable_stream(rs.stream.depth, dw, dh, rs.format.z16, dfps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise ConnectionError(f"RealSense camera {s.serial_no or '(any)'}: {exc}") from None
        self.device_info = device_info(profile.get_device())
        for sensor in profile.get_device().query_sensors():
            if s.global_time_enabled and sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1.0)
            if sensor.is_depth_sensor() and sensor.supports(rs.option.inter_cam_sync_mode):
                sensor.set_option(rs.option.inter_cam_sync_mode, float(s.inter_cam_sync_mode))
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if s.align_depth else None

    def read(self, timeout_ms: int = 1000) -> RGBDFrame | None:
        """The next new frame; None on a timeout or at the end of a recording. A device error
        (unplugged) raises ConnectionError; reopen with close() + open()."""
        if self.settings.rosbag_filename:
            return self._read_recording(timeout_ms)
        try:
            frames = self._pipeline.wait_for_frames(timeout_ms)
        except RuntimeError as exc:
            raise ConnectionError(f"RealSense {self.settings.serial_no or '(any)'}: {exc}") from None
        frame = frameset_to_rgbd(frames, self._align, self._mapper, time.time())
        if frame is None or frame.frame_number == self._last_frame_number:
            return None  # incomplete set, or playback repeating a frame
        self._last_frame_number = frame.frame_number
        return frame

    def close(self) -> None:
        for sensor in self._sensors:
            sensor.stop()
            sensor.close()
        self._sensors = []
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already gone (unplugged)
            self._pipeline = None
