"""`wam-ros bench sync`: three camera processes, sync_node and a receiver, each in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wam_ros.perf.children import camera_publisher, start_at, wait_ready
from wam_ros.perf.common import process_usage


def bench_sync(duration: float = 10.0, fps: float = 30.0, width: int = 640, height: int = 480) -> dict:
    """Three camera publisher processes (color rgb8 + depth 16UC1 at `fps`), sync_node in its own
    process, and this process receiving the sets: complete-set ratio and latencies, with glibc's
    malloc defaults and then with the nodes' malloc tuning (wam_ros.memory), in one run. This order
    is fixed: the tuning cannot be undone in this (receiving) process."""
    from wam_ros.config import CAMERA_NAMES

    result = {
        "cameras": len(CAMERA_NAMES),
        "image": f"{width}x{height} rgb8 + 16UC1",
        "fps": fps,
        "ratio_counts": "complete sets received / frames each camera sent (all sent after discovery)",
        "goal": "complete_set_ratio >= 0.999, added p95 <= 3 ms, end-to-end p95 <= 15 ms",
    }
    result["glibc_malloc_defaults"] = _sync_run(duration, fps, width, height, malloc_tuning=False)
    result["wam_ros_malloc_tuning"] = _sync_run(duration, fps, width, height, malloc_tuning=True)
    return result


def _sync_run(duration: float, fps: float, width: int, height: int, malloc_tuning: bool) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray

    from wam_ros.config import CAMERA_NAMES
    from wam_ros.memory import DISABLE_VARIABLE, keep_freed_memory
    from wam_ros.msg import MultiViewRGBD
    from wam_ros.ros.bringup import apply_environment
    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.probe import ProbeNode
    from wam_ros.ros.qos import DIAGNOSTICS_QOS, EVERY_SET_QOS
    from wam_ros.ros.system import isolated_domain_id

    apply_environment()  # this process talks DDS too: the same transports as the nodes
    if malloc_tuning:
        keep_freed_memory()  # and receives like a node (wam_ros.ros.node_main)
    domain = isolated_domain_id(os.getpid() + malloc_tuning)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), DISABLE_VARIABLE: "1" if malloc_tuning else "0"}
    sync = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "sync_node"),
            "--ros-args",
            "-p",
            f"expected_fps:={fps}",
            "-p",
            "max_interval:=0.005",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = ProbeNode("bench_sync_receiver", domain)
    node = probe.node
    received: list[tuple[float, float, bool]] = []  # (receive time, set stamp, degraded)
    diagnostics: dict[str, str] = {}
    node.create_subscription(
        MultiViewRGBD,
        "observations",
        lambda m: received.append((time.time(), from_time(m.header.stamp), m.degraded)),
        EVERY_SET_QOS,
    )
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.update({v.key: v.value for s in m.status if "camera sync" in s.name for v in s.values}),
        DIAGNOSTICS_QOS,
    )
    cameras = []
    try:
        probe.spin_until(lambda: node.count_publishers("observations") > 0, 30.0)
        cameras = [camera_publisher.start(cam, duration, fps, width, height, env) for cam in CAMERA_NAMES]
        # each is matched with sync_node's subscriptions
        wait_ready(cameras, "a bench camera process failed to start")
        t0 = time.time() + 0.5  # every camera exposes on the same ticks from here
        start_at(cameras, t0)
        probe.spin_for(t0 + duration + 2.0 - time.time())
        sent = [int(p.communicate(timeout=30)[0].strip() or 0) for p in cameras]
        sync_usage = process_usage(sync.pid)
    finally:
        for p in cameras:
            if p.poll() is None:
                p.kill()
        sync.terminate()
        sync.wait(timeout=20)
        probe.close()
    latency = np.array([r - s for r, s, _ in received]) * 1e3 if received else np.array([np.nan])
    complete = sum(not degraded for _, _, degraded in received)
    expected = min(sent)  # the cameras started once matched: every tick should give a set
    return {
        "frames_per_camera": sent,
        "sets_published_by_sync_node": int(diagnostics.get("sets", "-1")),
        "sets_received": len(received),
        "complete_sets_received": complete,
        "sync_node_per_set": {
            "user_ms": 1e3 * sync_usage["user_s"] / max(len(received), 1),
            "system_ms": 1e3 * sync_usage["system_s"] / max(len(received), 1),
            "minor_page_faults": sync_usage["minor_faults"] / max(len(received), 1),
        },
        "complete_set_ratio": complete / max(expected, 1),
        "end_to_end_latency_ms": {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95))},
        "sync_added_latency_ms": {
            "p50": float(diagnostics.get("added_latency_p50_ms", "nan")),
            "p95": float(diagnostics.get("added_latency_p95_ms", "nan")),
        },
        "camera_stamp_to_sync_publish_ms": {
            "p50": float(diagnostics.get("age_at_publish_p50_ms", "nan")),
            "p95": float(diagnostics.get("age_at_publish_p95_ms", "nan")),
        },
    }
