"""Explicit QoS profiles shared by every node (see ENVIRONMENT notes: reliable + LARGE_DATA)."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Camera images: reliable with a short queue; Fast DDS LARGE_DATA makes this both lossless and fast.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Subscribers that need every observation set (recorder, benchmarks): KEEP_LAST overwrites the
# oldest sets while a consumer is descheduled, and 5 sets (167 ms at 30 Hz) were lost now and then
# on a loaded 2-core machine; one second of sets rides that out.
EVERY_SET_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=30, reliability=ReliabilityPolicy.RELIABLE)
# Small high-rate streams a consumer must not lose (the recorder's joint states at 200 Hz).
EVERY_MESSAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=400, reliability=ReliabilityPolicy.RELIABLE)
# CameraInfo follows the image stream one-for-one.
CAMERA_INFO_QOS = IMAGE_QOS
JOINT_STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# /clock: a reliable publisher matches both reliable and best-effort subscribers.
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Latched descriptions (robot_description-like data): late joiners still get the last value.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# The supervisor's heartbeat to the arm bridges (std_msgs/Header on supervisor/heartbeat): only the
# newest beat matters; a bridge that hears none within its command_timeout holds the arms.
HEARTBEAT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
HEARTBEAT_TOPIC = "supervisor/heartbeat"


def bag_profile(qos: QoSProfile) -> dict:
    """A publisher's offered QoS in rosbag2's metadata form (rmw enum values; durations as
    {sec, nsec}), what `ros2 bag record` stores so that `ros2 bag play` offers the same."""

    def duration(value) -> dict:
        sec, nsec = divmod(int(value.nanoseconds), 1_000_000_000)
        return {"sec": sec, "nsec": nsec}

    return {
        "history": int(qos.history),
        "depth": int(qos.depth),
        "reliability": int(qos.reliability),
        "durability": int(qos.durability),
        "deadline": duration(qos.deadline),
        "lifespan": duration(qos.lifespan),
        "liveliness": int(qos.liveliness),
        "liveliness_lease_duration": duration(qos.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(qos.avoid_ros_namespace_conventions),
    }
