"""One bench camera: color rgb8 + aligned depth 16UC1 with their camera_info, random images, on the
ticks of a common clock (hardware-synced cameras: every camera exposes on the same tick).

`python -m wam_ros.perf.children.camera_publisher CAMERA --duration S --fps HZ --width W --height H`
"""

from __future__ import annotations

import argparse
import subprocess
import time


def start(camera: str, duration: float, fps: float, width: int, height: int, env: dict[str, str]) -> subprocess.Popen:
    """This program for `camera`, started from a benchmark (wam_ros.perf.children.start)."""
    from wam_ros.perf.children import start

    return start(
        "camera_publisher", camera, "--duration", duration, "--fps", fps, "--width", width, "--height", height, env=env
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="camera_publisher")
    parser.add_argument("camera")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--fps", type=float, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from wam_ros.memory import keep_freed_memory
    from wam_ros.perf.children import await_start, sleep_until
    from wam_ros.ros.conversions import camera_info_msg, image_msg, to_time
    from wam_ros.ros.qos import CAMERA_INFO_QOS, IMAGE_QOS

    keep_freed_memory()  # like our camera nodes (wam_ros.ros.node_main)
    cam, duration, fps, w, h = args.camera, args.duration, args.fps, args.width, args.height
    rclpy.init()
    node = rclpy.create_node(f"{cam}_bench_camera")
    pubs = [
        node.create_publisher(t, f"{cam}/{topic}", q)
        for t, topic, q in (
            (Image, "color/image_raw", IMAGE_QOS),
            (CameraInfo, "color/camera_info", CAMERA_INFO_QOS),
            (Image, "aligned_depth_to_color/image_raw", IMAGE_QOS),
            (CameraInfo, "aligned_depth_to_color/camera_info", CAMERA_INFO_QOS),
        )
    ]
    rng = np.random.default_rng(abs(hash(cam)) % 1000)
    color = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = rng.integers(300, 3000, (h, w), dtype=np.uint16)
    K = np.array([[600.0, 0, w / 2], [0, 600.0, h / 2], [0, 0, 1]])
    frame_id = f"{cam}_color_optical_frame"
    while any(p.get_subscription_count() == 0 for p in pubs):  # frames before discovery are lost
        time.sleep(0.01)
    t0 = await_start()  # the common first tick, once every camera is matched
    sent = 0
    while t0 + sent / fps <= t0 + duration:
        tick = t0 + sent / fps
        sleep_until(tick)
        stamp = to_time(tick + rng.uniform(-0.0005, 0.0005))
        info = camera_info_msg(K, w, h, stamp, frame_id)
        pubs[0].publish(image_msg(color, "rgb8", stamp, frame_id))
        pubs[1].publish(info)
        pubs[2].publish(image_msg(depth, "16UC1", stamp, frame_id))
        pubs[3].publish(info)
        sent += 1
    print(sent)


if __name__ == "__main__":
    main()
