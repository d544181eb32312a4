"""`wam-ros bench sim`: simulator and message-conversion costs, measured side by side."""

from __future__ import annotations

from wam_ros.perf.common import median_ms


def bench_sim(robot: str = "agilex", repeats: int = 30) -> dict:
    from wam_ros.config import load_robot_config
    from wam_ros.robots.urdf import generate_urdf
    from wam_ros.ros.conversions import image_msg, to_time
    from wam_ros.sim.world import SimWorld

    cfg = load_robot_config(robot)
    world = SimWorld(cfg, generate_urdf(cfg))
    try:
        frame = world.render("head")
        stamp = to_time(0.0)
        fast = median_ms(lambda: image_msg(frame.rgb, "rgb8", stamp, "f"), repeats)
        naive = median_ms(lambda: frame.rgb.ravel().tolist(), repeats)
        result = {
            "robot": robot,
            "image": f"{world.config.width}x{world.config.height}",
            "physics_step_10ms_ms": median_ms(lambda: world.step(0.01), repeats),
            "render_3_cameras_rgbd_ms": median_ms(world.render_all, repeats),
            "rgb_to_msg_fast_ms": fast,
            "rgb_to_msg_tolist_ms": naive,
            "tolist_over_fast": naive / fast,
        }
    finally:
        world.close()
    return result
