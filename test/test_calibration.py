"""The calibration check: wrist frames projected into the head camera land on the rendered arms."""

import numpy as np
import pytest
from PIL import Image

from wam_ros.calibration import calibration_check
from wam_ros.config import load_robot_config
from wam_ros.robots.urdf import generate_urdf
from wam_ros.sim.world import SimWorld


@pytest.mark.parametrize("robot", ["agilex", "franka", "tienkung"])
def test_projected_flanges_land_on_the_rendered_arms(robot, tmp_path):
    result = calibration_check(robot, tmp_path / "check.png")
    cfg = load_robot_config(robot)
    world = SimWorld(cfg, generate_urdf(cfg))
    try:
        world.reset()
        frame = world.render("head")
    finally:
        world.close()
    assert Image.open(tmp_path / "check.png").size == tuple(result["size"])
    for side in ("left", "right"):
        p = result["projections"][f"{side}_flange"]
        assert p["in_view"], (robot, side, p)
        u, v = int(round(p["u"])), int(round(p["v"]))
        window = frame.depth[max(v - 6, 0):v + 7, max(u - 6, 0):u + 7]
        # the flange sits inside the last link: the rendered surface there is at about its depth
        assert np.min(np.abs(window - p["depth_m"])) < 0.08, (robot, side, p)


def test_an_image_needs_its_intrinsics(tmp_path):
    with pytest.raises(ValueError, match="K: the head camera intrinsics are needed"):
        calibration_check("agilex", tmp_path / "x.png", image=np.zeros((10, 10, 3), np.uint8))
