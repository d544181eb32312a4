"""3Dconnexion SpaceMouse over HID (ROS-free): report parsing and the device reader.

Reports (USB HID, little-endian int16 axes, about +-350 at full deflection):
  id 1: translation x, y, z (6 bytes), or all six axes (12 bytes) on newer models
  id 2: rotation rx, ry, rz
  id 3: buttons bitmask (bit 0 left, bit 1 right)
The device's axes are mapped to the robot base frame: push forward = +x, left = +y, up = +z.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

VENDOR_IDS = (0x046D, 0x256F)  # Logitech-era and 3Dconnexion devices
FULL_SCALE = 350.0
# device (x right, y toward the user, z down) -> base (x forward, y left, z up)
AXIS_MAP = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], dtype=float)


class SpaceMouseError(RuntimeError):
    pass


@dataclass
class SpaceMouseState:
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    buttons: int = 0

    def update(self, report: bytes) -> None:
        """Applies one raw HID report (the report id first)."""
        if not report:
            return
        kind = report[0]
        if kind == 1 and len(report) >= 13:
            values = np.array(struct.unpack_from("<6h", report, 1), dtype=float) / FULL_SCALE
            self.translation, self.rotation = values[:3], values[3:]
        elif kind == 1 and len(report) >= 7:
            self.translation = np.array(struct.unpack_from("<3h", report, 1), dtype=float) / FULL_SCALE
        elif kind == 2 and len(report) >= 7:
            self.rotation = np.array(struct.unpack_from("<3h", report, 1), dtype=float) / FULL_SCALE
        elif kind == 3 and len(report) >= 2:
            self.buttons = report[1]
        else:
            raise SpaceMouseError(f"unexpected HID report {bytes(report).hex()} (id {kind}, {len(report)} bytes)")

    def twist(self) -> np.ndarray:
        """(vx, vy, vz, wx, wy, wz) in the base frame, each clipped to [-1, 1]."""
        return np.clip(np.concatenate([AXIS_MAP @ self.translation, AXIS_MAP @ self.rotation]), -1.0, 1.0)

    def button(self, index: int) -> bool:
        return bool(self.buttons >> index & 1)


class SpaceMouseDevice:
    """The first SpaceMouse found through hidapi (needs read access to its /dev/hidraw node)."""

    def __init__(self, path: bytes | None = None):
        import hid

        devices = [d for d in hid.enumerate() if d["vendor_id"] in VENDOR_IDS]
        if path is None and not devices:
            raise SpaceMouseError(
                "no SpaceMouse found (vendor 046d/256f); plug it in and check /dev/hidraw* permissions"
            )
        self.device = hid.device()
        try:
            self.device.open_path(path or devices[0]["path"])
        except OSError as exc:
            raise SpaceMouseError(f"cannot open the SpaceMouse: {exc} (udev rule for /dev/hidraw*?)") from None
        self.device.set_nonblocking(True)
        self.state = SpaceMouseState()

    def poll(self) -> SpaceMouseState:
        """Applies every report waiting in the device; never blocks."""
        while True:
            report = self.device.read(64)
            if not report:
                return self.state
            self.state.update(bytes(report))

    def close(self) -> None:
        self.device.close()
