"""`make demo` in its short form: `wam-ros demo` writes a summary, a contact sheet and the video."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SPARE_DOMAIN_IDS
from wam_ros.config import CAMERA_NAMES


def decoded_frames(path) -> list[np.ndarray]:
    import av  # PyAV: FFmpeg's decoder, not our writer

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("robot", ["agilex", "franka", "tienkung"])
def test_demo_writes_summary_and_contact_sheet(robot, tmp_path):
    # its own DDS domain: the session's bring-up already publishes /clock on the test domain
    env = {**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])}
    result = subprocess.run([sys.executable, "-m", "wam_ros.cli", "demo", "--robot", robot, "--duration", "4", "--source", "scripted",
                             "--out", str(tmp_path), "--domain-id", env["ROS_DOMAIN_ID"]], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["robot"] == robot and summary["sim_time_s"] >= 4.0
    topics = summary["topics"]
    assert topics["joint_states"]["rate_hz_sim_time"] == pytest.approx(100.0, rel=0.05)
    # scripted policy -> supervisor -> simulator, every chunk forwarded
    assert topics["policy/chunk"]["rate_hz_sim_time"] == pytest.approx(2.0, rel=0.05)
    assert topics["joint_trajectory"]["rate_hz_sim_time"] == pytest.approx(2.0, rel=0.05)
    assert summary["supervisor"]["state"] == "RUNNING" and summary["supervisor"]["chunks_rejected"] == 0
    for cam in CAMERA_NAMES:
        for topic in ("color/image_raw", "color/camera_info", "aligned_depth_to_color/image_raw",
                      "aligned_depth_to_color/camera_info"):
            assert topics[f"{cam}/{topic}"]["rate_hz_sim_time"] == pytest.approx(15.0, rel=0.05)
    assert 0.0 < summary["joint_tracking_error_rad"]["p95"] < 0.1
    # every head camera frame (15 Hz for 4 s of sim time), with the supervisor state written over it
    frames = decoded_frames(tmp_path / "scripted.mp4")
    assert summary["video"]["frames"] == len(frames) and 55 <= len(frames) <= 62
    running = frames[-1][16:28].astype(int)  # "supervisor: RUNNING" in green
    assert ((running[..., 1] - running[..., 0] > 60) & (running[..., 1] - running[..., 2] > 40)).sum() > 20

    sheet = np.asarray(Image.open(tmp_path / "contact_sheet.png").convert("RGB")).astype(int)
    assert sheet.shape == (4 * 256, 3 * 320, 3)  # (start, end) x (color, depth) rows, one column per camera
    for column in range(3):
        tile = sheet[:256, column * 320:(column + 1) * 320]
        table = (tile[..., 0] > 180) & (tile[..., 1] > 130) & (tile[..., 2] < 170) & (tile[..., 0] > tile[..., 2] + 40)
        arm = (tile.min(axis=2) > 100) & (np.ptp(tile, axis=2) < 20)  # grey links and gripper
        assert table.mean() > 0.2, f"{CAMERA_NAMES[column]}: table not in view"
        assert arm.mean() > 0.01, f"{CAMERA_NAMES[column]}: no arm in view"


def test_policy_demo_trains_a_policy_runs_it_in_the_loop_and_renders_its_prediction(tmp_path):
    """`make demo` in short form: a few demonstrations, a few training steps (the plumbing, not the
    model's quality, is under test)."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])}
    command = [sys.executable, "-m", "wam_ros.cli", "demo", "--duration", "4", "--out", str(tmp_path), "--domain-id",
               env["ROS_DOMAIN_ID"], "--demos", "2",
               "--demo-seconds", "3", "--video-steps", "10", "--joint-steps", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["checkpoint"].endswith("policy_agilex.pt") and (tmp_path / "data_agilex" / "meta.json").is_file()
    topics = summary["topics"]
    assert topics["policy/chunk"]["messages"] >= 3 and topics["policy/predicted_cloud"]["messages"] >= 2
    supervisor = summary["supervisor"]
    assert supervisor["chunks_forwarded"] + supervisor["chunks_rejected"] >= 2  # every chunk reached the supervisor
    frames = decoded_frames(tmp_path / "policy.mp4")
    assert len(frames) == summary["video"]["frames"] > 30
    panel = frames[-1][-130:].astype(int)  # the predicted value curve below the camera image
    assert ((panel[..., 2] - panel[..., 0] > 80) & (panel[..., 2] > 180)).sum() > 20
    png = np.asarray(Image.open(tmp_path / "prediction_4d.png").convert("RGB")).astype(int)
    # the prediction figure (wam_ros.render_prediction, tested there): panels above the real images
    assert png.shape[1] == 1300 and (png.min(axis=2) < 200).mean() > 0.01
    # a second run reuses the checkpoint instead of training again
    again = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert again.returncode == 0 and "reusing" in again.stderr


def test_the_monitor_times_a_tasks_perturbation_and_success_for_the_video():
    import rclpy

    from wam_ros.demo import DemoMonitor
    from wam_ros.msg import TaskState

    rclpy.init()  # the monitor is created as the demo creates it, in the default context
    try:
        monitor = DemoMonitor("agilex")
        for sim_time, msg in ((1.0, TaskState()), (2.0, TaskState(stage=1, stage_name="grasped")),
                              (3.5, TaskState(stage=1, stage_name="grasped", perturbed=True)),
                              (7.0, TaskState(stage=2, stage_name="placed", perturbed=True, success=True)),
                              (8.0, TaskState(stage=2, stage_name="placed", perturbed=True, success=True))):
            monitor.sim_time = sim_time
            monitor._on_task(msg)
        timeline = monitor.timeline("x")
        assert timeline.stages == [(1.0, "start"), (2.0, "grasped"), (7.0, "placed")]
        assert timeline.slip == 3.5 and timeline.success == 7.0
        monitor.destroy_node()
    finally:
        rclpy.try_shutdown()
