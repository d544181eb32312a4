"""realsense_node: one Intel RealSense camera (or a recording) on the realsense2_camera topics."""

from __future__ import annotations

from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings
from wam_ros.ros.node_main import run_node
from wam_ros.ros.nodes.camera_node import RGBDCameraNode
from wam_ros.ros.params import declare


class RealSenseNode(RGBDCameraNode):
    vendor = "realsense"

    def __init__(self, node_name: str = "camera", **kwargs):
        super().__init__(node_name, **kwargs)

    def make_backend(self) -> RealSenseCamera:
        self.settings = RealSenseSettings(
            serial_no=declare(self, "serial_no", "", "Serial number of the camera (empty: any)"),
            color_profile=declare(self, "rgb_camera.color_profile", "640,480,30", "Color width,height,fps"),
            depth_profile=declare(self, "depth_module.depth_profile", "640,480,30", "Depth width,height,fps"),
            align_depth=declare(self, "align_depth.enable", True, "Align depth to color"),
            inter_cam_sync_mode=declare(self, "depth_module.inter_cam_sync_mode", 0,
                                        "Hardware sync: 0 default, 1 master, 2 slave, 3 full slave", range_=(0, 3)),
            global_time_enabled=declare(self, "global_time_enabled", True, "Stamp frames in the host-synchronised global time"),
            rosbag_filename=declare(self, "rosbag_filename", "", "Play this recording (.db3/.bag) instead of a camera"))
        return RealSenseCamera(self.settings)

    def depth_aligned(self) -> bool:
        return self.settings.align_depth and not self.settings.rosbag_filename

    def is_playback(self) -> bool:
        return bool(self.settings.rosbag_filename)


NODE_CLASS = RealSenseNode


def main(args: list[str] | None = None) -> int:
    return run_node(RealSenseNode, args)
