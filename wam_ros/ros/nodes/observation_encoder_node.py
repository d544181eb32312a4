"""observation_encoder_node (split:=robot): the robot side's end of the link to a policy host.

In:  observations (MultiViewRGBD from sync_node), policy/observation_request (latched: the cameras
     and image size the policy needs).
Out: observations/compressed (CompressedMultiViewRGBD: those cameras resized and compressed,
     wam_ros.sync.link_codec), /diagnostics (bytes per set, encoding time, sets dropped).

Until a policy has asked, nothing crosses the link: whole sets would not fit it. Each set is
encoded as it arrives; only the newest matters to the policy, so a set that arrives while the
previous one is still encoding replaces nothing and is simply the next one taken (queue depth 1).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from wam_ros.data.images import ImageError
from wam_ros.msg import CompressedMultiViewRGBD, MultiViewRGBD, ObservationRequest
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.link_conversions import compact_multiview_msg
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import DIAGNOSTICS_QOS, LATCHED_QOS
from wam_ros.sync.link_codec import COLOR_CODECS, LinkCodec

# Only the newest set matters on either side of the link; reliable, so a lost fragment is resent.
NEWEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class ObservationEncoderParams:
    color_codec: str = param(
        "jpeg",
        "Colour compression on the link: jpeg (lossy) or png (lossless); depth is always lossless compressedDepth PNG",
        choices=COLOR_CODECS,
    )
    jpeg_quality: int = param(90, "JPEG quality", range_=(1, 100))


class ObservationEncoderNode(Node):
    def __init__(self, node_name: str = "observation_encoder", **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = declare_params(self, ObservationEncoderParams)
        self.codec = LinkCodec(color=self.params.color_codec, jpeg_quality=self.params.jpeg_quality)
        self._request: ObservationRequest | None = None
        self._sizes: deque[int] = deque(maxlen=100)
        self._encode_ms: deque[float] = deque(maxlen=100)
        self._sent = diag.RateMeter(window=5.0)
        self._rejected = 0
        self._last_problem = ""
        self.pub = self.create_publisher(CompressedMultiViewRGBD, "observations/compressed", NEWEST_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_subscription(ObservationRequest, "policy/observation_request", self._on_request, LATCHED_QOS)
        self.create_subscription(MultiViewRGBD, "observations", self._on_observation, NEWEST_QOS)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_request(self, msg: ObservationRequest) -> None:
        if not msg.camera_names or not (1 <= msg.height <= 8192 and 1 <= msg.width <= 8192):
            self._last_problem = (
                f"ignored observation request: cameras {list(msg.camera_names)}, {msg.width}x{msg.height}"
            )
            self.get_logger().error(self._last_problem)
            return
        self._request = msg
        self.get_logger().info(
            f"policy asks for {list(msg.camera_names)} at {msg.width}x{msg.height}: "
            f"sending them on observations/compressed ({self.codec.color} colour)"
        )

    def _on_observation(self, msg: MultiViewRGBD) -> None:
        request = self._request
        if request is None:
            return
        start = time.perf_counter()
        try:
            out = compact_multiview_msg(msg, list(request.camera_names), (request.height, request.width), self.codec)
        except (ImageError, ValueError) as exc:  # a malformed set, or one without a requested camera
            self._rejected += 1
            self._last_problem = str(exc)
            self.get_logger().warn(f"observation not sent: {exc}", throttle_duration_sec=10.0)
            return
        self._encode_ms.append((time.perf_counter() - start) * 1e3)
        self._sizes.append(sum(len(i.data) for i in (*out.color, *out.depth)))
        self.pub.publish(out)
        self._sent.tick(time.monotonic())

    def _publish_diagnostics(self) -> None:
        request = self._request
        values: dict[str, object] = {
            "sets_sent": self._sent.count,
            "rate_hz": round(self._sent.rate(time.monotonic()), 2),
            "sets_rejected": self._rejected,
            "color_codec": self.codec.color,
        }
        if self._sizes:
            values["payload_bytes_per_set_median"] = sorted(self._sizes)[len(self._sizes) // 2]
            values["encode_ms_median"] = round(sorted(self._encode_ms)[len(self._encode_ms) // 2], 2)
        if self._last_problem:
            values["last_problem"] = self._last_problem
        if request is None:
            level, message = diag.WARN, "waiting for a policy's observation request (policy/observation_request)"
        else:
            values["request"] = f"{list(request.camera_names)} {request.width}x{request.height}"
            level, message = diag.OK, "sending observation sets"
        status = diag.status(
            f"{self.get_name()}: observation link", self.get_fully_qualified_name(), level, message, values
        )
        self.diag_pub.publish(diag.array_msg(self.get_clock().now().to_msg(), [status]))


NODE_CLASS = ObservationEncoderNode


def main(args: list[str] | None = None) -> int:
    return run_node(ObservationEncoderNode, args)
