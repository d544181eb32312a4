"""orbbec_node: one Orbbec Gemini 330 camera on the orbbec_camera / realsense2_camera topic names."""

from __future__ import annotations

from dataclasses import dataclass, fields

from wam_ros.cameras.orbbec import ALIGN_MODES, SYNC_MODES, TIME_DOMAINS, OrbbecCamera, OrbbecSettings
from wam_ros.ros.node_main import run_node
from wam_ros.ros.nodes.camera_node import CameraParams, RGBDCameraNode
from wam_ros.ros.params import param

_DEFAULTS = OrbbecSettings()


@dataclass(frozen=True)
class OrbbecParams(CameraParams):
    """CameraParams and every field of OrbbecSettings, under its own name."""

    serial_number: str = param(_DEFAULTS.serial_number, "Serial number of the camera (empty: any)")
    color_width: int = param(_DEFAULTS.color_width, "Color width (px)")
    color_height: int = param(_DEFAULTS.color_height, "Color height (px)")
    color_fps: int = param(_DEFAULTS.color_fps, "Color frame rate")
    color_format: str = param(_DEFAULTS.color_format, "Color format: MJPG, RGB, BGR, YUYV")
    depth_width: int = param(_DEFAULTS.depth_width, "Depth width (px)")
    depth_height: int = param(_DEFAULTS.depth_height, "Depth height (px)")
    depth_fps: int = param(_DEFAULTS.depth_fps, "Depth frame rate")
    align_mode: str = param(_DEFAULTS.align_mode, "Depth-to-color alignment: HW, SW or NONE", choices=ALIGN_MODES)
    sync_mode: str = param(_DEFAULTS.sync_mode, "Multi-camera sync mode", choices=SYNC_MODES)
    depth_delay_us: int = param(_DEFAULTS.depth_delay_us, "Depth trigger delay (us)")
    color_delay_us: int = param(_DEFAULTS.color_delay_us, "Color trigger delay (us)")
    trigger_to_image_delay_us: int = param(_DEFAULTS.trigger_to_image_delay_us, "Trigger to image delay (us)")
    time_domain: str = param(
        _DEFAULTS.time_domain,
        "Stamps from the device, global (device mapped to host) or system clock",
        choices=TIME_DOMAINS,
    )


class OrbbecNode(RGBDCameraNode):
    vendor = "orbbec"
    params_class = OrbbecParams
    params: OrbbecParams

    def __init__(self, node_name: str = "camera", **kwargs):
        super().__init__(node_name, **kwargs)

    def make_backend(self) -> OrbbecCamera:
        self.settings = OrbbecSettings(**{f.name: getattr(self.params, f.name) for f in fields(OrbbecSettings)})
        return OrbbecCamera(self.settings)

    def depth_aligned(self) -> bool:
        return self.settings.align_mode != "NONE"


NODE_CLASS = OrbbecNode


def main(args: list[str] | None = None) -> int:
    return run_node(OrbbecNode, args)
