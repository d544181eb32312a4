"""The recorder on a genuinely full disk: a small tmpfs mounted for each test (root with
CAP_SYS_ADMIN, as on the developers' machines and CI; skipped where mounting is refused), filled up
by the recorder itself or by a filler file; and a file-size limit (EFBIG) for a write failure other
than ENOSPC. Through the Recorder core, a SIGKILLed recorder process, and a recorder_node process
fed over Fast DDS."""

import errno
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from std_srvs.srv import SetBool, Trigger

from support.bag_messages import TOPICS, image, joint_state, read_all
from support.ros import ProbeNode
from wam_ros.data.bag import RESERVE_FILE, BagError, is_complete, read_episode_record, recover, typestore
from wam_ros.data.recorder import Recorder, RecorderConfig, RecorderError
from wam_ros.ros.conversions import image_msg
from wam_ros.ros.qos import DIAGNOSTICS_QOS, EVERY_MESSAGE_QOS, EVERY_SET_QOS

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
DISK_MB = 6  # the recorder's 1 MiB reserve and some twenty 230 KB images


@pytest.fixture
def disk(tmp_path):
    """A small, empty tmpfs: ENOSPC for real once it is full."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem to fill")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs (needs root with CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)  # a process still holds a file there


def fill(directory: Path) -> Path:
    """Takes every free block, as another program writing there would."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\xff" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert shutil.disk_usage(directory).free == 0
    return filler


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def record_until_full(directory: Path, events: list | None = None) -> tuple[Recorder, Path, dict[str, list[bytes]]]:
    """Joint states and images until the disk is full; flushed after every message, so that the
    failure costs at most the one message being written. Returns what was handed over, per topic."""
    recorder = Recorder(
        RecorderConfig(directory, min_free_mb=0.0, flush_period=0.0, disk_check_period=0.05),
        TOPICS,
        on_event=lambda kind, info: events is not None and events.append(kind),
    )
    path = recorder.start_episode(0, "pick the cube", "scripted")
    submitted: dict[str, list[bytes]] = {"/joint_states": [], "/head/color/image_raw": []}
    deadline = time.monotonic() + 60
    k = 0
    while recorder.recording:
        assert time.monotonic() < deadline, "the disk never filled"
        rgb = np.full((240, 320, 3), k % 256, np.uint8)  # 230 KB
        for topic, data in (
            ("/joint_states", joint_state(k / 100)),
            ("/head/color/image_raw", image(k / 100, rgb, "rgb8")),
        ):
            if recorder.submit(topic, k * 10**7, data):
                submitted[topic].append(data)
        k += 1
        time.sleep(0.01)
    wait_for(lambda: recorder.last_episode, 10, "the episode never ended")
    return recorder, path, submitted


def test_a_full_disk_ends_the_episode_readable_up_to_the_failure_and_the_recorder_answers(disk):
    events: list[str] = []
    recorder, path, submitted = record_until_full(disk, events)
    episode = recorder.last_episode
    assert episode["outcome"] == "disk_full"
    assert episode["error"] == f"ENOSPC (No space left on device) writing {path}"
    assert json.loads((path / "episode.json").read_text()) == episode and is_complete(path)
    on_disk = read_all(path)
    for topic, sent in submitted.items():
        assert on_disk[topic] == sent[: len(on_disk[topic])], topic  # an exact prefix, nothing reordered
        assert episode["messages_on_disk"][topic] == len(on_disk[topic])
    assert len(on_disk["/head/color/image_raw"]) > 10
    lost = sum(episode["messages"][t]["written"] - len(on_disk[t]) for t in submitted)
    assert lost <= 1  # the message whose chunk the disk refused
    assert sorted(p.name for p in path.iterdir()) == ["episode.json", "episode_000000.mcap", "metadata.yaml"]

    started = time.monotonic()
    with pytest.raises(RecorderError, match="episode_000000 ended disk_full: ENOSPC"):
        recorder.stop_episode(1, "success")
    status = recorder.status()
    assert status["error"] == f"disk_full: {episode['error']}" and status["free_mb"] is not None
    assert not status["recording"] and not status["unsaved"]
    filler = fill(disk)
    with pytest.raises(RecorderError, match="No space left on device"):
        recorder.start_episode(2, "", "")
    assert sorted(p.name for p in disk.iterdir()) == ["episode_000000", "filler"]  # no empty episode left
    filler.unlink()
    recorder.close()
    assert time.monotonic() - started < 5
    assert events == ["started", "failed", "stopped"]


