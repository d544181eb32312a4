"""sync_node: one MultiViewRGBD per matched set of N cameras x (color, depth).

Subscribes, per camera, to the official drivers' topics (<cam>/color/image_raw,
<cam>/color/camera_info, <cam>/<depth_topic>, and its camera_info), whether they come from our
camera nodes, the simulator or realsense2_camera / orbbec_camera, and publishes `observations`: the
sets that wam_ros.sync.assembly matches (approximate-time policy), pairs with their CameraInfo and
checks.
Bad input is dropped before use, with a reason logged (throttled per cause) and counted in
/diagnostics: an image whose fields do not describe its data (no pixels, wrong encoding, step or
data size), a CameraInfo that is not a calibrated camera, stamps going backwards; at matching time
an image size not matching its CameraInfo, or a missing CameraInfo. The checks are the ones
policy_node applies to the sets (wam_ros.ros.conversions).
A camera that stops is left out: the sets of the other cameras are published marked degraded;
when it comes back it is re-admitted with its next image, and the other cameras keep what they had
queued. /diagnostics says ERROR, with each camera's age, when every camera has stopped, and names
every camera whose CameraInfo never came.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from wam_ros.config import CAMERA_NAMES
from wam_ros.data.images import ImageError
from wam_ros.msg import MultiViewRGBD
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import check_view, from_time, to_time
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare_params, param
from wam_ros.ros.qos import CAMERA_INFO_QOS, DIAGNOSTICS_QOS, IMAGE_QOS
from wam_ros.sync.assembly import (
    AssembledSet,
    AssemblyConfig,
    CameraCheck,
    CameraInfoRecord,
    ImageRecord,
    Outcome,
    PairedView,
    SetAssembler,
)

PROBLEM_LOG_PERIOD = 10.0  # s between warnings of one cause; every case is counted in /diagnostics


def _per_camera(declared: dict) -> list[float]:
    return [0.0] * len(declared["cameras"])


@dataclass(frozen=True)
class SyncParams:
    cameras: list[str] = param(list(CAMERA_NAMES), "Camera names (topic namespaces)")
    depth_topic: str = param(
        "aligned_depth_to_color/image_raw",
        "Depth image topic under each camera (aligned_depth_to_color/image_raw or depth/image_raw)",
    )
    expected_fps: float = param(15.0, "Camera frame rate, for the inter-message lower bound (Hz)", range_=(1.0, 120.0))
    max_interval: float = param(0.010, "Widest accepted set (s)", range_=(0.0001, 1.0))
    queue_size: int = param(10, "Queued messages per stream", range_=(1, 1000))
    # one value per camera: the defaults follow `cameras` (declare_params' defaults)
    color_delays: list[float] = param([0.0] * len(CAMERA_NAMES), "Fixed color delay per camera (s)")
    depth_delays: list[float] = param(
        [0.0] * len(CAMERA_NAMES), "Fixed depth delay per camera (s), e.g. Orbbec depth lags color"
    )
    camera_timeout: float = param(0.5, "A camera silent this long is left out (s)", range_=(0.01, 60.0))
    publish_rate: float = param(
        0.0, "Throttle output to this rate, keeping the freshest set (Hz; 0: every set)", range_=(0.0, 1000.0)
    )
    reliability: str = param(
        "auto",
        "Subscription reliability: auto matches each topic's publishers (waiting up to "
        "qos_wait s), or reliable / best_effort",
        choices=("auto", "reliable", "best_effort"),
    )
    qos_wait: float = param(3.0, "auto: how long to wait for a topic's publishers (s)", range_=(0.0, 60.0))
    frame_id: str = param("base", "frame_id of the published sets")


class SyncNode(Node):
    def __init__(self, node_name: str = "sync", **kwargs):
        super().__init__(node_name, **kwargs)
        one_per_camera = {"color_delays": _per_camera, "depth_delays": _per_camera}  # defaults
        p = self.params = declare_params(self, SyncParams, defaults=one_per_camera)
        self.cameras = list(p.cameras)

        self.assembly = SetAssembler(
            AssemblyConfig(
                tuple(self.cameras),
                p.max_interval,
                p.queue_size,
                0.5 / p.expected_fps,
                tuple(p.color_delays),
                tuple(p.depth_delays),
                p.camera_timeout,
            )
        )
        self.streams = self.assembly.streams
        self._problems: dict[str, int] = defaultdict(int)
        self._problem_logged: dict[str, float] = {}  # cause -> monotonic time of its last warning
        self._last_problem = ""
        self._rates = {s: diag.RateMeter() for s in self.streams}
        self._published = diag.RateMeter()
        self._ages: list[float] = []  # now - set stamp at publish (s)
        self._added: list[float] = []  # publish time - arrival of the set's last message (s)
        self._pending: tuple[MultiViewRGBD, float] | None = None  # the set to publish next, and its arrival

        self.pub = self.create_publisher(MultiViewRGBD, "observations", IMAGE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        depth_info_topic = p.depth_topic.rsplit("/", 1)[0] + "/camera_info"
        # (message type, topic, callback, QoS) still to subscribe; `auto` waits for each topic's publishers
        self._unsubscribed = []
        for cam in self.cameras:
            self._unsubscribed += [
                (Image, f"{cam}/color/image_raw", lambda m, c=cam: self._on_image(c, "color", m), IMAGE_QOS),
                (Image, f"{cam}/{p.depth_topic}", lambda m, c=cam: self._on_image(c, "depth", m), IMAGE_QOS),
                (
                    CameraInfo,
                    f"{cam}/color/camera_info",
                    lambda m, c=cam: self._on_info((c, "color"), m),
                    CAMERA_INFO_QOS,
                ),
                (
                    CameraInfo,
                    f"{cam}/{depth_info_topic}",
                    lambda m, c=cam: self._on_info((c, "depth"), m),
                    CAMERA_INFO_QOS,
                ),
            ]
        self._started = time.monotonic()
        self.reliabilities: dict[str, str] = {}
        self._subscribe_timer = self.create_timer(0.1, self._subscribe)
        self._subscribe()
        if p.publish_rate > 0:
            self.create_timer(1.0 / p.publish_rate, self._publish_pending)
        self._throttled = p.publish_rate > 0
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.05, self._check_cameras)

    def _subscribe(self) -> None:
        """Subscribe each topic with the reliability of its publishers (QoS must match: a reliable
        subscription receives nothing from a best-effort driver)."""
        waited = time.monotonic() - self._started
        remaining = []
        for msg_type, topic, callback, base in self._unsubscribed:
            if self.params.reliability == "auto":
                publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
                if not publishers and waited < self.params.qos_wait:
                    remaining.append((msg_type, topic, callback, base))
                    continue
                best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
            else:
                best_effort = self.params.reliability == "best_effort"
            qos = QoSProfile(
                depth=base.depth,
                history=base.history,
                reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            )
            self.create_subscription(msg_type, topic, callback, qos)
            self.reliabilities[topic] = "best_effort" if best_effort else "reliable"
        self._unsubscribed = remaining
        if not remaining:
            self.destroy_timer(self._subscribe_timer)

    # --- inputs ----------------------------------------------------------------------------
    def _problem(self, cause: str, detail: str) -> None:
        self._problems[cause] += 1
        self._last_problem = f"{cause}: {detail}"
        now = time.monotonic()
        if now - self._problem_logged.get(cause, -np.inf) >= PROBLEM_LOG_PERIOD:
            self._problem_logged[cause] = now
            self.get_logger().warn(
                f"{cause}: {detail} (dropped; {self._problems[cause]} so far, all counted in /diagnostics)"
            )

    def _on_image(self, cam: str, kind: str, msg: Image) -> None:
        now = time.monotonic()
        try:
            check_view(msg, kind)
            outcome = self.assembly.add_image(
                cam, kind, ImageRecord(_nanoseconds(msg.header.stamp), msg.width, msg.height, msg), now
            )
        except ImageError as exc:
            return self._problem(f"{cam}/{kind} {exc.check}", str(exc))
        self._rates[(cam, kind)].tick(now)
        self._handle(outcome)

    def _on_info(self, stream: tuple[str, str], info: CameraInfo) -> None:
        try:
            outcome = self.assembly.add_info(
                *stream, CameraInfoRecord(_nanoseconds(info.header.stamp), info.width, info.height, info.k, info)
            )
        except ImageError as exc:
            return self._problem(f"{stream[0]}/{stream[1]} {exc.check}", str(exc))
        self._handle(outcome)

    def _handle(self, outcome: Outcome) -> None:
        for rejection in outcome.rejections:
            self._problem(rejection.cause, rejection.detail)
        self._report_cameras(outcome.cameras)
        for assembled in outcome.sets:
            self._emit(assembled)

    # --- cameras and output -------------------------------------------------------------------
    def _check_cameras(self) -> None:
        self._report_cameras(self.assembly.check_cameras(time.monotonic()))

    def _report_cameras(self, check: CameraCheck) -> None:
        if check.fell_silent:
            self.get_logger().error(
                f"every camera silent for > {self.params.camera_timeout} s: no sets "
                f"(ages: {self.assembly.camera_ages(time.monotonic())})"
            )
        if check.left_out:
            self.get_logger().warn(
                f"cameras {list(check.left_out)} silent for > {self.params.camera_timeout} s: "
                "publishing the others, marked degraded",
                throttle_duration_sec=5.0,
            )

    def _emit(self, assembled: AssembledSet) -> None:
        msg = MultiViewRGBD(camera_names=self.cameras)
        for views in assembled.views.values():
            if views is None:  # a camera left out: empty views, stamp 0
                msg.color.append(Image())
                msg.depth.append(Image())
                msg.color_info.append(CameraInfo())
                msg.depth_info.append(CameraInfo())
                msg.stamps.append(to_time(0.0))
                continue
            msg.color.append(views.color.image.message)
            msg.depth.append(views.depth.image.message)
            msg.color_info.append(_info_message(views.color))
            msg.depth_info.append(_info_message(views.depth))
            msg.stamps.append(to_time(views.stamp))
        msg.spread = float(assembled.spread)
        msg.degraded = assembled.degraded
        msg.status = assembled.status
        msg.header.stamp = to_time(assembled.stamp)
        msg.header.frame_id = self.params.frame_id
        if self._throttled:
            self._pending = (msg, assembled.arrived)  # the freshest set wins
        else:
            self._publish(msg, assembled.arrived)

    def _publish_pending(self) -> None:
        if self._pending is not None:
            self._publish(*self._pending)
            self._pending = None

    def _publish(self, msg: MultiViewRGBD, arrived: float) -> None:
        self._ages.append(self.get_clock().now().nanoseconds * 1e-9 - from_time(msg.header.stamp))
        self.pub.publish(msg)
        self._added.append(time.monotonic() - arrived)  # matching + message assembly + publish
        del self._ages[:-500], self._added[:-500]
        self._published.tick(time.monotonic())

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        assembly = self.assembly
        stats = assembly.stats
        spreads = np.array(stats.spreads[-500:]) if stats.spreads else np.zeros(1)
        ages = np.array(self._ages) if self._ages else np.zeros(1)
        added = np.array(self._added) if self._added else np.zeros(1)
        values = {
            "sets_per_s": f"{self._published.rate(now):.2f}",
            "active_cameras": ",".join(assembly.active),
            "spread_p50_ms": f"{1e3 * np.percentile(spreads, 50):.2f}",
            "spread_p95_ms": f"{1e3 * np.percentile(spreads, 95):.2f}",
            "age_at_publish_p50_ms": f"{1e3 * np.percentile(ages, 50):.2f}",
            "age_at_publish_p95_ms": f"{1e3 * np.percentile(ages, 95):.2f}",
            "added_latency_p50_ms": f"{1e3 * np.percentile(added, 50):.2f}",
            "added_latency_p95_ms": f"{1e3 * np.percentile(added, 95):.2f}",
            "sets": self._published.count,
        }
        for i, (cam, kind) in enumerate(assembly.active_streams):
            values[f"{cam}/{kind}_drops"] = stats.dropped[i]
        for (cam, kind), meter in self._rates.items():
            values[f"{cam}/{kind}_hz"] = f"{meter.rate(now):.2f}"
        best_effort = sorted(t for t, r in self.reliabilities.items() if r == "best_effort")
        values["best_effort_topics"] = ", ".join(best_effort)
        values["topics_waiting_for_publishers"] = ", ".join(t for _, t, _, _ in self._unsubscribed)
        for cause, count in self._problems.items():
            values[f"rejected {cause}"] = count
        if self._last_problem:
            values["last_rejection"] = self._last_problem
        for cam in self.cameras:
            values[f"{cam}_age_s"] = f"{now - assembly.last_seen[cam]:.2f}" if cam in assembly.last_seen else "never"
        # images arriving without any CameraInfo: no set of theirs can be published
        lacking = [f"{c}/{k}" for c, k in self.streams if self._rates[(c, k)].count and not assembly.has_info((c, k))]
        values["camera_info_missing"] = ", ".join(lacking)
        missing = [c for c in self.cameras if c not in assembly.active]
        level = diag.ERROR if assembly.all_silent or lacking else diag.WARN if missing or self._problems else diag.OK
        if assembly.all_silent:
            message = (
                f"no camera: every camera silent for > {self.params.camera_timeout} s ({assembly.camera_ages(now)})"
            )
        elif lacking:
            message = f"no CameraInfo from {', '.join(lacking)}: their sets cannot be published"
        else:
            message = f"degraded: missing {missing}" if missing else "matching all cameras"
        self.diag_pub.publish(
            diag.array_msg(
                to_time(self.get_clock().now().nanoseconds * 1e-9),
                [diag.status(f"{self.get_fully_qualified_name()}: camera sync", "camera_sync", level, message, values)],
            )
        )


def _nanoseconds(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _info_message(view: PairedView) -> CameraInfo:
    """The view's CameraInfo message, carrying the image's stamp."""
    if not view.restamp:
        return view.info.message
    restamped = copy.copy(view.info.message)
    restamped.header = Header(stamp=view.image.message.header.stamp, frame_id=view.info.message.header.frame_id)
    return restamped


NODE_CLASS = SyncNode


def main(args: list[str] | None = None) -> int:
    return run_node(SyncNode, args)
