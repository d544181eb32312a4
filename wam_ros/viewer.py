"""A live view in the browser where RViz is not installed (the pip set-up, a laptop, a remote
operator): the robot, the predicted and live 4D point clouds, the head camera and the value, served
by viser (ROS-free; viewer_node feeds it from the topics).

viser was chosen over rerun's web viewer because it is a Python server with a bundled web client:
one pip package, no separate viewer binary or wasm download, and the scene is updated in place
(rerun logs a growing recording, more than a live robot view needs).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import viser

from wam_ros.config import RobotConfig
from wam_ros.geometry.kinematics import Kinematics
from wam_ros.render_prediction import arm_chains, stick_figure, table_box
from wam_ros.robots.urdf import generate_urdf

VALUE_COLOR = "#d62dd6"  # the value curve (magenta: found in screenshots by the tests)
ROBOT_COLOR = (70, 70, 80)
CLOUD_POINT_SIZE = 0.006  # m


class WebViewer:
    def __init__(self, robot: RobotConfig, host: str = "0.0.0.0", port: int = 8080, value_window: int = 300):
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.port = self.server.get_port()
        self._kinematics = Kinematics(generate_urdf(robot))
        self._chains = arm_chains(self._kinematics)
        self._window = value_window
        self._values: tuple[list[float], list[float]] = ([], [])
        scene = self.server.scene
        scene.set_up_direction("+z")
        scene.add_grid("/grid", width=2.0, height=2.0, cell_size=0.1)
        centre, half = table_box(robot)
        scene.add_box("/table", color=(200, 170, 120), dimensions=tuple(2 * half), position=tuple(centre), opacity=0.35)
        self.server.initial_camera.position = (-1.2, 0.0, 1.1)
        self.server.initial_camera.look_at = (0.3, 0.0, 0.1)
        gui = self.server.gui
        gui.add_markdown(f"**wam_ros** live view: {robot.name}")
        self._plot = gui.add_uplot(
            data=(np.zeros(2), np.zeros(2)),
            series=({"label": "time (s)"}, {"label": "value", "stroke": VALUE_COLOR, "width": 3}),
            title="predicted value (task progress)",
            aspect=1.6,
            scales={"x": {"time": False}, "y": {"auto": False, "range": [0.0, 1.0]}},
        )
        self._image = None

    def set_joints(self, positions: Mapping[str, float]) -> None:
        """The robot as a stick figure (links as thick lines) at these joint positions."""
        for side, arm in zip(self._chains, stick_figure(self._kinematics, self._chains, positions)):
            segments = np.stack([arm[:-1], arm[1:]], axis=1).astype(np.float32)
            self.server.scene.add_line_segments(f"/robot/{side}", points=segments, colors=ROBOT_COLOR, line_width=8.0)

    def set_cloud(self, name: str, xyz: np.ndarray, rgb: np.ndarray) -> None:
        """A point cloud (N, 3) metres in the base frame, (N, 3) uint8 colours; non-finite points dropped."""
        keep = np.isfinite(xyz).all(axis=1)
        self.server.scene.add_point_cloud(
            f"/clouds/{name}",
            points=xyz[keep].astype(np.float32),
            colors=rgb[keep].astype(np.uint8),
            point_size=CLOUD_POINT_SIZE,
        )

    def add_value(self, t: float, value: float) -> None:
        times, values = self._values
        times.append(float(t))
        values.append(float(value))
        del times[: -self._window], values[: -self._window]
        if len(times) >= 2:
            self._plot.data = (np.asarray(times), np.asarray(values))

    def set_image(self, rgb: np.ndarray) -> None:
        if self._image is None:
            self._image = self.server.gui.add_image(rgb, label="head camera", format="jpeg")
        else:
            self._image.image = rgb

    def close(self) -> None:
        self.server.stop()
