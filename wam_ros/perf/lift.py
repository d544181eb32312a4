"""`wam-ros bench lift`: lifting predicted depth and colour into a PointCloud2, against copying the bytes."""

from __future__ import annotations

import time

import numpy as np


def bench_lift(repeats: int = 15, views: int = 3, frames: int = 8, height: int = 256, width: int = 320) -> dict:
    """Predicted depth + colour (views x frames x height x width, 10 % without depth) lifted into the
    base frame and packed as a PointCloud2, against numpy copying the same bytes (the images in, and
    the cloud's payload out), interleaved in one run. The process tunes malloc like the nodes, and
    lifts into the same buffer each time, as the policy node does."""
    import torch

    from wam_ros.geometry.lifting import lift
    from wam_ros.memory import keep_freed_memory
    from wam_ros.ros.conversions import pointcloud_msg, to_time

    keep_freed_memory()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 2.0, (views, frames, height, width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = 0.0
    rgb = rng.integers(0, 255, (views, frames, height, width, 3), dtype=np.uint8)
    K = np.tile(
        np.array([[300.0, 0.0, (width - 1) / 2], [0.0, 300.0, (height - 1) / 2], [0.0, 0.0, 1.0]]), (views, 1, 1)
    )
    poses = np.tile(np.eye(4), (frames, views, 1, 1))
    poses[..., :3, 3] = rng.normal(0.0, 0.5, (frames, views, 3))
    cloud = lift(depth, rgb, K, poses)
    payload = np.frombuffer(cloud.buffer, np.uint8)
    timings: dict[str, list[float]] = {"lift_and_pack": [], "copy_images": [], "copy_cloud_payload": []}
    # copying the cloud: its bytes (a plain memory copy; numpy copies structured dtypes field by field)
    for _ in range(repeats):
        for name, run in (
            ("lift_and_pack", lambda: pointcloud_msg(lift(depth, rgb, K, poses, out=cloud), to_time(0.0), "base")),
            ("copy_images", lambda: (depth.copy(), rgb.copy())),
            ("copy_cloud_payload", lambda: payload.copy()),
        ):
            start = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - start) * 1e3)
    median = {name: float(np.median(values)) for name, values in timings.items()}
    return {
        "input": f"{views} views x {frames} frames x {width}x{height} float32 depth + rgb8",
        "points": len(cloud),
        "points_with_depth": int(np.isfinite(cloud.data["z"]).sum()),
        "image_bytes_mb": round((depth.nbytes + rgb.nbytes) / 1e6, 1),
        "cloud_bytes_mb": round(payload.nbytes / 1e6, 1),
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "ratio_to_copying_the_images": round(median["lift_and_pack"] / median["copy_images"], 2),
        "ratio_to_copying_the_cloud": round(median["lift_and_pack"] / median["copy_cloud_payload"], 2),
        "torch_threads": torch.get_num_threads(),
        "goal": "lift_and_pack <= 4x the numpy copy of the same bytes",
    }
