"""arm_bridge_node with emulated Pipers, plus ~/emulator_fault (std_msgs/String, JSON
{"port": ..., attribute: value}) that sets attributes of an emulated Piper (arm_status,
err_code, reading_offset). The emulators live in the node's process (python-can's virtual bus
is in-process), so tests that inject driver faults run the node through this program:
`python injectable_bridge.py --ros-args -p robot:=agilex -p agilex.emulate:=true ...`
"""

from __future__ import annotations

import json
import sys

import numpy as np
from std_msgs.msg import String

from wam_ros.ros.node_main import run_node
from wam_ros.ros.nodes.arm_bridge_node import ArmBridgeNode


class InjectableBridge(ArmBridgeNode):
    def __init__(self) -> None:
        super().__init__()
        self.create_subscription(String, "~/emulator_fault", self._inject, 10)

    def _inject(self, msg: String) -> None:
        request = json.loads(msg.data)
        port = request.pop("port")
        emulator = next(e for e in self.backends.emulators if e.channel == port)
        for name, value in request.items():
            setattr(emulator, name, np.array(value, dtype=float) if isinstance(value, list) else value)


if __name__ == "__main__":
    sys.exit(run_node(InjectableBridge, sys.argv))
