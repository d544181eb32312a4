"""orbbec_node: one Orbbec Gemini 330 camera on the orbbec_camera / realsense2_camera topic names."""

from __future__ import annotations

from wam_ros.cameras.orbbec import ALIGN_MODES, SYNC_MODES, TIME_DOMAINS, OrbbecCamera, OrbbecSettings
from wam_ros.ros.node_main import run_node
from wam_ros.ros.nodes.camera_node import RGBDCameraNode
from wam_ros.ros.params import declare


class OrbbecNode(RGBDCameraNode):
    vendor = "orbbec"

    def __init__(self, node_name: str = "camera", **kwargs):
        super().__init__(node_name, **kwargs)

    def make_backend(self) -> OrbbecCamera:
        d = OrbbecSettings()
        values = {name: declare(self, name, getattr(d, name), description, **extra) for name, description, extra in (
            ("serial_number", "Serial number of the camera (empty: any)", {}),
            ("color_width", "Color width (px)", {}), ("color_height", "Color height (px)", {}),
            ("color_fps", "Color frame rate", {}), ("color_format", "Color format: MJPG, RGB, BGR, YUYV", {}),
            ("depth_width", "Depth width (px)", {}), ("depth_height", "Depth height (px)", {}),
            ("depth_fps", "Depth frame rate", {}),
            ("align_mode", "Depth-to-color alignment: HW, SW or NONE", {"choices": ALIGN_MODES}),
            ("sync_mode", "Multi-camera sync mode", {"choices": SYNC_MODES}),
            ("depth_delay_us", "Depth trigger delay (us)", {}), ("color_delay_us", "Color trigger delay (us)", {}),
            ("trigger_to_image_delay_us", "Trigger to image delay (us)", {}),
            ("time_domain", "Stamps from the device, global (device mapped to host) or system clock",
             {"choices": TIME_DOMAINS}))}
        self.settings = OrbbecSettings(**values)
        return OrbbecCamera(self.settings)

    def depth_aligned(self) -> bool:
        return self.settings.align_mode != "NONE"


NODE_CLASS = OrbbecNode


def main(args: list[str] | None = None) -> int:
    return run_node(OrbbecNode, args)