def test_when_even_the_record_cannot_be_written_it_is_kept_in_memory_and_written_once_there_is_room(disk):
    events: list[str] = []
    recorder = Recorder(
        RecorderConfig(disk, min_free_mb=0.0, flush_period=0.0, disk_check_period=0.05),
        TOPICS,
        on_event=lambda kind, info: events.append(kind),
    )
    path = recorder.start_episode(0, "", "")
    for k in range(50):
        recorder.submit("/joint_states", k, joint_state(k / 100))
    wait_for(lambda: recorder.stats["/joint_states"].written == 50, 10, "joint states not written")
    time.sleep(0.2)  # flushed
    (path / RESERVE_FILE).unlink()  # another program takes the room the reserve kept
    filler = fill(disk)
    recorder.submit("/head/color/image_raw", 50, image(0.5, np.zeros((240, 320, 3), np.uint8), "rgb8"))
    wait_for(lambda: not recorder.recording and recorder.last_episode, 10, "the failed write did not end the episode")
    assert recorder.last_episode["outcome"] == "disk_full" and recorder.status()["unsaved"] == [str(path)]
    assert read_episode_record(path)["outcome"] == "recording" and not is_complete(path)  # the old record, intact
    with pytest.raises(RecorderError, match="ended disk_full"):
        recorder.stop_episode(1, "success")
    filler.unlink()  # room again: the next disk check writes the record
    wait_for(lambda: not recorder.status()["unsaved"], 10, "the kept record was never written")
    assert read_episode_record(path) == recorder.last_episode and recorder.last_episode["outcome"] == "disk_full"
    assert len(read_all(path)["/joint_states"]) == 50
    recorder.close()
    assert events == ["started", "failed", "unsaved", "stopped", "saved"]


def test_a_stop_on_a_full_disk_closes_the_bag_in_the_reserves_room_and_without_it_ends_disk_full(disk):
    recorder = Recorder(RecorderConfig(disk, min_free_mb=0.0, flush_period=0.0, disk_check_period=0.05), TOPICS)
    paths = []
    for k in range(2):
        paths.append(recorder.start_episode(k, "", ""))
        for i in range(50):
            recorder.submit("/joint_states", i, joint_state(i / 100))
        wait_for(lambda: recorder.stats["/joint_states"].written == 50, 10, "joint states not written")
        time.sleep(0.2)  # flushed
        if k == 1:
            (paths[1] / RESERVE_FILE).unlink()  # another program takes that room too
        filler = fill(disk)
        episode = recorder.stop_episode(k, "success")
        if k == 0:  # the summary, metadata.yaml and episode.json fit where the reserve was
            assert episode["outcome"] == "success" and read_episode_record(paths[0]) == episode
        else:
            assert episode["outcome"] == "disk_full" and episode["requested_outcome"] == "success"
            assert recorder.status()["unsaved"] == [str(paths[1])]
        filler.unlink()
    wait_for(lambda: not recorder.status()["unsaved"], 10, "the kept record was never written")
    assert read_episode_record(paths[1])["outcome"] == "disk_full"
    assert [len(read_all(path)["/joint_states"]) for path in paths] == [50, 50]
    recorder.close()


def test_the_bag_a_full_disk_ended_reads_with_the_mcap_reference_reader(disk):
    reader = pytest.importorskip("mcap.reader", reason="the mcap package (MCAP's own Python reader) is not installed")
    recorder, path, _ = record_until_full(disk)
    recorder.close()
    expected = {topic: len(messages) for topic, messages in read_all(path).items()}
    with (path / "episode_000000.mcap").open("rb") as f:
        mcap = reader.make_reader(f, validate_crcs=True)
        summary = mcap.get_summary()
        assert summary is not None and summary.chunk_indexes  # indexed: seekable
        counts: dict[str, int] = {}
        for _, channel, _ in mcap.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    with (path / "episode_000000.mcap").open("rb") as f:
        streamed = sum(1 for _ in reader.NonSeekingReader(f, validate_crcs=True).iter_messages())
    assert counts == expected and streamed == sum(expected.values())


