"""Recording core, bag recovery, raw-topic export and teleop math, without ROS."""

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from support.bag_messages import NAMES, STORE, TOPICS, T, frames_at, image, image_message, joint_state, read_all
from support.bag_messages import header as _header
from support.rosbag2_checks import check_like_ros2_bag_record
from wam_ros.config import load_robot_config
from wam_ros.data.bag import BagError, recover
from wam_ros.data.bag_frames import episode_paths, index_episode, iter_frames
from wam_ros.data.export import ExportConfig, export_hdf5, load_hdf5
from wam_ros.data.images import decode_compressed, encode_color, encode_depth
from wam_ros.data.recorder import Recorder, RecorderConfig, RecorderError
from wam_ros.data.targets import interaction_labels, progress_targets, rewards
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.robots.urdf import generate_urdf
from wam_ros.teleop.cartesian import CartesianTeleop, TwistLimits
from wam_ros.teleop.keyboard import KeyboardState
from wam_ros.teleop.spacemouse import SpaceMouseError, SpaceMouseState


def record_episode(
    directory: Path, seconds: float = 2.0, compression: str = "none", outcome: str = "success", **config
) -> Path:
    recorder = Recorder(
        RecorderConfig(directory, compression=compression, min_free_mb=1.0, **config), TOPICS, {"robot": "test"}
    )
    path = recorder.start_episode(0, "pick the cube", "scripted")
    for k in range(int(seconds * 100)):  # joint states at 100 Hz, cameras at 10 Hz
        t = k / 100
        recorder.submit("/joint_states", int(t * 1e9), joint_state(t))
        if k % 10 == 0:
            rgb, depth = frames_at(t)
            recorder.submit("/head/color/image_raw", int(t * 1e9), image(t, rgb, "rgb8"))
            recorder.submit("/head/aligned_depth_to_color/image_raw", int(t * 1e9), image(t, depth, "16UC1"))
    recorder.stop_episode(int(seconds * 1e9), outcome)
    recorder.close()
    return path


def test_compressed_images_round_trip_depth_exactly_and_color_closely():
    rgb, depth = frames_at(0.3)
    fmt, data = encode_depth(depth)
    assert fmt == "16UC1; compressedDepth png"
    np.testing.assert_array_equal(decode_compressed(fmt, data), depth)
    fmt, data = encode_color(rgb, "jpeg", 95)
    assert np.abs(decode_compressed(fmt, data).astype(int) - rgb).max() <= 4
    fmt, data = encode_color(rgb, "png")
    np.testing.assert_array_equal(decode_compressed(fmt, data), rgb)


def test_recovery_keeps_every_message_before_the_point_where_the_file_was_cut(tmp_path):
    # flushing after every message makes the cut points land between many chunks
    complete = record_episode(tmp_path / "complete", seconds=3.0, flush_period=0.0)
    original = read_all(complete)
    mcap = next(complete.glob("*.mcap"))
    size = mcap.stat().st_size
    check_like_ros2_bag_record(complete)
    kept = []
    for fraction in (0.35, 0.8):
        cut = tmp_path / f"cut_{fraction}"
        cut.mkdir()
        shutil.copy(complete / "episode.json", cut)
        (cut / f"{cut.name}.mcap").write_bytes(mcap.read_bytes()[: int(size * fraction)])
        episode = recover(cut)
        assert episode["recovered"] and episode["outcome"] == "success"  # the record had ended before the cut
        recovered = read_all(cut)
        for topic, messages in recovered.items():
            assert messages == original[topic][: len(messages)], topic  # an exact prefix, nothing reordered
        kept.append(len(recovered["/joint_states"]) / len(original["/joint_states"]))
        assert recover(cut) == episode  # idempotent on the rebuilt bag
        check_like_ros2_bag_record(cut)  # and its index, metadata and embedded metadata as a finished bag's
        finished = (cut / f"{cut.name}.mcap").stat().st_size
        (cut / "metadata.yaml").unlink()  # a finish interrupted before its last step is done again
        assert recover(cut)["recovered_messages"] == episode["recovered_messages"] and read_all(cut) == recovered
        assert (cut / f"{cut.name}.mcap").stat().st_size == finished
        assert {p.name for p in cut.iterdir()} == {"episode.json", f"{cut.name}.mcap", "metadata.yaml"}
    assert {p.name for p in tmp_path.iterdir()} == {"complete", "cut_0.35", "cut_0.8"}  # in place: no copies
    assert 0.15 < kept[0] < kept[1] < 1.0 and kept[1] > 0.6  # what reached the disk, up to the cut
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "garbage.mcap").write_bytes(b"not an mcap file")
    with pytest.raises(BagError, match="bad magic"):
        recover(tmp_path / "garbage")


