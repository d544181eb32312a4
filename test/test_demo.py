"""`make demo` in its short form: `wam-ros demo` writes a summary, a contact sheet and the video."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from support.ros import SPARE_DOMAIN_IDS
from wam_ros.config import CAMERA_NAMES


def decoded_frames(path) -> list[np.ndarray]:
    import av  # PyAV: FFmpeg's decoder, not our writer

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.ros
@pytest.mark.parametrize("robot", ["agilex", "franka", "tienkung"])
def test_demo_writes_summary_and_contact_sheet(robot, tmp_path):
    # its own DDS domain: the session's bring-up already publishes /clock on the test domain
    env = {**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wam_ros.cli",
            "demo",
            "--robot",
            robot,
            "--duration",
            "4",
            "--source",
            "scripted",
            "--out",
            str(tmp_path),
            "--domain-id",
            env["ROS_DOMAIN_ID"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
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
        for topic in (
            "color/image_raw",
            "color/camera_info",
            "aligned_depth_to_color/image_raw",
            "aligned_depth_to_color/camera_info",
        ):
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
        tile = sheet[:256, column * 320 : (column + 1) * 320]
        table = (tile[..., 0] > 180) & (tile[..., 1] > 130) & (tile[..., 2] < 170) & (tile[..., 0] > tile[..., 2] + 40)
        arm = (tile.min(axis=2) > 100) & (np.ptp(tile, axis=2) < 20)  # grey links and gripper
        assert table.mean() > 0.2, f"{CAMERA_NAMES[column]}: table not in view"
        assert arm.mean() > 0.01, f"{CAMERA_NAMES[column]}: no arm in view"


def demo_command(out, *extra) -> tuple[list[str], dict]:
    env = {**os.environ, "ROS_DOMAIN_ID": str(SPARE_DOMAIN_IDS[1])}
    return (
        [sys.executable, "-m", "wam_ros.cli", "demo", "--out", str(out), "--domain-id", env["ROS_DOMAIN_ID"], *extra],
        env,
    )


@pytest.mark.slow
@pytest.mark.ros
def test_policy_demo_runs_the_shipped_policy_on_the_task_through_the_graph(tmp_path):
    """`make demo` in short form: the shipped pick-and-place policy in the loop for a few seconds of
    one episode (the whole demo, a success and a recovered slip, is measured in README)."""
    command, env = demo_command(tmp_path, "--episodes", "short:10000", "--max-seconds", "6")
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["checkpoint"].endswith("agilex_pick_place/policy.pt") and summary["task"] == "pick_place"
    assert summary["provenance"]["dataset_sha256"] and summary["provenance"]["git_revision"]
    (row,) = summary["episodes"]
    assert row["name"] == "short" and row["seed"] == 10000 and row["perturbation"] == "none"
    # the episode runs 6 s, or ends a second after the task succeeded
    ended = 6.0 if not row["success"] else row["time_to_success_s"] + 1.0
    assert row["sim_time_s"] >= ended - 0.05 and row["rollbacks"] == 0 and row["faults"] == []
    # the world at a quarter of real time (sim_node real_time_factor), at most: a loaded machine is slower
    assert summary["real_time_factor"] == 0.25 and 0.1 < row["real_time_factor"] <= 0.27
    topics = row["topics"]
    assert topics["policy/chunk"]["messages"] >= 2 and topics["policy/predicted_cloud"]["messages"] >= 1
    supervisor = row["supervisor"]  # chunks keep reaching the arms: a refused one stalls nothing
    assert supervisor["chunks_forwarded"] >= 2 and supervisor["chunks_forwarded"] > supervisor["chunks_rejected"]
    curve = np.array(row["value_curve"])  # one predicted value per chunk, by its observation stamp
    assert len(curve) >= 2 and (np.diff(curve[:, 0]) > 0).all() and ((curve[:, 1] >= 0) & (curve[:, 1] <= 1)).all()
    assert row["inference_latency_ms"]["samples"] >= 2 and row["inference_latency_ms"]["p50"] > 0
    for kind in ("video", "contact_sheet", "prediction_4d"):
        assert f"{kind}: {tmp_path / ('short' + {'video': '.mp4'}.get(kind, '_' + kind + '.png'))}" in result.stdout
    frames = decoded_frames(tmp_path / "short.mp4")
    assert len(frames) == row["video_frames"] >= 0.9 * 15 * ended  # the head camera at 15 Hz, 90 % of its frames
    panel = frames[-1][-130:].astype(int)  # the predicted value curve below the camera image
    assert ((panel[..., 2] - panel[..., 0] > 80) & (panel[..., 2] > 180)).sum() > 20
    png = np.asarray(Image.open(tmp_path / "short_prediction_4d.png").convert("RGB")).astype(int)
    # the prediction figure (wam_ros.render_prediction, tested there): panels above the real images
    assert png.shape[1] == 1300 and (png.min(axis=2) < 200).mean() > 0.01


@pytest.mark.slow
@pytest.mark.ros
def test_demo_train_makes_the_shipped_policy_again_with_its_recorded_settings(tmp_path):
    """`make demo TRAIN=1` in short form: the shipped policy's benchmark settings (its
    provenance.json), one demonstration, one with a slip and a few steps; the release has the
    shipped architecture, says how it was made, and its training is reproduced bit for bit from
    the same inputs."""
    import torch

    from wam_ros.demo import release_dir

    command, env = demo_command(
        tmp_path,
        "--train",
        "--demos",
        "1",
        "--slip-demos",
        "1",
        "--vae-steps",
        "3",
        "--video-steps",
        "3",
        "--joint-steps",
        "3",
        "--episodes",
        "short:10000",
        "--max-seconds",
        "2",
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    release = tmp_path / "train" / "release"
    assert json.loads((tmp_path / "summary.json").read_text())["checkpoint"] == str(release / "policy.pt")
    shipped = json.loads((release_dir("agilex") / "provenance.json").read_text())
    made = json.loads((release / "provenance.json").read_text())
    changed = {k for k in shipped["benchmark_config"] if shipped["benchmark_config"][k] != made["benchmark_config"][k]}
    assert changed <= {"demos", "slip_demos", "vae_steps", "video_steps", "joint_steps", "out"}
    assert made["benchmark_config"]["slip_demos"] == 1
    assert made["trained_steps"] == 9 and len(made["dataset_sha256"]) == 64 and made["seed"] == shipped["seed"]
    ours = torch.load(release / "policy.pt", map_location="cpu", weights_only=False)
    theirs = torch.load(release_dir("agilex") / "policy.pt", map_location="cpu", weights_only=False)
    assert ours["config"] == theirs["config"] and "optimizer" not in ours.get("train", {})

    def shapes(state: dict) -> dict:
        return {k: tuple(v.shape) if torch.is_tensor(v) else v for k, v in state.items()}

    assert shapes(ours["model"]) == shapes(theirs["model"])
    # the same inputs (dataset, settings, seed) train the same weights
    again = tmp_path / "again.pt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "wam_ros.cli",
            "train",
            "--data",
            str(tmp_path / "train" / "dataset"),
            "--config",
            made["benchmark_config"]["model"],
            "--robot",
            "agilex",
            "--out",
            str(again),
            "--vae-steps",
            "3",
            "--video-steps",
            "3",
            "--joint-steps",
            "3",
            "--threads",
            str(made["benchmark_config"]["threads"]),
        ],
        check=True,
        capture_output=True,
    )
    retrained = torch.load(again, map_location="cpu", weights_only=False)["model"]
    assert retrained.keys() == ours["model"].keys()
    assert all(
        torch.equal(retrained[k], v) if torch.is_tensor(v) else retrained[k] == v for k, v in ours["model"].items()
    )


@pytest.mark.ros
def test_the_monitor_times_a_tasks_perturbation_and_success_for_the_video():
    import rclpy

    from wam_ros.demo import DemoMonitor
    from wam_ros.msg import TaskState

    rclpy.init()  # the monitor is created as the demo creates it, in the default context
    try:
        monitor = DemoMonitor("agilex")
        for sim_time, msg in (
            (1.0, TaskState()),
            (2.0, TaskState(stage=1, stage_name="grasped")),
            (3.5, TaskState(stage=1, stage_name="grasped", perturbed=True)),
            (7.0, TaskState(stage=2, stage_name="placed", perturbed=True, success=True)),
            (8.0, TaskState(stage=2, stage_name="placed", perturbed=True, success=True)),
        ):
            monitor.sim_time = sim_time
            monitor._on_task(msg)
        timeline = monitor.timeline("x")
        assert timeline.stages == [(1.0, "start"), (2.0, "grasped"), (7.0, "placed")]
        assert timeline.slip == 3.5 and timeline.success == 7.0
        # a node's error is kept once, with the time it was first seen, and named in the outcome
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

        from wam_ros.demo import episode_outcome

        for sim_time in (4.2, 5.0):
            monitor.sim_time = sim_time
            monitor._on_diagnostics(
                DiagnosticArray(
                    status=[
                        DiagnosticStatus(level=DiagnosticStatus.ERROR, name="/sim: simulator", message="bridge error"),
                        DiagnosticStatus(level=DiagnosticStatus.OK, name="/policy: policy", message="running"),
                    ]
                )
            )
        row = {**monitor.summary(), "success": False, "rollbacks": 1}
        assert row["faults"] == [{"sim_time_s": 4.2, "node": "/sim: simulator", "message": "bridge error"}]
        assert episode_outcome(row) == "failed after 1 rollback(s); /sim: simulator reported at 4.2 s: bridge error"
        monitor.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_episode_lists_are_parsed_with_specific_errors():
    from wam_ros.config import ConfigError
    from wam_ros.demo import DemoEpisode, parse_episodes

    assert parse_episodes("clean:10000, slip:10001:slip") == (
        DemoEpisode("clean", 10000),
        DemoEpisode("slip", 10001, "slip"),
    )
    for text, message in (
        ("clean", "expected NAME:SEED"),
        ("clean:-1", "expected NAME:SEED"),
        ("a:1:wobble", "perturbation"),
        ("a:1,a:2", "names must differ"),
        (":1", "expected"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_episodes(text)
