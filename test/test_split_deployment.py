"""The two-machine deployment (split:=robot | split:=policy): the observation link's codec, its
messages, the robot side's encoder node, and the whole system with each side in its own network
namespace joined by a veth pair (real `wam-ros bringup` processes, real Fast DDS over UDP), the
cable pulled for 2 s."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message

from wam_ros.data.images import DEPTH_HEADER, ImageError, encode_color
from wam_ros.geometry.lifting import scale_intrinsics
from wam_ros.model.policy import resize_images
from wam_ros.msg import CompressedMultiViewRGBD, MultiViewRGBD, ObservationRequest
from wam_ros.netns import LinkShape, unavailable
from wam_ros.ros.conversions import camera_info_msg, image_msg, multiview_arrays, to_time
from wam_ros.ros.link_conversions import compact_multiview_arrays, compact_multiview_msg
from wam_ros.ros.node_main import make_executor
from wam_ros.ros.nodes.observation_encoder_node import NEWEST_QOS, ObservationEncoderNode
from wam_ros.ros.qos import DIAGNOSTICS_QOS, LATCHED_QOS
from wam_ros.sync.link_codec import LinkCodec, compact_view, expand_view

pytestmark = pytest.mark.ros

CAMERAS = ("head", "left_wrist", "right_wrist")
H, W = 96, 128
K = np.array([[110.0, 0.0, 63.5], [0.0, 110.0, 47.5], [0.0, 0.0, 1.0]])
SIZE = (32, 40)


def scene(i: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A camera view with structure at every scale (gradients, an edge, noise) and depth with holes."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 2, y * 2, (x + y) % 256], axis=-1).astype(np.uint8)
    rgb[30:60, 40:90] = (200, 40 + 20 * i, 30)
    rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    depth = (600 + 3 * x + 2 * y + 50 * i).astype(np.uint16)
    depth[rng.random((H, W)) < 0.05] = 0  # no measurement
    return rgb, depth


def raw_set(cameras=CAMERAS, degraded: bool = False) -> MultiViewRGBD:
    stamp = to_time(12.5)
    msg = MultiViewRGBD(camera_names=list(cameras), degraded=degraded, status="ok", spread=0.004)
    msg.header.stamp, msg.header.frame_id = stamp, "base"
    for i, cam in enumerate(cameras):
        rgb, depth = scene(i)
        frame = f"{cam}_color_optical_frame"
        msg.color.append(image_msg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8", stamp, frame))  # as RealSense sends
        msg.depth.append(image_msg(depth, "16UC1", stamp, frame))
        msg.color_info.append(camera_info_msg(K, W, H, stamp, frame))
        msg.depth_info.append(camera_info_msg(K, W, H, stamp, frame))
        msg.stamps.append(stamp)
    return msg


# ---- the codec (ROS-free) ------------------------------------------------------------------------
def test_a_view_crosses_the_link_as_the_policy_would_resize_it():
    """Lossless colour: exactly the arrays the policy computes from the full view (so its own
    resize is then the identity); depth exact to the millimetre, holes kept; K scaled with it."""
    rgb, depth = scene()
    view = compact_view(rgb, depth, K, SIZE, LinkCodec(color="png"))
    got_rgb, got_depth = expand_view(view.color_format, view.color, view.depth_format, view.depth, view.size)
    np.testing.assert_array_equal(got_rgb, resize_images(rgb, SIZE, "area"))
    np.testing.assert_array_equal(got_depth, resize_images(depth, SIZE, "nearest"))
    assert (got_depth == 0).any()
    np.testing.assert_allclose(view.K, scale_intrinsics(K, (H, W), SIZE))
    assert view.color_format == "rgb8; png compressed bgr8" and view.depth_format == "16UC1; compressedDepth png"
    jpeg = compact_view(rgb, depth, K, SIZE, LinkCodec(color="jpeg", jpeg_quality=90))
    got_jpeg, _ = expand_view(jpeg.color_format, jpeg.color, jpeg.depth_format, jpeg.depth, jpeg.size)
    psnr = 10 * np.log10(255.0**2 / np.mean((got_jpeg.astype(float) - got_rgb) ** 2))
    assert psnr > 32.0 and len(jpeg.color) < len(view.color)  # a noisy 40x32 image: JPEG's worst case
    # on the link: a few percent of the raw view (rgb8 + 16UC1 at full size)
    assert len(jpeg.color) + len(jpeg.depth) < 0.05 * (H * W * 5)


def test_float_depth_crosses_as_millimetres_and_bad_views_are_refused_by_name():
    rgb, depth = scene()
    metres = depth.astype(np.float32) / 1000.0
    metres[0, 0], metres[0, 1] = np.nan, np.inf
    view = compact_view(rgb, metres, K, (H, W), LinkCodec())
    _, mm = expand_view(view.color_format, view.color, view.depth_format, view.depth, view.size)
    assert mm[0, 0] == mm[0, 1] == 0 and np.array_equal(mm[1:], depth[1:])
    with pytest.raises(ImageError, match="expected height and width >= 1"):
        compact_view(rgb, depth, K, (0, 40), LinkCodec())
    with pytest.raises(ImageError, match="not aligned to colour"):
        compact_view(rgb, depth[:50], K, SIZE, LinkCodec())
    with pytest.raises(ValueError, match="color codec 'webp'"):
        LinkCodec(color="webp")
    with pytest.raises(ValueError, match="jpeg_quality 0"):
        LinkCodec(jpeg_quality=0)
    good = compact_view(rgb, depth, K, SIZE, LinkCodec())
    with pytest.raises(ImageError, match="is 40x32, expected 80x64"):  # refused from its header, not decoded
        expand_view(good.color_format, good.color, good.depth_format, good.depth, (64, 80))
    fmt, colour_as_depth = encode_color(np.zeros((*SIZE, 3), np.uint8), "png")
    with pytest.raises(ImageError, match="pixel mode RGB, expected 16-bit grey"):
        expand_view(good.color_format, good.color, "16UC1; compressedDepth png", DEPTH_HEADER + colour_as_depth, SIZE)
    with pytest.raises(ImageError, match="depth format '': expected 16UC1; compressedDepth png"):  # no depth
        expand_view(good.color_format, good.color, "", b"", SIZE)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose pixels are missing (a corrupt or hostile
    payload): a decoder that trusted the header would allocate it."""
    buf = io.BytesIO()
    PILImage.new("I;16", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height (CRC now wrong)
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]),
        st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(lambda s: _png_claiming(*s)),
    ),
    st.sampled_from(["rgb8; jpeg compressed bgr8", "16UC1; compressedDepth png", "rgb8; png compressed bgr8", ""]),
)
def test_corrupt_payloads_are_refused_with_a_reason(payload, fmt):
    data = DEPTH_HEADER + payload if "compressedDepth" in fmt else payload
    good = compact_view(*scene(), K, SIZE, LinkCodec())
    try:
        if "compressedDepth" in fmt:
            expand_view(good.color_format, good.color, fmt, data, SIZE)
        else:
            expand_view(fmt, data, good.depth_format, good.depth, SIZE)
    except ImageError as exc:
        assert str(exc)
    else:
        pytest.fail("a corrupt payload decoded")