def test_raw_compressed_topics_export_with_exact_depth_and_targets(tmp_path):
    bag = record_episode(tmp_path / "bags", compression="png", outcome="failure")
    with AnyReader([bag], default_typestore=STORE) as reader:
        assert {c.topic: c.msgtype for c in reader.connections}[
            "/head/color/image_raw/compressed"
        ] == "sensor_msgs/msg/CompressedImage"
    index = index_episode(bag, fps=10.0)
    assert index.cameras == ["head"] and len(index) == 20 and not index.success
    for k, colors, depths in iter_frames(index):  # frame k shows the image stamped at k / 10 s
        rgb, depth = frames_at(k / 10)
        np.testing.assert_array_equal(colors["head"], rgb)
        np.testing.assert_array_equal(depths["head"], depth)
    np.testing.assert_allclose(index.state[:, 0], np.sin(np.arange(20) / 10), atol=1e-9)
    np.testing.assert_allclose(index.action, np.vstack([index.state[1:], index.state[-1:]]))  # no commands recorded
    result = export_hdf5([bag], tmp_path / "h5", ExportConfig(fps=10.0, progress=False))
    assert result["frames"] == 20
    meta, episodes = load_hdf5(tmp_path / "h5")
    assert meta.cameras == ["head"] and meta.state_names == NAMES and episodes[0].task == "pick the cube"
    import h5py

    with h5py.File(tmp_path / "h5" / "episode_0.hdf5") as f:
        np.testing.assert_allclose(f["value_target"][()], progress_targets(rewards(20, False)))
        np.testing.assert_array_equal(f["gate_label"][()], interaction_labels(index.state[:, [1]], 20))
        assert f["gate_label"][()].any()  # the gripper toggles every second


