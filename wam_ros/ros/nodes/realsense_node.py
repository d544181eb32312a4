"""realsense_node: one Intel RealSense camera (or a recording) on the realsense2_camera topics."""

from __future__ import annotations

from dataclasses import dataclass, field

from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings
from wam_ros.ros.node_main import run_node
from wam_ros.ros.nodes.camera_node import CameraParams, RGBDCameraNode
from wam_ros.ros.params import param


# the realsense2_camera driver's parameter names (rgb_camera.color_profile, ...)
@dataclass(frozen=True)
class RgbCameraParams:
    color_profile: str = param("640,480,30", "Color width,height,fps")


@dataclass(frozen=True)
class DepthModuleParams:
    depth_profile: str = param("640,480,30", "Depth width,height,fps")
    inter_cam_sync_mode: int = param(0, "Hardware sync: 0 default, 1 master, 2 slave, 3 full slave", range_=(0, 3))


@dataclass(frozen=True)
class AlignDepthParams:
    enable: bool = param(True, "Align depth to color")


@dataclass(frozen=True)
class RealSenseParams(CameraParams):
    serial_no: str = param("", "Serial number of the camera (empty: any)")
    rgb_camera: RgbCameraParams = field(default_factory=RgbCameraParams)
    depth_module: DepthModuleParams = field(default_factory=DepthModuleParams)
    align_depth: AlignDepthParams = field(default_factory=AlignDepthParams)
    global_time_enabled: bool = param(True, "Stamp frames in the host-synchronised global time")
    rosbag_filename: str = param("", "Play this recording (.db3/.bag) instead of a camera")


class RealSenseNode(RGBDCameraNode):
    vendor = "realsense"
    params_class = RealSenseParams
    params: RealSenseParams

    def __init__(self, node_name: str = "camera", **kwargs):
        super().__init__(node_name, **kwargs)

    def make_backend(self) -> RealSenseCamera:
        p = self.params
        self.settings = RealSenseSettings(
            serial_no=p.serial_no,
            color_profile=p.rgb_camera.color_profile,
            depth_profile=p.depth_module.depth_profile,
            align_depth=p.align_depth.enable,
            inter_cam_sync_mode=p.depth_module.inter_cam_sync_mode,
            global_time_enabled=p.global_time_enabled,
            rosbag_filename=p.rosbag_filename,
        )
        return RealSenseCamera(self.settings)

    def depth_aligned(self) -> bool:
        return self.settings.align_depth and not self.settings.rosbag_filename

    def is_playback(self) -> bool:
        return bool(self.settings.rosbag_filename)


NODE_CLASS = RealSenseNode


def main(args: list[str] | None = None) -> int:
    return run_node(RealSenseNode, args)
