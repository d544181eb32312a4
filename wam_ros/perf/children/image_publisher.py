"""COUNT rgb8 images at 30 Hz on `bench_image`, stamped at publish, once a subscriber is matched.

`python -m wam_ros.perf.children.image_publisher --count N --width W --height H`
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="image_publisher")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from wam_ros.ros.conversions import image_msg, to_time
    from wam_ros.ros.qos import IMAGE_QOS

    rclpy.init()
    node = rclpy.create_node("bench_image_publisher")
    pub = node.create_publisher(Image, "bench_image", IMAGE_QOS)
    image = np.zeros((args.height, args.width, 3), np.uint8)
    while pub.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(0.5)
    for _ in range(args.count):
        pub.publish(image_msg(image, "rgb8", to_time(time.time()), "f"))
        time.sleep(1 / 30)


if __name__ == "__main__":
    main()