def observation_set(t: float, silent: tuple[str, ...] = ()) -> bytes:
    """A MultiViewRGBD of cameras head and wrist as the sync node publishes it; a silent camera's
    view is an empty image and the set is degraded."""
    rgb, depth = frames_at(t)
    views = {name: (rgb + offset, depth + offset) for name, offset in (("head", 0), ("wrist", 1))}
    empty = T["sensor_msgs/msg/Image"](
        header=_header(t), height=0, width=0, encoding="", is_bigendian=0, step=0, data=np.zeros(0, np.uint8)
    )
    info = T["sensor_msgs/msg/CameraInfo"](
        header=_header(t),
        height=24,
        width=32,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([30.0, 0, 16, 0, 30, 12, 0, 0, 1]),
        r=np.eye(3).ravel(),
        p=np.zeros(12),
        binning_x=0,
        binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
    names = list(views)
    color = [empty if n in silent else image_message(t, views[n][0], "rgb8") for n in names]
    depth = [empty if n in silent else image_message(t, views[n][1], "16UC1") for n in names]
    msg = T["wam_ros/msg/MultiViewRGBD"](
        header=_header(t),
        camera_names=names,
        color=color,
        depth=depth,
        color_info=[info] * 2,
        depth_info=[info] * 2,
        stamps=[_header(t).stamp] * 2,
        spread=0.0,
        degraded=bool(silent),
        status="ok" if not silent else "stale",
    )
    return bytes(STORE.serialize_cdr(msg, "wam_ros/msg/MultiViewRGBD"))


def test_degraded_sets_export_each_silent_view_as_its_previous_image(tmp_path):
    """A set in which a camera was silent carries an empty image for it. The export starts once every
    camera has shown an image and holds a silent camera's previous image (as raw topics do); a camera
    that never shows one is an error that names it."""
    topics = {"/joint_states": "sensor_msgs/msg/JointState", "/observations": "wam_ros/msg/MultiViewRGBD"}

    def record(name: str, silent_at) -> Path:
        recorder = Recorder(RecorderConfig(tmp_path / name, min_free_mb=1.0), topics, {"robot": "test"})
        path = recorder.start_episode(0, "pick the cube", "scripted")
        for k in range(200):
            t = k / 100
            recorder.submit("/joint_states", int(t * 1e9), joint_state(t))
            if k % 10 == 0:
                recorder.submit("/observations", int(t * 1e9), observation_set(t, silent_at(k // 10)))
        recorder.stop_episode(int(2e9), "success")
        recorder.close()
        return path

    # the wrist is silent in the first two sets and in sets 7 and 8
    bag = record("gappy", lambda k: ("wrist",) if k in (0, 1, 7, 8) else ())
    index = index_episode(bag, fps=10.0)
    assert index.cameras == ["head", "wrist"] and index.image_size["wrist"] == (24, 32)
    assert index.times[0] == int(0.2e9) and len(index) == 18  # from the first complete set, 0.2 s
    frames = {k: (colors, depths) for k, colors, depths in iter_frames(index)}
    assert len(frames) == 18
    for k, (colors, depths) in frames.items():
        t = 0.2 + k / 10
        shown = 0.6 if round(t * 10) in (7, 8) else t  # the wrist's last image before its silence
        np.testing.assert_array_equal(colors["head"], frames_at(t)[0])
        np.testing.assert_array_equal(colors["wrist"], frames_at(shown)[0] + 1)
        np.testing.assert_array_equal(depths["wrist"], frames_at(shown)[1] + 1)
    result = export_hdf5([bag], tmp_path / "h5", ExportConfig(fps=10.0, progress=False))
    assert result["frames"] == 18
    with pytest.raises(BagError, match="camera.s. wrist never delivered an image"):
        index_episode(record("blind", lambda k: ("wrist",)), fps=10.0)


def test_recorder_refuses_low_disk_and_ends_the_episode_when_the_disk_fills(tmp_path):
    with pytest.raises(RecorderError, match="MB free"):
        Recorder(RecorderConfig(tmp_path, min_free_mb=1e12), TOPICS).start_episode(0, "", "")
    recorder = Recorder(RecorderConfig(tmp_path, min_free_mb=1.0, disk_check_period=0.05), TOPICS)
    recorder.start_episode(0, "", "")
    recorder.submit("/joint_states", 1, joint_state(0.0))
    deadline = time.monotonic() + 5
    while not recorder.stats["/joint_states"].written and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.config = dataclasses.replace(recorder.config, min_free_mb=1e12)  # the disk "fills up"
    deadline = time.monotonic() + 5
    while recorder.recording and time.monotonic() < deadline:
        recorder.submit("/joint_states", 2, joint_state(0.01))
        time.sleep(0.02)
    while not recorder.last_episode and time.monotonic() < deadline:  # recording ends before the bag is closed
        time.sleep(0.01)
    assert not recorder.recording and recorder.last_episode["outcome"] == "disk_full"
    assert read_all(tmp_path / "episode_000000")["/joint_states"]  # closed, readable
    recorder.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    recorder = Recorder(RecorderConfig(tmp_path, min_free_mb=1.0, queue_mb=1.0), TOPICS)
    recorder.start_episode(0, "", "")
    big = image(0.0, np.zeros((1000, 1000, 3), np.uint8), "rgb8")  # 3 MB > the 1 MB queue
    assert not recorder.submit("/head/color/image_raw", 0, big)
    assert recorder.submit("/joint_states", 0, joint_state(0.0))
    episode = recorder.stop_episode(1, "success")
    assert episode["messages"]["/head/color/image_raw"] == {"received": 1, "written": 0, "dropped": 1}
    assert episode["messages"]["/joint_states"] == {"received": 1, "written": 1, "dropped": 0}
    with pytest.raises(RecorderError, match="no episode"):
        recorder.stop_episode(2, "success")
    recorder.close()


def test_spacemouse_reports_map_to_base_frame_twists():
    state = SpaceMouseState()
    state.update(bytes([1]) + np.array([0, -350, 0], "<i2").tobytes())  # pushed away from the user
    state.update(bytes([2]) + np.array([0, 0, -175], "<i2").tobytes())  # twisted counter-clockwise
    state.update(bytes([3, 0b01]))
    np.testing.assert_allclose(state.twist(), [1, 0, 0, 0, 0, 0.5])
    assert state.button(0) and not state.button(1)
    state.update(bytes([1]) + np.array([350, 0, 0, 0, 0, 0], "<i2").tobytes())  # 6-axis report of newer models
    np.testing.assert_allclose(state.twist(), [0, -1, 0, 0, 0, 0])
    with pytest.raises(SpaceMouseError, match="unexpected HID report"):
        state.update(bytes([9, 1, 2]))


def test_cartesian_teleop_moves_the_tcp_along_the_twist_and_holds_unreachable_targets():
    robot = load_robot_config("franka")
    kinematics = Kinematics(generate_urdf(robot))
    arm = CartesianTeleop(robot, kinematics, "left", TwistLimits(linear=0.1))
    home = robot.home_positions()
    arm.sync(home)
    start = kinematics.frame_pose(home, "left_tcp")
    for _ in range(30):  # 1 s at 30 Hz, full deflection +x
        targets = arm.step(np.array([1.0, 0, 0, 0, 0, 0]), 1 / 30)
    moved = kinematics.frame_pose({**home, **targets}, "left_tcp")
    np.testing.assert_allclose(moved[:3, 3] - start[:3, 3], [0.1, 0, 0], atol=2e-3)
    np.testing.assert_allclose(moved[:3, :3], start[:3, :3], atol=2e-3)
    assert arm.step(np.array([0.01, 0, 0, 0, 0, 0]), 1 / 30) == targets  # inside the deadband: holds
    for _ in range(300):  # 10 m away: out of reach, the arm stops at its last reachable target
        last = arm.step(np.array([1.0, 0, 0, 0, 0, 0]), 1.0)
    assert arm.rejected > 0
    reached = kinematics.frame_pose({**home, **last}, "left_tcp")
    assert np.linalg.norm(reached[:3, 3] - arm.target[:3, 3]) < 0.02
    with pytest.raises(ValueError, match="6 finite"):
        arm.step(np.array([np.nan] * 6), 0.1)


def test_keyboard_keys_move_for_a_moment_and_send_episode_commands():
    keys = KeyboardState(hold=0.2)
    assert keys.press("w", 0.0) is None
    np.testing.assert_array_equal(keys.twist(0.1), [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(keys.twist(0.3), np.zeros(6))
    keys.press("g", 0.3)
    assert keys.gripper_open == {"left": False, "right": True}
    keys.press("\t", 0.3)
    assert keys.side == "right"
    assert keys.press(" ", 0.4) == "toggle" and keys.press("x", 0.5) == "failure"


def test_an_episode_being_recorded_is_never_recovered_or_exported(tmp_path):
    record_episode(tmp_path)  # episode_000000, complete
    recorder = Recorder(RecorderConfig(tmp_path, min_free_mb=1.0), TOPICS)
    live = recorder.start_episode(0, "", "")
    recorder.submit("/joint_states", 0, joint_state(0.0))
    with pytest.raises(BagError, match="is being recorded"):
        recover(live)
    assert episode_paths([tmp_path]) == [tmp_path / "episode_000000"]
    recorder.stop_episode(1, "success")
    assert episode_paths([tmp_path]) == [tmp_path / "episode_000000", live]
    assert not (live / ".recording.lock").exists()
    recorder.close()


def test_dataset_digest_names_the_exact_files(tmp_path):
    from wam_ros.data.dataset import DatasetError
    from wam_ros.data.export import dataset_digest

    with pytest.raises(DatasetError, match="no dataset files"):
        dataset_digest(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text('{"fps": 15}')
    (tmp_path / "data.bin").write_bytes(bytes(range(256)))
    first = dataset_digest(tmp_path)
    assert len(first) == 64 and dataset_digest(tmp_path) == first
    (tmp_path / "data.bin").write_bytes(bytes(range(255)) + b"\x00")  # one byte changed
    changed = dataset_digest(tmp_path)
    (tmp_path / "data.bin").rename(tmp_path / "data2.bin")  # same bytes, another name
    assert len({first, changed, dataset_digest(tmp_path)}) == 3
