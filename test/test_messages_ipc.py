"""Custom messages round-trip between two processes over Fast DDS."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent("""
    import time, rclpy
    from wam_ros.msg import ActionChunk
    rclpy.init()
    node = rclpy.create_node("chunk_pub")
    pub = node.create_publisher(ActionChunk, "chunks", 10)
    msg = ActionChunk(chunk_id=42, joint_names=["left_joint1", "right_joint1"], horizon=3, dt=1 / 15,
                      positions=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], expert=1, value=0.75)
    end = time.time() + 20
    while time.time() < end:
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.05)
""")


def test_action_chunk_crosses_processes():
    import rclpy

    from wam_ros.msg import ActionChunk

    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER])
    rclpy.init()
    try:
        node = rclpy.create_node("chunk_sub")
        got = []
        node.create_subscription(ActionChunk, "chunks", got.append, 10)
        import time

        end = time.time() + 15
        while not got and time.time() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got, "no ActionChunk received from the publisher process"
        msg = got[0]
        assert msg.chunk_id == 42 and msg.horizon == 3
        assert list(msg.positions) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        assert list(msg.joint_names) == ["left_joint1", "right_joint1"]
        assert abs(msg.value - 0.75) < 1e-6
    finally:
        pub.kill()
        rclpy.try_shutdown()
