"""Depth to points in the base frame (geometry/lifting.py), PointCloud2 packing, and the lift of a
simulator camera landing on the simulated table."""

import numpy as np
import pytest

from wam_ros.config import load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.geometry.lifting import PointCloud, fade, lift, scale_intrinsics, voxel_downsample
from wam_ros.robots.urdf import generate_urdf
from wam_ros.ros.conversions import pointcloud_from_msg, pointcloud_msg, to_time
from wam_ros.sim.world import SimWorld

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])


def camera_pose(z: float) -> np.ndarray:
    """A camera at height z looking straight down (optical z = base -z, optical x = base x)."""
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[2, 3] = z
    return T


def test_pixels_lift_along_their_rays_into_the_base_frame():
    depth = np.full((1, 2, 48, 64), 0.8, np.float32)  # 1 view, 2 frames
    depth[0, 1] = 0.5
    depth[0, 0, 0, 0] = 0.0  # no measurement: no point
    rgb = np.zeros((1, 2, 48, 64, 3), np.uint8)
    rgb[0, 1, 10, 20] = (255, 0, 0)
    poses = np.stack([camera_pose(1.0)[None], camera_pose(1.2)[None]])  # (T, V, 4, 4): the camera moves up
    organised = lift(depth, rgb, K[None], poses)
    assert len(organised) == 2 * 48 * 64 and organised.width == 64  # every pixel, NaN without depth
    assert np.isnan(organised.points[0]).all() and np.isfinite(organised.points[1:]).all()
    cloud = organised.valid()
    assert len(cloud) == 2 * 48 * 64 - 1 and cloud.points.dtype == np.float32
    assert np.allclose(cloud.points[cloud.frames == 0, 2], 0.2) and np.allclose(cloud.points[cloud.frames == 1, 2], 0.7)
    red = np.flatnonzero((cloud.colors == (255, 0, 0)).all(axis=1))
    assert len(red) == 1 and cloud.frames[red[0]] == 1
    # pixel (u=20, v=10) at 0.5 m: x = (20 - 31.5) / 100 * 0.5, optical y down = base -y
    assert np.allclose(cloud.points[red[0]], [(20 - 31.5) / 100 * 0.5, -(10 - 23.5) / 100 * 0.5, 0.7], atol=1e-6)
    strided = lift(depth, rgb, K[None], poses, stride=4)
    assert len(strided.valid()) == 2 * 12 * 16 - 1
    assert lift(depth, rgb, K[None], poses, out=organised) is organised  # the buffer is reused
    with pytest.raises(ValueError, match="expected \\(T, V, 4, 4\\)"):
        lift(depth, rgb, K[None], poses[0])


def test_voxels_keep_one_point_per_cell_and_frame():
    points = np.array([[0.001, 0.001, 0.0], [0.004, 0.002, 0.0], [0.02, 0.0, 0.0], [0.001, 0.001, 0.0]], np.float32)
    cloud = PointCloud.from_arrays(points, np.zeros((4, 3), np.uint8), np.array([0, 0, 0, 1], np.uint32))
    down = voxel_downsample(cloud, 0.01)
    assert len(down) == 3 and list(down.frames) == [0, 0, 1]
    assert len(voxel_downsample(cloud, 0.0)) == 4
    faded = fade(PointCloud.from_arrays(points[:2], np.full((2, 3), 100, np.uint8), np.array([0, 3], np.uint32)), 4)
    assert faded.colors[0, 0] == 100 and faded.colors[1, 0] > 100  # later frames fade towards white


def test_intrinsics_follow_a_resize():
    half = scale_intrinsics(K, (48, 64), (24, 32))
    assert half[0, 0] == 50.0 and half[1, 1] == 50.0
    # pixel centres: the centre of the image stays the centre
    assert half[0, 2] == pytest.approx((31.5 + 0.5) / 2 - 0.5) and half[1, 2] == pytest.approx((23.5 + 0.5) / 2 - 0.5)


def test_pointcloud2_round_trip_keeps_points_colours_and_frames():
    points = np.array([[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]], np.float32)
    colors = np.array([[255, 128, 1], [0, 0, 255]], np.uint8)
    msg = pointcloud_msg(PointCloud.from_arrays(points, colors, np.array([0, 7], np.uint32)), to_time(1.5), "base")
    assert (msg.width, msg.height, msg.point_step, msg.header.frame_id) == (2, 1, 20, "base")
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "frame"]
    back = pointcloud_from_msg(msg)
    assert np.allclose(back.points, points) and np.array_equal(back.colors, colors)
    assert back.data["rgb"][0] == (255 << 16 | 128 << 8 | 1) and list(back.frames) == [0, 7]


def test_the_simulated_head_camera_lifts_onto_the_table():
    """The URDF's camera frames (what the policy node lifts with) and MuJoCo's cameras agree: the
    most common height in the lifted head view is the table top."""
    robot = load_robot_config("agilex")
    urdf = generate_urdf(robot)
    world = SimWorld(robot, urdf)
    try:
        world.reset()
        view = world.render("head")
    finally:
        world.close()
    q = robot.home_positions()
    pose = Kinematics(urdf).frame_pose(q, "head_color_optical_frame")
    cloud = lift(view.depth[None, None], view.rgb[None, None], view.K[None], pose[None, None]).valid()
    t = robot.table
    top = t.pose.xyz[2] + t.size[2]
    over_table = (np.abs(cloud.points[:, 0] - t.pose.xyz[0]) < t.size[0]) & (
        np.abs(cloud.points[:, 1] - t.pose.xyz[1]) < t.size[1]
    )
    heights = np.round(cloud.points[over_table, 2], 2)
    values, counts = np.unique(heights, return_counts=True)
    assert abs(values[counts.argmax()] - top) <= 0.01, (values[counts.argmax()], top)
    assert counts.max() > 0.3 * over_table.sum()  # the table, not a stray plane
