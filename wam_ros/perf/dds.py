"""`wam-ros bench dds`: the DDS floor, one image from one Python process to another."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from wam_ros.perf.children import command


def bench_dds(count: int = 150, width: int = 640, height: int = 480) -> dict:
    """One rgb8 image from one Python process to another at 30 Hz (stamp at publish to receipt),
    with Fast DDS's builtin transports and with the package's profile (config/fastdds.xml)."""
    from sensor_msgs.msg import Image

    from wam_ros.ros.conversions import from_time
    from wam_ros.ros.probe import ProbeNode
    from wam_ros.ros.qos import IMAGE_QOS
    from wam_ros.ros.system import DDS_VARIABLES, dds_environment, isolated_domain_id

    result = {"image": f"{width}x{height} rgb8", "rate_hz": 30, "messages": count}
    variants = {
        "DEFAULT": {},
        "LARGE_DATA": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
        "wam_ros_profile": dds_environment({}),
    }
    saved = {name: os.environ.pop(name) for name in DDS_VARIABLES if name in os.environ}
    try:
        for k, (variant, variables) in enumerate(variants.items()):
            for name in DDS_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(variables)  # read when the context starts
            domain = isolated_domain_id(os.getpid() + k)
            publisher = subprocess.Popen(
                command("image_publisher", "--count", count, "--width", width, "--height", height),
                env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
            )
            probe = ProbeNode("bench_image_receiver", domain)
            latencies: list[float] = []
            probe.node.create_subscription(
                Image, "bench_image", lambda m: latencies.append(time.time() - from_time(m.header.stamp)), IMAGE_QOS
            )
            try:
                probe.spin_until(lambda: publisher.poll() is not None, 60.0)
                probe.spin_for(0.2)
            finally:
                if publisher.poll() is None:
                    publisher.kill()
                probe.close()
            ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
            result[variant] = {
                "received": len(latencies),
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
            }
    finally:
        for name in DDS_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(saved)
    return result
