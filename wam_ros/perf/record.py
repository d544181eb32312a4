"""`wam-ros bench record`: recorder_node recording three camera processes and a joint state process."""

from __future__ import annotations

import os
import time
from pathlib import Path

from wam_ros.perf.children import camera_publisher, joint_state_publisher, start_at, wait_ready
from wam_ros.perf.common import process_usage


def bench_record(
    duration: float = 60.0, fps: float = 30.0, width: int = 640, height: int = 480, joint_rate: float = 200.0
) -> dict:
    """recorder_node (source raw) recording three camera processes (rgb8 + 16UC1 + camera_info,
    `fps`) and a 200 Hz joint state process: messages sent vs written to the bag, recorder CPU
    and MB/s, without compression and with JPEG/PNG compression, in one run."""
    import tempfile

    result = {
        "cameras": 3,
        "image": f"{width}x{height} rgb8 + 16UC1 + 2 camera_info",
        "fps": fps,
        "joint_state_rate": joint_rate,
        "seconds": duration,
        "goal": "dropped == 0",
    }
    with tempfile.TemporaryDirectory(prefix="wam_bench_record_", dir=os.environ.get("WAM_BENCH_DIR")) as tmp:
        for compression in ("none", "jpeg"):
            result[f"compression_{compression}"] = _record_run(
                Path(tmp) / compression, compression, duration, fps, width, height, joint_rate
            )
    return result


def _record_run(
    directory: Path, compression: str, duration: float, fps: float, width: int, height: int, joint_rate: float
) -> dict:
    import json
    import shutil
    import signal
    import subprocess
    import sys

    from wam_ros.config import CAMERA_NAMES
    from wam_ros.ros.bringup import apply_environment
    from wam_ros.ros.system import isolated_domain_id

    apply_environment()
    domain = isolated_domain_id(os.getpid() + len(compression))
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain)}
    recorder = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "recorder_node"),
            "--ros-args",
            "-p",
            "source:=raw",
            "-p",
            f"compression:={compression}",
            "-p",
            f"directory:={directory}",
            "-p",
            "autostart_episode:=true",
            "-p",
            "min_free_mb:=2048.0",
            "-p",
            "queue_mb:=2048.0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    publishers = []
    try:
        publishers = [camera_publisher.start(cam, duration, fps, width, height, env) for cam in CAMERA_NAMES]
        publishers.append(joint_state_publisher.start(duration, joint_rate, env))
        # each is matched with the recorder's subscriptions
        wait_ready(publishers, "a bench publisher failed to start")
        time.sleep(1.0)  # the episode starts once the recorder's clock runs (at once: wall clock)
        before = process_usage(recorder.pid)
        start_at(publishers, time.time() + 0.5)
        sent = [int(p.communicate(timeout=duration + 60)[0].strip() or 0) for p in publishers]
        time.sleep(2.0)  # the last messages reach the recorder
        after = process_usage(recorder.pid)
        recorder.send_signal(signal.SIGINT)  # Ctrl-C: the episode is closed (marked partial), counts written
        recorder.wait(timeout=120)
    finally:
        for p in [*publishers, recorder]:
            if p.poll() is None:
                p.kill()
    (episode_dir,) = [p for p in directory.iterdir() if p.is_dir()]
    episode = json.loads((episode_dir / "episode.json").read_text())
    written = {"image": 0, "camera_info": 0, "joint_states": 0, "other": 0}
    for topic, counts in episode["messages"].items():
        kind = next((k for k in ("image", "camera_info", "joint_states") if k in topic), "other")
        written[kind] += counts["written"]
    images_sent = 2 * sum(sent[:3])  # color + depth per camera frame, each with its camera_info
    bag_bytes = sum(f.stat().st_size for f in episode_dir.iterdir())
    cpu = (after["user_s"] - before["user_s"]) + (after["system_s"] - before["system_s"])
    shutil.rmtree(episode_dir)
    return {
        "images_sent": images_sent,
        "images_written": written["image"],
        "camera_infos_sent": images_sent,
        "camera_infos_written": written["camera_info"],
        "joint_states_sent": sent[3],
        "joint_states_written": written["joint_states"],
        "dropped": 2 * images_sent + sent[3] - written["image"] - written["camera_info"] - written["joint_states"],
        "recorder_dropped_in_queue": sum(c["dropped"] for c in episode["messages"].values()),
        "recorder_cpu_percent_of_one_core": round(100 * cpu / duration, 1),
        "bag_mb": round(bag_bytes / 2**20, 1),
        "mb_per_s_written": round(bag_bytes / 2**20 / duration, 1),
    }