# ---- messages ------------------------------------------------------------------------------------
def test_a_set_survives_serialization_and_decodes_to_the_policys_arrays():
    raw = raw_set()
    msg = compact_multiview_msg(raw, ["left_wrist", "head"], SIZE, LinkCodec(color="png"))
    wire = serialize_message(msg)
    assert len(wire) < 0.05 * len(serialize_message(raw))
    back = deserialize_message(wire, CompressedMultiViewRGBD)
    assert list(back.camera_names) == ["left_wrist", "head"] and back.header.stamp == raw.header.stamp
    assert back.spread == pytest.approx(0.004) and not back.degraded
    images, depths, intrinsics = compact_multiview_arrays(back, ["head", "left_wrist"])
    full_images, full_depths, full_intrinsics = multiview_arrays(raw, CAMERAS)
    for cam in ("head", "left_wrist"):
        np.testing.assert_array_equal(images[cam], resize_images(full_images[cam], SIZE, "area"))
        np.testing.assert_array_equal(depths[cam], resize_images(full_depths[cam], SIZE, "nearest"))
        np.testing.assert_allclose(intrinsics[cam][0], scale_intrinsics(full_intrinsics[cam][0], (H, W), SIZE))
        assert intrinsics[cam][1] == SIZE
    with pytest.raises(ValueError, match=r"lacks cameras \['right_wrist'\]"):
        compact_multiview_arrays(back, CAMERAS)
    back.depth[0].data = b"\x00" * 40
    with pytest.raises(ImageError, match="left_wrist: cannot decode"):
        compact_multiview_arrays(back, ["left_wrist"])
    back.color_info.pop()
    with pytest.raises(ImageError, match="do not index the views"):
        compact_multiview_arrays(back, ["head"])
    degraded = compact_multiview_msg(raw_set(degraded=True), CAMERAS, SIZE, LinkCodec())
    assert degraded.degraded and not degraded.color and degraded.status == "ok"


