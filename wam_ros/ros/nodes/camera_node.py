"""Shared RGB-D camera node: a backend read in its own thread, published on the official
drivers' topic names (color/image_raw, color/camera_info, aligned_depth_to_color/* or depth/*),
reconnecting after an unplug. realsense_node and orbbec_node only add their vendor parameters to CameraParams."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from wam_ros.cameras.frames import CameraModel, RGBDFrame
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import camera_info_msg, image_msg, to_time
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import CAMERA_INFO_QOS, DIAGNOSTICS_QOS, IMAGE_QOS


@dataclass(frozen=True)
class CameraParams:
    """The parameters of every camera node; a vendor's node adds its own in a subclass."""

    # declared with the node's name as its default (declare_params' defaults)
    camera_name: str = param("camera", "Prefix of the frame ids (<camera_name>_color_optical_frame)")
    reconnect_period: float = param(1.0, "Seconds between reconnection attempts", range_=(0.1, 60.0))


class RGBDCameraNode(Node):
    vendor = "camera"
    params_class: type[CameraParams] = CameraParams  # a vendor's parameters, declared before make_backend

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = declare_params(self, self.params_class, defaults={"camera_name": node_name})
        self.backend = self.make_backend()
        aligned = self.depth_aligned()
        depth_ns = "aligned_depth_to_color" if aligned else "depth"
        self.color_pub = self.create_publisher(Image, "color/image_raw", IMAGE_QOS)
        self.color_info_pub = self.create_publisher(CameraInfo, "color/camera_info", CAMERA_INFO_QOS)
        self.depth_pub = self.create_publisher(Image, f"{depth_ns}/image_raw", IMAGE_QOS)
        self.depth_info_pub = self.create_publisher(CameraInfo, f"{depth_ns}/camera_info", CAMERA_INFO_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self._color_frame = f"{self.params.camera_name}_color_optical_frame"
        self._depth_frame = self._color_frame if aligned else f"{self.params.camera_name}_depth_optical_frame"
        self._meter = diag.RateMeter()
        self._state, self._error, self._reconnects, self._depth_scale = "connecting", "", 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.vendor}_reader", daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._publish_diagnostics)

    # vendor hooks
    def make_backend(self):
        raise NotImplementedError

    def depth_aligned(self) -> bool:
        raise NotImplementedError

    def is_playback(self) -> bool:
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.backend.open()
                self._state, self._error = "streaming", ""
                self.get_logger().info(
                    f"{self.vendor} camera open: " + ", ".join(f"{k} {v}" for k, v in self.backend.device_info.items())
                )
                pace = None  # playback: (first stamp, wall time) to replay at the recorded rate
                if self.is_playback():
                    # a recording starts when someone listens, so that no frame is lost
                    while self.color_pub.get_subscription_count() == 0 and not self._stop.wait(0.05):
                        pass
                while not self._stop.is_set():
                    frame = self.backend.read(1000)
                    if frame is not None:
                        if self.is_playback():
                            pace = pace or (frame.stamp, time.monotonic())
                            self._stop.wait(max(0.0, pace[1] + frame.stamp - pace[0] - time.monotonic()))
                        self._publish(frame)
                    elif self.is_playback():
                        self._state = "recording finished"
                        self.get_logger().info("recording finished")
                        return
            except (ConnectionError, RuntimeError) as exc:
                if str(exc) != self._error:
                    self.get_logger().error(f"{exc}; retrying every {self.params.reconnect_period:.1f} s")
                self._state, self._error = "disconnected", str(exc)
                self._reconnects += 1
            finally:
                self.backend.close()
            self._stop.wait(self.params.reconnect_period)

    def _publish(self, frame: RGBDFrame) -> None:
        stamp = to_time(frame.stamp)
        self._meter.tick(time.monotonic())
        self._depth_scale = frame.depth_scale
        for pub, info_pub, image, encoding, model, frame_id in (
            (self.color_pub, self.color_info_pub, frame.color, "rgb8", frame.color_model, self._color_frame),
            (self.depth_pub, self.depth_info_pub, frame.depth_mm, "16UC1", frame.depth_model, self._depth_frame),
        ):
            pub.publish(image_msg(image, encoding, stamp, frame_id))
            info_pub.publish(self._info(model, stamp, frame_id))

    @staticmethod
    def _info(model: CameraModel, stamp, frame_id: str) -> CameraInfo:
        return camera_info_msg(model.K, model.width, model.height, stamp, frame_id, model.distortion_model, model.D)

    def _publish_diagnostics(self) -> None:
        level = diag.OK if self._state == "streaming" else diag.ERROR if self._state == "disconnected" else diag.WARN
        device = dict(self.backend.device_info)  # of the last device opened: kept while it is unplugged
        values = {
            "state": self._state,
            "error": self._error,
            "rate_hz": f"{self._meter.rate(time.monotonic()):.2f}",
            "frames": self._meter.count,
            "reconnect_attempts": self._reconnects,
            "depth_scale": self._depth_scale,
            **device,
        }
        self.diag_pub.publish(
            diag.array_msg(
                to_time(time.time()),
                [
                    diag.status(
                        f"{self.get_fully_qualified_name()}: {self.vendor} camera",
                        device.get("serial_number") or self.params.camera_name,
                        level,
                        self._error or self._state,
                        values,
                    )
                ],
            )
        )

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()
