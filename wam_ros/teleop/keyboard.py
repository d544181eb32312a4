"""Keyboard teleoperation (ROS-free): keys to twists, gripper and episode commands (KEY_MAP,
which the teleop node prints when it starts). A key press moves for `hold` seconds (terminal
auto-repeat keeps a held key moving)."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from dataclasses import dataclass, field

import numpy as np

MOTION_KEYS = {
    "w": (0, 1),
    "s": (0, -1),
    "a": (1, 1),
    "d": (1, -1),
    "r": (2, 1),
    "f": (2, -1),
    "u": (3, 1),
    "o": (3, -1),
    "i": (4, 1),
    "k": (4, -1),
    "j": (5, 1),
    "l": (5, -1),
}
EPISODE_KEYS = {" ": "toggle", "x": "failure"}
KEY_MAP = """keyboard teleop (this terminal):
  w/s  +x/-x    a/d  +y/-y    r/f  +z/-z     move the active arm's TCP (base frame)
  u/o  +rx/-rx  i/k  +ry/-ry  j/l  +rz/-rz   rotate it
  g      toggle the active arm's gripper     tab  switch the active arm
  space  start an episode / end it as a success    x  end it as a failure"""


@dataclass
class KeyboardState:
    hold: float = 0.15
    side: str = "left"
    gripper_open: dict[str, bool] = field(default_factory=lambda: {"left": True, "right": True})
    _active: dict[int, tuple[float, float]] = field(default_factory=dict)  # axis -> (sign, until)

    def press(self, key: str, now: float) -> str | None:
        """Applies one key; returns an episode command (toggle / failure) for the recorder, if any."""
        if key in MOTION_KEYS:
            axis, sign = MOTION_KEYS[key]
            self._active[axis] = (float(sign), now + self.hold)
        elif key == "g":
            self.gripper_open[self.side] = not self.gripper_open[self.side]
        elif key == "\t":
            self.side = "right" if self.side == "left" else "left"
            self._active.clear()
        return EPISODE_KEYS.get(key)

    def twist(self, now: float) -> np.ndarray:
        out = np.zeros(6)
        for axis, (sign, until) in list(self._active.items()):
            if now < until:
                out[axis] = sign
            else:
                del self._active[axis]
        return out


class Terminal:
    """Raw, non-blocking key reads from a terminal (restored on close)."""

    def __init__(self, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise RuntimeError(
                "keyboard teleop needs a terminal on stdin (run the node in its own terminal, "
                "e.g. `ros2 run wam_ros teleop_node --ros-args -p source:=keyboard`)"
            )
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def keys(self) -> str:
        out = ""
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 64).decode(errors="ignore")
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