# ---- the robot side's encoder node ---------------------------------------------------------------
def test_encoder_node_sends_what_the_policy_asks_for_and_survives_bad_input():
    rclpy.init()
    encoder = ObservationEncoderNode()
    peer = rclpy.create_node("split_test_peer")
    executor = make_executor()
    for node in (encoder, peer):
        executor.add_node(node)
    received: list[CompressedMultiViewRGBD] = []
    diagnostics: dict[str, str] = {}
    peer.create_subscription(CompressedMultiViewRGBD, "observations/compressed", received.append, NEWEST_QOS)
    peer.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.update(
            {v.key: v.value for s in m.status if "observation link" in s.name for v in s.values}
        ),
        DIAGNOSTICS_QOS,
    )
    request = peer.create_publisher(ObservationRequest, "policy/observation_request", LATCHED_QOS)
    sets = peer.create_publisher(MultiViewRGBD, "observations", NEWEST_QOS)

    def spin_until(condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)

    try:
        spin_until(lambda: sets.get_subscription_count() > 0 and peer.count_publishers("observations/compressed"))
        sets.publish(raw_set())
        spin_until(lambda: False, 1.0)
        assert not received  # nothing crosses the link before a policy has asked
        request.publish(ObservationRequest(camera_names=["head"], height=0, width=40))  # refused, logged
        request.publish(ObservationRequest(camera_names=["head", "right_wrist"], height=SIZE[0], width=SIZE[1]))
        spin_until(lambda: encoder._request is not None)
        sets.publish(raw_set())
        spin_until(lambda: received)
        images, depths, _ = compact_multiview_arrays(received[0], ["head", "right_wrist"])
        assert images["right_wrist"].shape == (*SIZE, 3) and depths["head"].shape == SIZE
        sets.publish(raw_set(cameras=("head", "left_wrist")))  # lacks a requested camera: not sent
        spin_until(lambda: encoder._rejected, 5.0)
        spin_until(lambda: diagnostics.get("sets_rejected") == "1", 3.0)
        assert diagnostics["sets_rejected"] == "1" and "right_wrist" in diagnostics["last_problem"]
        assert int(diagnostics["payload_bytes_per_set_median"]) > 0
        sets.publish(raw_set())
        spin_until(lambda: len(received) >= 2)
        assert len(received) == 2  # still sending after the bad set
    finally:
        executor.shutdown()
        for node in (encoder, peer):
            node.destroy_node()
        rclpy.try_shutdown()


# ---- two hosts -----------------------------------------------------------------------------------
NETNS = unavailable()


UDP_RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((sys.argv[1], 9999)); s.settimeout(30.0); print("ready", flush=True)
n, first, last = 0, None, None
try:
    s.recv(2048)  # the first warm-up packet: the sender has started (a process start can take seconds)
    s.settimeout(2.0)  # then the end of the stream is two seconds without packets
    while True:
        if s.recv(2048)[:1] == b"x":  # not a warm-up packet
            n += 1; last = time.monotonic(); first = first or last
except socket.timeout:
    print(n, (last - first) if n > 1 else 0.0)
"""
# warm-up packets first (the neighbour's address is resolved), then `count` of 1000 bytes at `rate` per second
UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5): s.sendto(b"w", (sys.argv[1], 9999)); time.sleep(0.05)
time.sleep(0.3)
count, rate = int(sys.argv[2]), float(sys.argv[3]); start = time.monotonic()
for i in range(count):
    s.sendto(b"x" * 1000, (sys.argv[1], 9999))
    if i % 10 == 9: time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
"""


