"""Messages as rosbags serializes them, for the recorder's and the bag tools' tests without ROS:
joint states and images at a given time, the topics of a recorded episode, and reading a bag back.
Shared by test_data_core.py and test_recorder_disk_full.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader

from wam_ros.data.bag import typestore

STORE = typestore()
T = STORE.types
NAMES = ["left_joint1", "left_gripper"]


def header(t: float, frame: str = "") -> object:
    sec = int(t)
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9)), frame_id=frame
    )


def joint_state(t: float) -> bytes:
    msg = T["sensor_msgs/msg/JointState"](
        header=header(t),
        name=NAMES,
        position=np.array([np.sin(t), 0.04 * (t % 2 < 1)]),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(STORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def image_message(t: float, array: np.ndarray, encoding: str) -> object:
    data = np.ascontiguousarray(array).view(np.uint8).ravel()
    return T["sensor_msgs/msg/Image"](
        header=header(t, "cam"),
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=data.size // array.shape[0],
        data=data,
    )


def image(t: float, array: np.ndarray, encoding: str) -> bytes:
    return bytes(STORE.serialize_cdr(image_message(t, array, encoding), "sensor_msgs/msg/Image"))


def frames_at(t: float) -> tuple[np.ndarray, np.ndarray]:
    k = int(round(t * 10))
    rgb = np.full((24, 32, 3), k, np.uint8)
    rgb[:, :, 1] = np.arange(32, dtype=np.uint8)
    depth = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) + 100 * k
    return rgb, depth


TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/head/color/image_raw": "sensor_msgs/msg/Image",
    "/head/aligned_depth_to_color/image_raw": "sensor_msgs/msg/Image",
}


def read_all(path: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    with AnyReader([path], default_typestore=STORE) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(bytes(raw))
    return out
