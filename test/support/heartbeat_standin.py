"""The supervisor's heartbeat alone (50 Hz on supervisor/heartbeat), as a process a test can kill."""

import rclpy
from std_msgs.msg import Header

from wam_ros.ros.qos import HEARTBEAT_QOS, HEARTBEAT_TOPIC

if __name__ == "__main__":
    rclpy.init()
    node = rclpy.create_node("heartbeat_standin")
    pub = node.create_publisher(Header, HEARTBEAT_TOPIC, HEARTBEAT_QOS)
    node.create_timer(0.02, lambda: pub.publish(Header(stamp=node.get_clock().now().to_msg())))
    rclpy.spin(node)