def _udp_through(pair, count: int, rate: float) -> tuple[int, float]:
    """(packets received, seconds from the first to the last) of `count` sent robot -> policy."""
    import subprocess
    import sys

    receiver = subprocess.Popen(
        [*pair.prefix_command("policy"), sys.executable, "-c", UDP_RECEIVER, pair.addresses["policy"]],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout.readline().strip() == "ready"
    subprocess.run(
        [
            *pair.prefix_command("robot"),
            sys.executable,
            "-c",
            UDP_SENDER,
            pair.addresses["policy"],
            str(count),
            str(rate),
        ],
        check=True,
    )
    received, seconds = receiver.communicate(timeout=60)[0].split()
    return int(received), float(seconds)


@pytest.mark.skipif(NETNS is not None, reason=f"network namespaces: {NETNS}")
def test_the_emulated_link_drops_the_configured_share_and_limits_the_rate():
    """The shaping itself, measured by a receiver on the other side of the veth pair."""
    from wam_ros.netns import HostPair

    with HostPair() as pair:
        assert pair.shape(LinkShape(loss_percent=10.0)).label == "unshaped, 10 % loss"
        received, _ = _udp_through(pair, 3000, rate=3000.0)  # 24 Mbit/s: no queue builds
        assert 0.87 * 3000 < received < 0.93 * 3000, received  # binomial sd 0.55 %
        sent, dropped = pair.packet_counts()["robot"]
        assert dropped >= 3000 - received and sent >= received
        assert pair.shape(LinkShape(20.0)).label == "20 Mbit/s"
        received, seconds = _udp_through(pair, 6000, rate=4000.0)  # 32 Mbit/s offered to 20 Mbit/s
    mbit = received * 1000 * 8 / seconds / 1e6
    assert 15.0 < mbit < 21.0, f"{mbit:.1f} Mbit/s of UDP payload through a 20 Mbit/s link"


@pytest.mark.slow
@pytest.mark.skipif(NETNS is not None, reason=f"network namespaces: {NETNS}")
def test_two_hosts_over_a_gigabit_link_hold_when_the_cable_is_pulled_and_recover(tmp_path):
    """The robot side (simulated AgileX, sync, supervisor, encoder) in one namespace, the shipped
    policy in the other, 1 Gbit/s between them; then the cable is pulled for 2 s."""
    from wam_ros.demo import shipped_policy
    from wam_ros.perf.split import SIM_SIZE, SplitRun, run_split

    row = run_split(
        SplitRun("netns_1gbit", LinkShape(1000.0), seconds=6.0, pull_after=6.0, pull_seconds=2.0, recover_seconds=8.0),
        shipped_policy("agilex"),
        tmp_path,
    )
    assert row["chunks"] >= 3, row
    # the link carries the small sets, never the raw ones: 3 views x (rgb8 + 16UC1) at the camera rate
    raw_set_bytes = 3 * SIM_SIZE[0] * SIM_SIZE[1] * 5
    sent = row["link_mb_per_s"]["robot"] * 1e6
    assert 0 < sent < 0.5 * raw_set_bytes * row["observation_payload"]["sets_per_s"], row
    pulled = row["cable_pulled"]
    # HOLD by the supervisor's watchdogs (chunks and value, 1 s each) on the robot side
    assert pulled["to_hold_s"] is not None and pulled["to_hold_s"] <= 3.0, row
    assert "stale" in pulled["hold_reason"], row
    assert pulled["running_again_after_s"] is not None, row  # fresh chunks after the cable is back


@pytest.mark.slow
@pytest.mark.skipif(NETNS is not None, reason=f"network namespaces: {NETNS}")
def test_two_hosts_over_a_lossy_link_repair_lost_samples_quickly(tmp_path):
    """100 Mbit/s with 1 % of the packets lost both ways: a lost datagram is resent at the writer's
    next heartbeat (100 ms in config/fastdds.xml; Fast DDS's default 3 s held the chunk stream up to
    3 s, as reliable readers deliver in order)."""
    from wam_ros.demo import shipped_policy
    from wam_ros.perf.split import SplitRun, run_split

    row = run_split(
        SplitRun("netns_lossy", LinkShape(100.0, loss_percent=1.0), seconds=8.0), shipped_policy("agilex"), tmp_path
    )
    assert row["link"] == "100 Mbit/s, 1 % loss" and row["chunks"] >= 3, row
    assert sum(side["dropped"] for side in row["link_packets_dropped"].values()) > 0, row  # the loss is real
    for leg in ("set_robot_to_policy", "chunk_policy_to_robot"):
        assert row["transit_ms"][leg]["p95"] < 500.0, row
