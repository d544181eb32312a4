"""CompressedMultiViewRGBD <-> arrays: observation sets for the link of a split deployment
(split:=robot|policy). The views are made small by the ROS-free wam_ros.sync.link_codec."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sensor_msgs.msg import CompressedImage

from wam_ros.data.images import ImageError, camera_matrix
from wam_ros.msg import CompressedMultiViewRGBD
from wam_ros.ros.conversions import CHECKED, bytes_field, camera_info_msg, multiview_arrays, view_indices
from wam_ros.sync.link_codec import LinkCodec, compact_view, expand_view


def compact_multiview_msg(
    msg, cameras: Sequence[str], size: tuple[int, int], codec: LinkCodec
) -> CompressedMultiViewRGBD:
    """The wam_ros/CompressedMultiViewRGBD of a MultiViewRGBD set for a network link: `cameras`
    resized to `size` (height, width) and compressed (wam_ros.sync.link_codec). A degraded set is
    passed on degraded, without views. Raises ImageError / ValueError as multiview_arrays does."""
    out = CompressedMultiViewRGBD(header=msg.header, spread=msg.spread, degraded=msg.degraded, status=msg.status)
    if msg.degraded:
        return out
    images, depths, intrinsics = multiview_arrays(msg, cameras)
    for cam, i in view_indices(msg, cameras).items():
        view = compact_view(images[cam], depths[cam], intrinsics[cam][0], size, codec)
        stamp, frame = msg.color[i].header.stamp, msg.color[i].header.frame_id
        height, width = view.size
        for field, fmt, data in (("color", view.color_format, view.color), ("depth", view.depth_format, view.depth)):
            image = CompressedImage(format=fmt, **CHECKED)
            image.header.stamp, image.header.frame_id = stamp, frame
            image.data = bytes_field(np.frombuffer(data, np.uint8))
            getattr(out, field).append(image)
        info = camera_info_msg(view.K, width, height, stamp, msg.color_info[i].header.frame_id)
        out.color_info.append(info)
        out.depth_info.append(info)
        out.stamps.append(msg.stamps[i])
        out.camera_names.append(cam)
    return out


def compact_multiview_arrays(
    msg, cameras: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, tuple[np.ndarray, tuple[int, int]]]]:
    """multiview_arrays for a wam_ros/CompressedMultiViewRGBD: the decoded views of `cameras`.
    Raises ImageError when the set is malformed, ValueError when it lacks one of the cameras."""
    images, depths, intrinsics = {}, {}, {}
    for cam, i in view_indices(msg, cameras).items():
        color, depth, info = msg.color[i], msg.depth[i], msg.color_info[i]
        try:
            K = camera_matrix(info.k, info.width, info.height)
            rgb, mm = expand_view(
                color.format, bytes(color.data), depth.format, bytes(depth.data), (info.height, info.width)
            )
        except ImageError as exc:
            raise ImageError(f"{cam}: {exc}", exc.check) from None
        images[cam], depths[cam], intrinsics[cam] = rgb, mm, (K, (info.height, info.width))
    return images, depths, intrinsics
