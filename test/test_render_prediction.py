"""The prediction figure (`wam-ros render-prediction`, the demo's prediction_4d.png) for a tiny
trained checkpoint: panels, labels, colour legend, table, robot and paths where they belong, and a
robot that does not match the checkpoint refused."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from wam_ros.config import load_robot_config
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.model.policy import CheckpointMeta, CheckpointMismatch, WorldActionPolicy
from wam_ros.render_prediction import (
    TIME_LABEL,
    PredictionScene,
    checkpoint_robot,
    prediction_figure,
    save_figure,
    simulated_prediction,
    table_box,
)
from wam_ros.robots.urdf import generate_urdf

WAM_ROS = str(Path(sys.executable).parent / "wam-ros")


@pytest.fixture(scope="module")
def checkpoint(briefly_trained) -> Path:
    """The session's briefly trained tiny model (agilex's 14 joints)."""
    return briefly_trained[3]


@pytest.fixture(scope="module")
def scene(checkpoint) -> PredictionScene:
    return simulated_prediction(checkpoint)[0]


def panels(figure) -> dict[str, object]:
    return {ax.get_title().split(" (")[0]: ax for ax in figure.axes if ax.get_title().endswith("robot base frame")}


def by_gid(ax, gid: str) -> list:
    return [a for a in (*ax.lines, *ax.patches, *ax.collections) if a.get_gid() == gid]


def test_the_figure_has_labelled_panels_a_time_colourbar_and_a_labelled_strip(scene):
    figure = prediction_figure(scene)
    views = panels(figure)
    assert set(views) == {"top view", "side view"}
    assert (views["top view"].get_xlabel(), views["top view"].get_ylabel()) == ("x (m, forward)", "y (m, left)")
    assert (views["side view"].get_xlabel(), views["side view"].get_ylabel()) == ("x (m, forward)", "z (m, up)")
    assert [ax.get_ylabel() for ax in figure.axes].count(TIME_LABEL) == 1  # the colourbar
    times = scene.frame_times
    assert times == pytest.approx([4 / 15, 8 / 15])  # 4 actions per frame at 15 fps
    titles = [ax.get_title() for ax in figure.axes]
    assert titles.count("now (real)") == 1
    assert [t for t in titles if t.endswith("(predicted)")] == [f"+{t:.2f} s (predicted)" for t in times]
    rows = [ax.get_ylabel() for ax in figure.axes if ax.images]
    assert [r for r in rows if r] == ["head", "left_wrist", "right_wrist"]
    assert sum(len(ax.images) for ax in figure.axes) == 3 * (1 + len(times))
    # the cloud is coloured by each point's time ahead
    cloud = by_gid(views["top view"], "cloud")[0]
    assert np.unique(np.asarray(cloud.get_array())).tolist() == pytest.approx(
        np.unique(times[scene.cloud.frames]).tolist(), abs=1e-6
    )


def test_the_table_outline_is_the_simulators_table(scene):
    from wam_ros.sim.world import SimWorld

    robot = scene.robot
    world = SimWorld(robot, generate_urdf(robot))
    try:
        geom = world.model.geom("table")
        centre, half = table_box(robot)
        assert geom.size == pytest.approx(half) and world.model.geom_pos[geom.id] == pytest.approx(centre)
    finally:
        world.close()
    for name, (u, v) in {"top view": (0, 1), "side view": (0, 2)}.items():
        (table,) = by_gid(panels(prediction_figure(scene))[name], "table")
        corners = table.get_bbox().get_points()
        assert corners == pytest.approx(np.array([centre[[u, v]] - half[[u, v]], centre[[u, v]] + half[[u, v]]]))


def test_the_robot_and_its_predicted_motion_are_drawn_where_the_kinematics_put_them(scene):
    kinematics = Kinematics(generate_urdf(scene.robot))
    tcp = {side: kinematics.frame_pose(scene.joints, f"{side}_tcp")[:3, 3] for side in ("left", "right")}
    centre, half = table_box(scene.robot)
    top = centre[2] + half[2]
    for name, (u, v) in {"top view": (0, 1), "side view": (0, 2)}.items():
        ax = panels(prediction_figure(scene))[name]
        now = by_gid(ax, "robot_now")
        assert len(now) == 2  # one stick figure per arm, base to TCP
        for line, side in zip(now, ("left", "right")):
            xy = np.asarray(line.get_xydata())
            assert len(xy) >= 6 and xy[0] == pytest.approx([0.0, 0.0])  # from the base frame's origin
            assert xy[-1] == pytest.approx(tcp[side][[u, v]])
        for point in tcp.values():  # the arms reach over the table, above its top
            assert (centre[:2] - half[:2] <= point[:2]).all() and (point[:2] <= centre[:2] + half[:2]).all()
            assert point[2] > top
        assert len(by_gid(ax, "robot_future")) == 2 * len(scene.future_joints) == 2 * len(scene.frame_times)
        paths = by_gid(ax, "tcp_path")
        assert len(paths) == 2
        for line, path in zip(paths, scene.tcp_paths.values()):
            assert np.asarray(line.get_xydata()) == pytest.approx(path[:, [u, v]])
        # the view holds the robot, its paths and the table top
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        drawn = np.concatenate([np.asarray(line.get_xydata()) for line in (*now, *paths)])
        assert (drawn[:, 0] > x0).all() and (drawn[:, 0] < x1).all()
        assert (drawn[:, 1] > y0).all() and (drawn[:, 1] < y1).all()


def test_the_png_is_a_picture(scene, tmp_path):
    path = tmp_path / "prediction.png"
    save_figure(prediction_figure(scene), path)
    png = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert png.shape[1] == 1300 and png.shape[0] > 900
    assert png.std() > 40  # images, points and lines, not a blank page
    assert path.stat().st_size > 50_000


def test_the_demos_figure_draws_what_came_over_dds(scene, checkpoint):
    """The demo gets the cloud, TCP paths, joint state and images over DDS, but no predicted frames
    and no future joint states."""
    from wam_ros.demo import DdsPrediction, dds_scene
    from wam_ros.ros.conversions import pointcloud_msg, to_time

    received = DdsPrediction(
        1.5,
        pointcloud_msg(scene.cloud, to_time(1.5), "base"),
        dict(scene.joints),
        dict(scene.images),
        {side: p for side, p in zip(("left", "right"), scene.tcp_paths.values())},
    )
    demo = dds_scene(received, "agilex", checkpoint)
    assert demo.frame_times == pytest.approx(scene.frame_times) and len(demo.cloud) == len(scene.cloud)
    figure = prediction_figure(demo)
    assert sum(len(ax.images) for ax in figure.axes) == 3  # the real images only
    assert any("not published over DDS" in t.get_text() for ax in figure.axes for t in ax.texts)
    top = panels(figure)["top view"]
    assert not by_gid(top, "robot_future") and len(by_gid(top, "robot_now")) == 2
    assert {t.get_text() for t in top.texts} == {"left TCP", "right TCP"}


@pytest.mark.slow
def test_render_prediction_takes_the_robot_from_the_checkpoint_and_refuses_another(checkpoint, tmp_path):
    out = tmp_path / "prediction.png"
    result = subprocess.run(
        [WAM_ROS, "render-prediction", "--checkpoint", str(checkpoint), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["robot"] == "agilex" and summary["points"] > 100 and summary["frames"] == 2
    assert Image.open(out).size[0] == 1300
    wrong = subprocess.run(
        [
            WAM_ROS,
            "render-prediction",
            "--checkpoint",
            str(checkpoint),
            "--robot",
            "franka",
            "--out",
            str(tmp_path / "wrong.png"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert wrong.returncode == 2 and not (tmp_path / "wrong.png").exists()
    assert "robot 'franka': checkpoint does not match the robot" in wrong.stderr and "left_joint7" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1  # one line, no traceback
    missing = subprocess.run(
        [WAM_ROS, "render-prediction", "--checkpoint", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_joints_that_fit_several_robots_need_the_robot_named():
    names = load_robot_config("franka").joint_names  # tienkung's joints have the same names
    policy = SimpleNamespace(meta=CheckpointMeta(["head"], [32, 32], names, names, "joint", 15.0))
    policy.check_robot = functools.partial(WorldActionPolicy.check_robot, policy)
    with pytest.raises(CheckpointMismatch, match=r"robots \['franka', 'tienkung'\]; name the robot with --robot"):
        checkpoint_robot(policy, None)
    assert checkpoint_robot(policy, "tienkung").name == "tienkung"
    with pytest.raises(CheckpointMismatch, match="robot 'agilex'"):
        checkpoint_robot(policy, "agilex")