# A recorder process killed (SIGKILL) after its last flush: what `recover` meets after a crash.
KILLED_RECORDER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from wam_ros.data.bag import typestore
    from wam_ros.data.recorder import Recorder, RecorderConfig
    store = typestore()
    recorder = Recorder(RecorderConfig(sys.argv[1], min_free_mb=0.0, flush_period=0.0),
                        {"/joint_states": "sensor_msgs/msg/JointState"})
    recorder.start_episode(0, "", "")
    for k in range(200):
        msg = store.types["sensor_msgs/msg/JointState"](
            header=store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=k),
                                                      frame_id=""),
            name=["j"], position=np.array([k / 10]), velocity=np.zeros(0), effort=np.zeros(0))
        recorder.submit("/joint_states", k, bytes(store.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
    while recorder.stats["/joint_states"].written < 200:
        time.sleep(0.01)
    time.sleep(1.0)  # its flush (the writer flushes right after the write)
    print("written", flush=True)
    time.sleep(60)
""")


def killed_recorder(directory: Path) -> Path:
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RECORDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "written"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    path = directory / "episode_000000"
    assert not is_complete(path) and (path / RESERVE_FILE).is_file()
    return path


def joint_positions(path: Path) -> list[float]:
    with AnyReader([path], default_typestore=typestore()) as reader:
        return [
            float(reader.deserialize(raw, conn.msgtype).position[0])
            for conn, _, raw in reader.messages()
            if conn.topic == "/joint_states"
        ]


def test_recover_finishes_a_killed_recorders_bag_on_a_full_disk_where_it_lies(disk):
    path = killed_recorder(disk)
    filler = fill(disk)
    episode = recover(path)  # the reserve it deletes is the room for the index and the records
    assert episode["outcome"] == "partial" and episode["recovered"] and episode["recovered_messages"] == 201
    assert joint_positions(path) == pytest.approx([k / 10 for k in range(200)])
    assert sorted(p.name for p in disk.iterdir()) == ["episode_000000", "filler"]  # no second copy
    assert sorted(p.name for p in path.iterdir()) == ["episode.json", "episode_000000.mcap", "metadata.yaml"]
    filler.unlink()


def test_without_any_room_recover_says_why_and_finishes_once_there_is_room(disk):
    path = killed_recorder(disk)
    (path / RESERVE_FILE).unlink()  # as a recorder of before the reserve left it
    filler = fill(disk)
    with pytest.raises(BagError, match=r"cannot write .*No space left on device \(0 bytes free there\); make room"):
        recover(path)
    assert read_episode_record(path)["outcome"] == "recording" and not is_complete(path)
    filler.unlink()
    assert recover(path)["outcome"] == "partial"
    assert joint_positions(path) == pytest.approx([k / 10 for k in range(200)])


# The same recorder under a 3 MB file-size limit: EFBIG (SIGXFSZ, which Python ignores).
EFBIG_RECORDER = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from support.bag_messages import TOPICS, image, joint_state
    from wam_ros.data.recorder import Recorder, RecorderConfig
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * 2**20, 3 * 2**20))
    recorder = Recorder(RecorderConfig(sys.argv[1], min_free_mb=0.0, flush_period=0.0), TOPICS)
    recorder.start_episode(0, "", "")
    k = 0
    while recorder.recording and k < 1000:
        recorder.submit("/joint_states", k, joint_state(k / 100))
        recorder.submit("/head/color/image_raw", k, image(k / 100, np.full((240, 320, 3), k % 256, np.uint8), "rgb8"))
        k += 1
        time.sleep(0.01)
    while not recorder.last_episode:
        time.sleep(0.01)
    recorder.close()
    print(json.dumps(recorder.last_episode))
""")


def test_a_file_size_limit_ends_the_episode_as_a_disk_error_readable_up_to_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", EFBIG_RECORDER, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    episode = json.loads(result.stdout.splitlines()[-1])
    path = tmp_path / "episode_000000"
    assert episode["outcome"] == "disk_error" and episode["error"] == f"EFBIG (File too large) writing {path}"
    assert read_episode_record(path) == episode
    on_disk = read_all(path)
    assert len(on_disk["/head/color/image_raw"]) >= 8 and (path / "episode_000000.mcap").stat().st_size <= 3 * 2**20


def stamp(k: int) -> Time:  # k milliseconds
    return Time(sec=k // 1000, nanosec=(k % 1000) * 10**6)


def test_the_recorder_node_on_a_full_disk_ends_the_episode_and_stays_responsive(disk):
    process = subprocess.Popen(
        [
            str(BIN / "recorder_node"),
            "--ros-args",
            "-r",
            "__ns:=/disk_full",
            "-p",
            "robot:=franka",
            "-p",
            f"directory:={disk}",
            "-p",
            "min_free_mb:=0.0",
            "-p",
            "source:=raw",
            "-p",
            "cameras:=[head]",
        ]
    )
    probe = ProbeNode("disk_full_probe")
    node = probe.node
    diagnostics: list[DiagnosticStatus] = []
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda msg: diagnostics.extend(s for s in msg.status if s.name.startswith("/disk_full/recorder")),
        DIAGNOSTICS_QOS,
    )
    joints = node.create_publisher(JointState, "/disk_full/joint_states", EVERY_MESSAGE_QOS)
    images = node.create_publisher(Image, "/disk_full/head/color/image_raw", EVERY_SET_QOS)
    start = node.create_client(Trigger, "/disk_full/recorder/start_episode")
    stop = node.create_client(SetBool, "/disk_full/recorder/stop_episode")

    try:
        reply = probe.call_service(start, Trigger.Request(), 30.0)
        assert reply.success, reply.message
        path = Path(reply.message)
        sent_joints, sent_images = [], []
        deadline = time.monotonic() + 60
        k = 0
        while not is_complete(path):  # metadata.yaml: written last
            assert time.monotonic() < deadline and process.poll() is None, "the disk never filled"
            joints.publish(JointState(header=Header(stamp=stamp(k)), name=["j"], position=[k / 10]))
            sent_joints.append(k)
            if k % 5 == 0:  # 640x480 rgb8 (0.9 MB) at a fifth of the joint state rate
                images.publish(image_msg(np.full((480, 640, 3), k % 256, np.uint8), "rgb8", stamp(k), "head"))
                sent_images.append(k)
            probe.spin_for(0.01)
            k += 1
        episode = read_episode_record(path)
        assert (
            episode["outcome"] == "disk_full" and episode["error"] == f"ENOSPC (No space left on device) writing {path}"
        )
        with AnyReader([path], default_typestore=typestore()) as reader:  # complete: metadata.yaml and index
            stamps: dict[str, list[int]] = {}
            for conn, _, raw in reader.messages():
                if conn.topic != "/wam_ros/episode_events":
                    msg = reader.deserialize(raw, conn.msgtype)
                    stamps.setdefault(conn.topic, []).append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
        for topic, sent in (("/disk_full/joint_states", sent_joints), ("/disk_full/head/color/image_raw", sent_images)):
            got = [s // 10**6 for s in stamps[topic]]
            assert got == sorted(set(got)) and set(got) <= set(sent), topic  # in order, nothing invented
        assert len(stamps["/disk_full/head/color/image_raw"]) >= 3

        assert probe.spin_until(lambda: any(s.level == DiagnosticStatus.ERROR for s in diagnostics), 10.0)
        report = next(s for s in diagnostics if s.level == DiagnosticStatus.ERROR)
        assert f"disk_full: ENOSPC (No space left on device) writing {path}" in report.message
        assert f"MB free in {disk}" in report.message
        assert {v.key: v.value for v in report.values}["error"].startswith("disk_full: ENOSPC")

        answered = time.monotonic()
        reply = probe.call_service(stop, SetBool.Request(data=True))
        assert not reply.success and "episode_000000 ended disk_full" in reply.message
        filler = fill(disk)
        reply = probe.call_service(start, Trigger.Request())
        assert not reply.success and "No space left on device" in reply.message
        assert time.monotonic() - answered < 10
        filler.unlink()
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - interrupted < 5
    finally:
        probe.close()
        if process.poll() is None:
            process.kill()
            process.wait()
