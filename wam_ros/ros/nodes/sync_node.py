"""sync_node: one MultiViewRGBD per matched set of N cameras x (color, depth).

Subscribes, per camera, to the official drivers' topics (<cam>/color/image_raw,
<cam>/color/camera_info, <cam>/<depth_topic>, and its camera_info), whether they come from our
camera nodes, the simulator or realsense2_camera / orbbec_camera. Matches them with the
approximate-time policy (wam_ros.sync.approximate_time) and publishes `observations`.
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
from collections import defaultdict, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from wam_ros.config import CAMERA_NAMES
from wam_ros.data.images import ImageError, camera_matrix
from wam_ros.msg import MultiViewRGBD
from wam_ros.ros import diagnostics as diag
from wam_ros.ros.conversions import check_view, from_time, to_time, view_intrinsics
from wam_ros.ros.node_main import run_node
from wam_ros.ros.params import declare
from wam_ros.ros.qos import CAMERA_INFO_QOS, DIAGNOSTICS_QOS, IMAGE_QOS
from wam_ros.sync.approximate_time import ApproximateTimeSync, SyncConfig

KINDS = ("color", "depth")
PROBLEM_LOG_PERIOD = 10.0  # s between warnings of one cause; every case is counted in /diagnostics


class SyncNode(Node):
    def __init__(self, node_name: str = "sync", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cameras = list(declare(self, "cameras", list(CAMERA_NAMES), "Camera names (topic namespaces)"))
        depth_topic = declare(self, "depth_topic", "aligned_depth_to_color/image_raw",
                              "Depth image topic under each camera (aligned_depth_to_color/image_raw or depth/image_raw)")
        fps = declare(self, "expected_fps", 15.0, "Camera frame rate, for the inter-message lower bound (Hz)",
                      range_=(1.0, 120.0))
        self.max_interval = declare(self, "max_interval", 0.010, "Widest accepted set (s)", range_=(0.0001, 1.0))
        self.queue_size = declare(self, "queue_size", 10, "Queued messages per stream", range_=(1, 1000))
        color_delays = declare(self, "color_delays", [0.0] * len(self.cameras), "Fixed color delay per camera (s)")
        depth_delays = declare(self, "depth_delays", [0.0] * len(self.cameras),
                               "Fixed depth delay per camera (s), e.g. Orbbec depth lags color")
        self.camera_timeout = declare(self, "camera_timeout", 0.5, "A camera silent this long is left out (s)",
                                      range_=(0.01, 60.0))
        publish_rate = declare(self, "publish_rate", 0.0, "Throttle output to this rate, keeping the freshest "
                               "set (Hz; 0: every set)", range_=(0.0, 1000.0))
        self.reliability = declare(self, "reliability", "auto", "Subscription reliability: auto matches each "
                                   "topic's publishers (waiting up to qos_wait s), or reliable / best_effort",
                                   choices=("auto", "reliable", "best_effort"))
        self.qos_wait = declare(self, "qos_wait", 3.0, "auto: how long to wait for a topic's publishers (s)",
                                range_=(0.0, 60.0))
        self.frame_id = declare(self, "frame_id", "base", "frame_id of the published sets")
        if len(color_delays) != len(self.cameras) or len(depth_delays) != len(self.cameras):
            raise ValueError("color_delays and depth_delays need one value per camera")

        self.streams = [(cam, kind) for cam in self.cameras for kind in KINDS]
        self._delays = {(cam, "color"): color_delays[i] for i, cam in enumerate(self.cameras)}
        self._delays.update({(cam, "depth"): depth_delays[i] for i, cam in enumerate(self.cameras)})
        self._lower_bound = 0.5 / fps
        self._infos: dict[tuple[str, str], deque[CameraInfo]] = defaultdict(lambda: deque(maxlen=10))
        self._last_stamp: dict[tuple[str, str], float] = {}
        self._last_seen: dict[str, float] = {}      # camera -> wall time of its last valid image
        self._first_image: float | None = None      # wall time of the first image of any camera
        self._active: tuple[str, ...] = ()
        self._all_silent = False
        self._sync: ApproximateTimeSync | None = None
        self._problems: dict[str, int] = defaultdict(int)
        self._problem_logged: dict[str, float] = {}  # cause -> monotonic time of its last warning
        self._last_problem = ""
        self._rates = {s: diag.RateMeter() for s in self.streams}
        self._published = diag.RateMeter()
        self._ages: list[float] = []    # now - set stamp at publish (s)
        self._added: list[float] = []   # publish time - arrival of the set's last message (s)
        self._pending: MultiViewRGBD | None = None
        self._waiting: tuple | None = None  # a matched set whose CameraInfo has not arrived yet

        self.pub = self.create_publisher(MultiViewRGBD, "observations", IMAGE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        depth_info_topic = depth_topic.rsplit("/", 1)[0] + "/camera_info"
        # (message type, topic, callback, QoS) still to subscribe; `auto` waits for each topic's publishers
        self._unsubscribed = []
        for cam in self.cameras:
            self._unsubscribed += [
                (Image, f"{cam}/color/image_raw", lambda m, c=cam: self._on_image(c, "color", m), IMAGE_QOS),
                (Image, f"{cam}/{depth_topic}", lambda m, c=cam: self._on_image(c, "depth", m), IMAGE_QOS),
                (CameraInfo, f"{cam}/color/camera_info", lambda m, c=cam: self._on_info((c, "color"), m), CAMERA_INFO_QOS),
                (CameraInfo, f"{cam}/{depth_info_topic}", lambda m, c=cam: self._on_info((c, "depth"), m), CAMERA_INFO_QOS)]
        self._started = time.monotonic()
        self.reliabilities: dict[str, str] = {}
        self._subscribe_timer = self.create_timer(0.1, self._subscribe)
        self._subscribe()
        self._rebuild(tuple(self.cameras))
        if publish_rate > 0:
            self.create_timer(1.0 / publish_rate, self._publish_pending)
        self._throttled = publish_rate > 0
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.05, self._check_cameras)

    def _subscribe(self) -> None:
        """Subscribe each topic with the reliability of its publishers (QoS must match: a reliable
        subscription receives nothing from a best-effort driver)."""
        waited = time.monotonic() - self._started
        remaining = []
        for msg_type, topic, callback, base in self._unsubscribed:
            if self.reliability == "auto":
                publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
                if not publishers and waited < self.qos_wait:
                    remaining.append((msg_type, topic, callback, base))
                    continue
                best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
            else:
                best_effort = self.reliability == "best_effort"
            qos = QoSProfile(depth=base.depth, history=base.history,
                             reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
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
            self.get_logger().warn(f"{cause}: {detail} (dropped; {self._problems[cause]} so far, all counted "
                                   "in /diagnostics)")

    def _on_image(self, cam: str, kind: str, msg: Image) -> None:
        stream = (cam, kind)
        try:
            check_view(msg, kind)
        except ImageError as exc:
            return self._problem(f"{cam}/{kind} {exc.check}", str(exc))
        stamp = from_time(msg.header.stamp)
        if stamp < self._last_stamp.get(stream, -np.inf):
            return self._problem(f"{cam}/{kind} stamp went backwards",
                                 f"{stamp:.6f} after {self._last_stamp[stream]:.6f}")
        self._last_stamp[stream] = stamp
        self._last_seen[cam] = time.monotonic()
        if self._first_image is None:
            self._first_image = self._last_seen[cam]
        self._rates[stream].tick(time.monotonic())
        if cam not in self._active:
            self._check_cameras()  # a camera coming back: re-admitted with this image
            if cam not in self._active:
                return
        for matched in self._sync.add(self._active_streams.index(stream), stamp, (msg, time.monotonic())):
            self._emit(matched)

    def _on_info(self, stream: tuple[str, str], info: CameraInfo) -> None:
        try:
            camera_matrix(info.k, info.width, info.height)
        except ImageError as exc:
            return self._problem(f"{stream[0]}/{stream[1]} {exc.check}", str(exc))
        self._infos[stream].append(info)
        if self._waiting is not None:  # a set that was only missing its CameraInfo
            waiting, self._waiting = self._waiting, None
            self._emit(waiting)

    def _info_for(self, stream: tuple[str, str], image: Image) -> CameraInfo | None:
        """The CameraInfo published with this image (same stamp), else the newest one, stamped with
        the image: waiting for an info that drivers publish after the image would add its transit
        time to every set, and a camera's intrinsics do not change from frame to frame."""
        infos = self._infos[stream]
        for info in reversed(infos):
            if info.header.stamp == image.header.stamp:
                return info
        if not infos:
            return None
        restamped = copy.copy(infos[-1])
        restamped.header = Header(stamp=image.header.stamp, frame_id=infos[-1].header.frame_id)
        return restamped

    # --- matching and output ------------------------------------------------------------------
    def _rebuild(self, active: tuple[str, ...]) -> None:
        self._active = active
        self._active_streams = [s for s in self.streams if s[0] in active]
        config = SyncConfig(
            tuple(f"{c}/{k}" for c, k in self._active_streams), self.max_interval, self.queue_size,
            (self._lower_bound,) * len(self._active_streams), tuple(self._delays[s] for s in self._active_streams))
        self._sync = ApproximateTimeSync(config) if self._sync is None else self._sync.regrouped(config)

    def _check_cameras(self) -> None:
        if not self._last_seen:
            return  # nothing received yet
        now = time.monotonic()
        # a camera not seen yet gets the same grace, counted from the first image of any camera
        fresh = tuple(c for c in self.cameras if now - self._last_seen.get(c, self._first_image) <= self.camera_timeout)
        if not fresh and not self._all_silent:
            self.get_logger().error(f"every camera silent for > {self.camera_timeout} s: no sets "
                                    f"(ages: {self._camera_ages(now)})")
        self._all_silent = not fresh
        if fresh != self._active and fresh:
            missing = sorted(set(self.cameras) - set(fresh))
            if missing:
                self.get_logger().warn(f"cameras {missing} silent for > {self.camera_timeout} s: "
                                       "publishing the others, marked degraded", throttle_duration_sec=5.0)
            self._rebuild(fresh)

    def _camera_ages(self, now: float) -> str:
        return ", ".join(f"{c} {now - self._last_seen[c]:.1f} s" if c in self._last_seen else f"{c} never"
                         for c in self.cameras)

    def _emit(self, matched: tuple) -> None:
        by_stream = dict(zip(self._active_streams, matched))
        msg = MultiViewRGBD(camera_names=self.cameras)
        color_stamps = []
        for cam in self.cameras:
            views = [Image(), Image()]
            infos = [CameraInfo(), CameraInfo()]
            if cam in self._active:
                for k, kind in enumerate(KINDS):
                    image = by_stream[(cam, kind)][1][0]
                    info = self._info_for((cam, kind), image)
                    if info is None:
                        # drivers publish CameraInfo right after the image: wait for it, once
                        if self._waiting is not None:
                            self._problem(f"{cam}/{kind} camera_info missing", "no CameraInfo; set dropped")
                        self._waiting = matched
                        return
                    try:
                        view_intrinsics(image, info)
                    except ImageError as exc:
                        return self._problem(f"{cam}/{kind} {exc.check}", f"{exc}; set dropped")
                    views[k], infos[k] = image, info
                color_stamps.append(by_stream[(cam, "color")][0])
            msg.color.append(views[0])
            msg.depth.append(views[1])
            msg.color_info.append(infos[0])
            msg.depth_info.append(infos[1])
            msg.stamps.append(to_time(color_stamps[-1]) if cam in self._active else to_time(0.0))
        stamps = [t for t, _ in matched]
        msg.spread = float(max(stamps) - min(stamps))
        missing = [c for c in self.cameras if c not in self._active]
        msg.degraded = bool(missing)
        msg.status = f"missing {missing}" if missing else "ok"
        msg.header.stamp = to_time(max(color_stamps))
        msg.header.frame_id = self.frame_id
        arrived = max(arrival for _, (_, arrival) in matched)  # the set's last message reached us
        if self._throttled:
            self._pending = (msg, arrived)  # the freshest set wins
        else:
            self._publish(msg, arrived)

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
        stats = self._sync.stats
        spreads = np.array(stats.spreads[-500:]) if stats.spreads else np.zeros(1)
        ages = np.array(self._ages) if self._ages else np.zeros(1)
        added = np.array(self._added) if self._added else np.zeros(1)
        values = {"sets_per_s": f"{self._published.rate(now):.2f}", "active_cameras": ",".join(self._active),
                  "spread_p50_ms": f"{1e3 * np.percentile(spreads, 50):.2f}",
                  "spread_p95_ms": f"{1e3 * np.percentile(spreads, 95):.2f}",
                  "age_at_publish_p50_ms": f"{1e3 * np.percentile(ages, 50):.2f}",
                  "age_at_publish_p95_ms": f"{1e3 * np.percentile(ages, 95):.2f}",
                  "added_latency_p50_ms": f"{1e3 * np.percentile(added, 50):.2f}",
                  "added_latency_p95_ms": f"{1e3 * np.percentile(added, 95):.2f}",
                  "sets": self._published.count}
        for i, (cam, kind) in enumerate(self._active_streams):
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
            values[f"{cam}_age_s"] = f"{now - self._last_seen[cam]:.2f}" if cam in self._last_seen else "never"
        # images arriving without any CameraInfo: no set of theirs can be published
        lacking = [f"{c}/{k}" for c, k in self.streams if self._rates[(c, k)].count and not self._infos[(c, k)]]
        values["camera_info_missing"] = ", ".join(lacking)
        degraded = len(self._active) < len(self.cameras)
        level = diag.ERROR if not self._active or self._all_silent or lacking else \
            diag.WARN if degraded or self._problems else diag.OK
        if self._all_silent:
            message = f"no camera: every camera silent for > {self.camera_timeout} s ({self._camera_ages(now)})"
        elif lacking:
            message = f"no CameraInfo from {', '.join(lacking)}: their sets cannot be published"
        else:
            message = "matching all cameras" if not degraded else \
                f"degraded: missing {sorted(set(self.cameras) - set(self._active))}"
        self.diag_pub.publish(diag.array_msg(to_time(self.get_clock().now().nanoseconds * 1e-9), [
            diag.status(f"{self.get_fully_qualified_name()}: camera sync", "camera_sync", level, message, values)]))


NODE_CLASS = SyncNode


def main(args: list[str] | None = None) -> int:
    return run_node(SyncNode, args)
