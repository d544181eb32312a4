"""The AgileX's joint states (sinusoids) at a fixed rate from a common start time.

`python -m wam_ros.perf.children.joint_state_publisher --duration S --rate HZ`
"""

from __future__ import annotations

import argparse
import subprocess
import time


def start(duration: float, rate: float, env: dict[str, str]) -> subprocess.Popen:
    """This program, started from a benchmark (wam_ros.perf.children.start)."""
    from wam_ros.perf.children import start

    return start("joint_state_publisher", "--duration", duration, "--rate", rate, env=env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="joint_state_publisher")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import rclpy
    from sensor_msgs.msg import JointState

    from wam_ros.config import load_robot_config
    from wam_ros.perf.children import await_start, sleep_until
    from wam_ros.ros.conversions import to_time
    from wam_ros.ros.qos import JOINT_STATE_QOS

    duration, rate = args.duration, args.rate
    names = load_robot_config("agilex").joint_names
    rclpy.init()
    node = rclpy.create_node("bench_joint_states")
    pub = node.create_publisher(JointState, "joint_states", JOINT_STATE_QOS)
    while pub.get_subscription_count() == 0:
        time.sleep(0.01)
    t0 = await_start()
    k = 0
    while t0 + k / rate <= t0 + duration:
        sleep_until(t0 + k / rate)
        msg = JointState(name=names, position=np.sin(np.arange(len(names)) + k / rate).tolist())
        msg.header.stamp = to_time(time.time())
        pub.publish(msg)
        k += 1
    print(k)


if __name__ == "__main__":
    main()
