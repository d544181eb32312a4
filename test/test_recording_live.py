"""Recording demonstrations from the running simulated system (the session's `wam-ros bringup`:
FR3 pair, scripted expert, namespace /lab) through real recorder_node processes over Fast DDS,
then reading the bags back with rosbags, exporting both formats and re-loading them."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from support.lerobot_venv import lerobot_side, run_lerobot, save_expected
from support.ros import SPARE_DOMAIN_IDS, ProbeNode, stop_process
from support.rosbag2_checks import check_like_ros2_bag_record
from wam_ros.data.bag import typestore
from wam_ros.data.bag_frames import index_episode, iter_frames
from wam_ros.data.export import ExportConfig, export_hdf5, load_hdf5
from wam_ros.data.formats import load_dataset
from wam_ros.data.lerobot import export_lerobot, load_lerobot
from wam_ros.msg import ActionChunk, MultiViewRGBD
from wam_ros.ros.qos import CLOCK_QOS, COMMAND_QOS, EVERY_SET_QOS, JOINT_STATE_QOS

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent


def start_recorder(directory: Path, *parameters: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "recorder_node"),
            "--ros-args",
            "-r",
            "__ns:=/lab",
            "-p",
            "use_sim_time:=true",
            "-p",
            "robot:=franka",
            "-p",
            f"directory:={directory}",
            "-p",
            "min_free_mb:=10.0",
            *parameters,
        ]
    )


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def bag_messages(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=typestore()) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out


@pytest.fixture(scope="module")
def recorded(bringup, tmp_path_factory):
    """One episode recorded between a start service call and a `success` command, with the sets
    the probe received meanwhile."""
    directory = tmp_path_factory.mktemp("episodes")
    process = start_recorder(directory, "-p", "instruction:=wave both arms", "-p", "teleop:=scripted")
    sets: list = []
    sub = bringup.probe.create_subscription(MultiViewRGBD, "/lab/observations", sets.append, EVERY_SET_QOS)
    command = bringup.probe.create_publisher(String, "/lab/recorder/command", COMMAND_QOS)
    try:
        start = bringup.probe.create_client(Trigger, "/lab/recorder/start_episode")
        reply = bringup.call_service(start, Trigger.Request(), timeout=30.0)
        assert reply.success, reply.message
        again = bringup.call_service(start, Trigger.Request(), timeout=30.0)
        assert not again.success and "already recording" in again.message
        sets.clear()

        def sim_seconds() -> float:  # the simulator runs slower than real time on a loaded machine
            return (stamp_ns(sets[-1]) - stamp_ns(sets[0])) * 1e-9 if len(sets) > 1 else 0.0

        assert bringup.spin_until(lambda: sim_seconds() >= 4.5, 60.0), f"only {sim_seconds():.1f} s of sim time"
        probe_sets = list(sets)
        command.publish(String(data="success"))
        path = Path(reply.message)
        assert bringup.spin_until(lambda: (path / "metadata.yaml").is_file(), 20.0), "episode never closed"
    finally:
        bringup.probe.destroy_subscription(sub)
        stop_process(process)
    return path, probe_sets


def test_the_episode_bag_holds_every_stream_with_nothing_dropped(recorded):
    path, probe_sets = recorded
    record = json.loads((path / "episode.json").read_text())
    assert record["outcome"] == "success" and record["task"] == "wave both arms" and record["teleop"] == "scripted"
    assert record["robot"] == "franka" and set(record["calibration"]) == {"head", "left_wrist", "right_wrist"}
    assert all(m["dropped"] == 0 and m["written"] == m["received"] for m in record["messages"].values())
    messages = bag_messages(path)
    assert {
        "/lab/joint_states",
        "/lab/observations",
        "/lab/joint_trajectory",
        "/lab/policy/chunk",
        "/wam_ros/episode_events",
    } <= set(messages)
    # every set the probe saw inside the recorded span is in the bag (both subscribers are reliable)
    recorded_stamps = [stamp_ns(m) for _, m in messages["/lab/observations"]]
    seen = [stamp_ns(s) for s in probe_sets]
    inside = [s for s in seen if recorded_stamps[0] <= s <= recorded_stamps[-1]]
    assert len(inside) > 30 and set(inside) <= set(recorded_stamps)
    assert len(messages["/lab/joint_states"]) > 300  # 100 Hz for more than 4.5 s of sim time
    events = [json.loads(m.data)["event"] for _, m in messages["/wam_ros/episode_events"]]
    assert events == ["start", "stop"]


def test_export_to_lerobot_and_hdf5_reloads_frames_and_actions_exactly(recorded, tmp_path):
    path, _ = recorded
    index = index_episode(path, fps=15.0)
    # >= 2 s of frames to compare; on a loaded machine the bag's image/joint overlap was 3.1 s of
    # the probe's 4.5 s (a fresh-clone CI run), so the bound is not the probe's span
    assert index.commands_recorded and len(index) > 30
    frames = list(iter_frames(index))
    rgb = np.stack([np.stack([f[1][c] for c in index.cameras]) for f in frames])
    depth = np.stack([np.stack([f[2][c] for c in index.cameras]) for f in frames])
    cfg = ExportConfig(fps=15.0, video_codec="lossless", progress=False)
    export_lerobot([path], tmp_path / "lerobot", cfg, robot="franka")
    export_hdf5([path], tmp_path / "hdf5", cfg, robot="franka")
    for loader, directory in ((load_lerobot, tmp_path / "lerobot"), (load_hdf5, tmp_path / "hdf5")):
        meta, episodes = loader(directory)
        (ep,) = episodes
        assert meta.cameras == index.cameras and meta.state_names == index.joint_names and meta.fps == 15.0
        np.testing.assert_array_equal(ep.rgb, rgb)
        np.testing.assert_array_equal(ep.depth, depth)
        stored = np.float32 if loader is load_lerobot else np.float64  # LeRobot features are float32
        np.testing.assert_array_equal(ep.action, index.action.astype(stored))
        np.testing.assert_array_equal(ep.state, index.state.astype(stored))
        assert ep.success and ep.task == "wave both arms"
    # the trainer's loader reads both layouts
    assert len(load_dataset(tmp_path / "lerobot")[1][0]) == len(index)
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == len(index)
    stats = json.loads((tmp_path / "lerobot" / "meta" / "stats.json").read_text())
    assert len(stats["action"]["q01"]) == len(index.joint_names) and "q99" in stats["observation.state"]
    # dataset info agrees across the bag and both exports (the exports' from metadata alone)
    from wam_ros.data.summary import dataset_info, preview

    infos = {
        name: dataset_info(p)
        for name, p in (("bag", path.parent), ("lerobot", tmp_path / "lerobot"), ("hdf5", tmp_path / "hdf5"))
    }
    for name, info in infos.items():
        assert (info["episodes"], info["frames"], info["cameras"], info["success_rate"], info["tasks"]) == (
            1,
            len(index),
            index.cameras,
            1.0,
            ["wave both arms"],
        ), name
    assert infos["lerobot"]["image_size"] == infos["hdf5"]["image_size"] == list(rgb.shape[2:4])
    assert infos["bag"]["outcomes"] == {"success": 1}
    sheet = preview(tmp_path / "lerobot", tmp_path / "preview.png", frames=4)
    h, w = rgb.shape[2:4]
    assert sheet["size"] == [4 * w, 2 * len(index.cameras) * h + 2 * 160]  # color + depth rows, two plots
    # actions lead the state: the command for the next frame, not the measured position
    assert np.abs(index.action[:-1] - index.state[1:]).mean() < np.abs(index.action - index.state).mean()


def test_a_killed_recorder_leaves_a_readable_bag_up_to_the_kill(bringup, tmp_path):
    process = start_recorder(tmp_path, "-p", "autostart_episode:=true")
    clock: list = []
    sub = bringup.probe.create_subscription(Clock, "/clock", clock.append, CLOCK_QOS)
    try:
        bag = tmp_path / "episode_000000"
        assert bringup.spin_until(lambda: (bag / "episode.json").is_file() and bool(clock), 30.0)

        def sim_ns() -> int:
            return clock[-1].clock.sec * 10**9 + clock[-1].clock.nanosec

        started = sim_ns()
        assert bringup.spin_until(lambda: sim_ns() - started >= 3.5e9, 60.0)  # 3.5 s of sim time
        killed_at = sim_ns()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        bringup.probe.destroy_subscription(sub)
        if process.poll() is None:
            process.kill()
    assert not (bag / "metadata.yaml").exists()  # no clean close happened
    index = index_episode(bag, fps=15.0)  # recovers first
    assert index.record["outcome"] == "partial" and index.record["recovered"]
    joint_stamps = [log for log, _ in bag_messages(bag)["/lab/joint_states"]]
    # flushed once a second: at most about a second (plus scheduling) of data is lost
    assert (killed_at - joint_stamps[-1]) * 1e-9 < 2.5 and len(joint_stamps) > 150
    assert len(list(iter_frames(index))) == len(index) > 20


def test_ctrl_c_closes_an_open_episode_cleanly_and_marks_it_partial(bringup, tmp_path):
    process = start_recorder(tmp_path, "-p", "autostart_episode:=true")
    bag = tmp_path / "episode_000000"
    try:
        mcap = bag / "episode_000000.mcap"
        assert bringup.spin_until(lambda: mcap.is_file() and mcap.stat().st_size > 2**20, 30.0)
        bringup.spin_for(1.5)  # recording for a while
    finally:
        stop_process(process)  # SIGINT, exit code 0
    assert (bag / "metadata.yaml").is_file()
    record = json.loads((bag / "episode.json").read_text())
    assert record["outcome"] == "partial" and not record.get("recovered")
    messages = bag_messages(bag)
    assert len(messages["/lab/joint_states"]) > 10 and messages["/lab/observations"]


def test_leader_arm_teleop_mirrors_the_leaders_through_policy_chunk():
    """teleop_node needs nothing of the session's bring-up: it and a fresh probe meet alone (a
    long-lived participant may hold a stale shared-memory port of a peer an earlier test killed)."""
    process = subprocess.Popen(
        [
            str(BIN / "teleop_node"),
            "--ros-args",
            "-r",
            "__ns:=/teleop_check",
            "-p",
            "robot:=agilex",
            "-p",
            "source:=leader",
            "-p",
            "rate:=50.0",
        ]
    )
    probe = ProbeNode("teleop_check_probe")
    chunks: list = []
    probe.node.create_subscription(ActionChunk, "/teleop_check/policy/chunk", chunks.append, COMMAND_QOS)
    leaders = {
        side: probe.node.create_publisher(JointState, f"/master/joint_{side}", JOINT_STATE_QOS)
        for side in ("left", "right")
    }
    try:
        left = [0.1, 0.5, -0.6, 0.05, 0.3, -0.2, 0.02]  # Cobot Magic: joint0..5 (rad) + gripper (m)
        right = [-0.1, 0.4, -0.5, 0.0, 0.2, 0.1, 0.0]

        def publish():
            for side, values in (("left", left), ("right", right)):
                leaders[side].publish(JointState(name=[f"joint{i}" for i in range(7)], position=values))
            return bool(chunks)

        assert probe.spin_until(publish, 30.0), (
            f"teleop_node published no chunk (alive: {process.poll() is None}; graph: "
            f"{probe.node.count_subscribers('/master/joint_left')} leader subscriber(s), "
            f"{probe.node.count_publishers('/teleop_check/policy/chunk')} chunk publisher(s))"
        )
        chunks.clear()
        probe.spin_for(1.0)  # a whole second: one late wake-up of a loaded 2-core machine is 1 chunk in 50
        last = chunks[-1]
        assert last.horizon == 1 and last.action_space == ActionChunk.ACTION_SPACE_JOINT_POSITION
        np.testing.assert_allclose(last.positions, left[:6] + right[:6])
        np.testing.assert_allclose(last.gripper, [0.02 / 0.035, 0.0], atol=1e-6)  # opening / stroke
        assert 30 <= len(chunks) <= 70  # 50 Hz for a second (a fresh-clone run received 14 in half a second)
        leaders["left"].publish(JointState(name=["joint0"], position=[float("nan")]))  # malformed: ignored
        probe.spin_for(0.3)
        assert process.poll() is None and chunks[-1].positions[:6] == last.positions[:6]
    finally:
        probe.close()
        stop_process(process)


def test_keyboard_teleop_moves_the_tcp_and_sends_episode_commands(bringup):
    """teleop_node with its stdin on a pseudo-terminal, the keys typed into it."""
    import os
    import pty

    from wam_ros.config import load_robot_config
    from wam_ros.geometry.kinematics import Kinematics
    from wam_ros.robots.urdf import generate_urdf

    robot = load_robot_config("agilex")
    home = robot.home_positions()
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [
            str(BIN / "teleop_node"),
            "--ros-args",
            "-r",
            "__ns:=/keyboard_check",
            "-p",
            "robot:=agilex",
            "-p",
            "source:=keyboard",
        ],
        stdin=slave,
        stdout=slave,
    )
    os.close(slave)
    chunks, commands = [], []
    subs = [
        bringup.probe.create_subscription(ActionChunk, "/keyboard_check/policy/chunk", chunks.append, COMMAND_QOS),
        bringup.probe.create_subscription(String, "/keyboard_check/recorder/command", commands.append, COMMAND_QOS),
    ]
    states = bringup.probe.create_publisher(JointState, "/keyboard_check/joint_states", JOINT_STATE_QOS)
    try:

        def publish_home():
            states.publish(JointState(name=list(home), position=list(home.values())))
            return bool(chunks)

        assert bringup.spin_until(publish_home, 20.0), "no chunk once the joints were known"
        shown = os.read(master, 4096).decode()  # the key map, printed on the terminal the keys are typed in
        assert "keyboard teleop (this terminal)" in shown and "space  start an episode" in shown, shown
        kinematics = Kinematics(generate_urdf(robot))

        def left_tcp(chunk) -> np.ndarray:
            positions = dict(zip(chunk.joint_names, chunk.positions))
            return kinematics.frame_pose({**home, **positions}, "left_tcp")[:3, 3]

        start = left_tcp(chunks[-1])
        for _ in range(10):  # a held key: the terminal repeats it
            os.write(master, b"w")
            bringup.spin_for(0.1)
        moved = left_tcp(chunks[-1]) - start
        assert moved[0] > 0.03 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01, moved  # +x, 0.1 m/s for ~1 s
        os.write(master, b"g ")  # close the left gripper, then start an episode
        assert bringup.spin_until(lambda: bool(commands) and chunks[-1].gripper[0] == 0.0, 5.0)
        assert [c.data for c in commands] == ["toggle"] and chunks[-1].gripper[1] == 1.0
    finally:
        for sub in subs:
            bringup.probe.destroy_subscription(sub)
        stop_process(process)
        os.close(master)


def test_the_episode_bag_is_what_ros2_bag_record_writes(recorded):
    """Fully qualified topic names, the publishers' offered QoS (a latched topic stays latched on
    playback), the Jazzy distro and version, type hashes on the MCAP channels."""
    path, _ = recorded
    offered = check_like_ros2_bag_record(path)
    # what discovery tells a subscriber (DDS does not carry the history depth: 0, as `ros2 bag record` stores it)
    assert offered["/lab/supervisor/state"] and all(
        q["durability"] == "transient_local" for q in offered["/lab/supervisor/state"]
    )
    assert offered["/lab/joint_states"] and all(
        q["durability"] == "volatile" and q["reliability"] == "reliable" for q in offered["/lab/joint_states"]
    )
    assert offered["/wam_ros/episode_events"] == []  # the recorder's own: no publisher


@pytest.mark.slow
def test_lerobot_loads_edits_and_trains_on_the_export(recorded, tmp_path):
    """LeRobot 0.6.1 itself (its own venv): LeRobotDataset reads every frame with the bag's values
    (state, action exactly; depth to the millimetre; the instruction as the task), delete_episodes
    edits the export, lerobot-dataset-viz shows it, and lerobot-train runs ACT on it."""
    path, _ = recorded
    index = index_episode(path, fps=15.0)
    frames = list(iter_frames(index))
    episode = {
        "state": index.state,
        "action": index.action,
        "task": index.task,
        "rgb": np.stack([np.stack([f[1][c] for c in index.cameras]) for f in frames]),
        "depth": np.stack([np.stack([f[2][c] for c in index.cameras]) for f in frames]),
    }
    assert episode["depth"].max() <= 4095  # the export's depth is exact up to 4.095 m
    dataset = tmp_path / "dataset"
    result = export_lerobot([path, path], dataset, ExportConfig(progress=False), robot="franka")
    save_expected(tmp_path / "expected.npz", index.cameras, index.joint_names, 15.0, [episode, episode])
    report = lerobot_side("check", dataset, tmp_path / "expected.npz", tmp_path / "check.json")
    assert report["frames"] == 2 * len(index) and report["episodes"] == 2
    assert report["depth_max_abs_error_mm"] == 0.0
    assert report["rgb_mean_abs_error_max"] < 4.0  # h264 at crf 18
    assert report["edited_frames"] == len(index)
    assert {f"observation.images.{c}" for c in index.cameras} <= set(report["stats_keys"])
    # a keyframe every second frame (random access decodes at most one extra frame)
    import av

    with av.open(
        str(dataset / "videos" / f"observation.images.{index.cameras[0]}" / "chunk-000" / "file-000.mp4")
    ) as c:
        keyframes = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert all(keyframes[::2]) and len(keyframes) == 2 * len(index)
    run_lerobot(
        "lerobot-dataset-viz",
        "--repo-id",
        "local/wam_ros_export",
        "--root",
        str(dataset),
        "--episode-index",
        "1",
        "--mode",
        "local",
        "--save",
        "1",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path / "viz"),
    )
    assert (tmp_path / "viz" / "local_wam_ros_export_episode_1.rrd").stat().st_size > 10_000  # a rerun recording
    run_lerobot(
        "lerobot-train",
        "--policy.type=act",
        "--dataset.repo_id=local/wam_ros_export",
        f"--dataset.root={dataset}",
        "--dataset.video_backend=pyav",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--policy.pretrained_backbone_weights=null",
        "--policy.chunk_size=5",
        "--policy.n_action_steps=5",
        "--policy.dim_model=64",
        "--policy.n_encoder_layers=1",
        "--policy.n_decoder_layers=1",
        "--policy.dim_feedforward=128",
        "--steps=2",
        "--batch_size=2",
        "--num_workers=0",
        "--log_freq=1",
        "--save_checkpoint=false",
        "--wandb.enable=false",
        f"--output_dir={tmp_path / 'act'}",
        f"--policy.input_features={result['lerobot_rgb_policy_input_features']}",
    )


def test_episodes_start_and_stop_from_the_wam_ros_cli(tmp_path):
    """`wam-ros episode start` / `stop --success` call the recorder's services (no ros2 CLI)."""
    domain = SPARE_DOMAIN_IDS[1]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    process = subprocess.Popen(
        [
            str(BIN / "recorder_node"),
            "--ros-args",
            "-r",
            "__ns:=/cell",
            "-p",
            "robot:=agilex",
            "-p",
            f"directory:={tmp_path}",
            "-p",
            "min_free_mb:=10.0",
        ],
        env=env,
    )
    try:

        def episode(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(BIN / "wam-ros"), "episode", *args, "--namespace", "cell"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )

        started = episode("start")
        assert started.returncode == 0, started.stderr[-2000:]
        assert started.stdout.strip() == str(tmp_path / "episode_000000")
        stopped = episode("stop", "--success")
        assert stopped.returncode == 0 and stopped.stdout.strip() == "episode_000000: success", stopped.stderr[-2000:]
        again = episode("stop", "--failure")
        assert again.returncode == 1 and "no episode is being recorded" in again.stderr
        assert json.loads((tmp_path / "episode_000000" / "episode.json").read_text())["outcome"] == "success"
    finally:
        stop_process(process)
    nobody = subprocess.run(
        [str(BIN / "wam-ros"), "episode", "start", "--namespace", "cell", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert nobody.returncode == 1 and "no recorder at /cell/recorder" in nobody.stderr
