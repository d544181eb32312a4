"""A TienKung stand-in for test_arm_bridge_node.py, run as its own process: publishes the arm
status (motor ids 11-18, 21-28 as JointState names) at 100 Hz and moves each motor towards the
last command on /arm/cmd_ctrl at a bounded speed. Touching the file PAUSE_FILE silences it."""

import os
import sys

import numpy as np
import rclpy
from sensor_msgs.msg import JointState

from wam_ros.config import load_robot_config
from wam_ros.robots.tienkung import DEFAULT_MOTOR_IDS
from wam_ros.ros.qos import COMMAND_QOS, JOINT_STATE_QOS

pause_file = sys.argv[1]
robot = load_robot_config("tienkung")
home = robot.home_positions()
ids = [str(DEFAULT_MOTOR_IDS[n]) for n in robot.joint_names]
q = np.array([home[n] for n in robot.joint_names])
target = q.copy()
rclpy.init()
node = rclpy.create_node("tienkung_peer")
status = node.create_publisher(JointState, "/arm/status", JOINT_STATE_QOS)


def on_command(msg: JointState) -> None:
    for name, value in zip(msg.name, msg.position):
        target[ids.index(name)] = value


def tick() -> None:
    global q
    q = q + np.clip(target - q, -0.02, 0.02)  # 2 rad/s at 100 Hz
    if not os.path.exists(pause_file):
        status.publish(JointState(name=ids, position=q.tolist(), velocity=[0.0] * len(ids)))


node.create_subscription(JointState, "/arm/cmd_ctrl", on_command, COMMAND_QOS)
node.create_timer(0.01, tick)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
