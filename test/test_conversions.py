import numpy as np
import pytest

from wam_ros.ros.conversions import camera_info_msg, depth_to_millimetres, from_time, image_array, image_msg, to_time


@pytest.mark.parametrize("seconds", [0.0, 0.01, 0.9999999999, 1.0, 2.9999999996, 123.456789012])
def test_stamps_round_trip_and_stay_ordered(seconds):
    stamp = to_time(seconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert from_time(stamp) == pytest.approx(seconds, abs=1e-9)


def test_accumulated_sim_time_gives_increasing_stamps():
    t, stamps = 0.0, []
    for _ in range(2000):  # the same float accumulation as the simulator clock
        t += 0.002
        stamps.append(from_time(to_time(t)))
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_images_round_trip_and_malformed_ones_are_refused():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    msg = image_msg(rgb, "rgb8", to_time(1.5), "head_color_optical_frame")
    assert (msg.width, msg.height, msg.step) == (6, 4, 18)
    np.testing.assert_array_equal(image_array(msg), rgb)
    depth = depth_to_millimetres(np.array([[0.0, 0.4004], [70.0, 1.2]], dtype=np.float32))
    np.testing.assert_array_equal(depth, [[0, 400], [65535, 1200]])
    np.testing.assert_array_equal(image_array(image_msg(depth, "16UC1", to_time(0), "f")), depth)
    with pytest.raises(ValueError, match="does not match encoding 16UC1"):
        image_msg(rgb, "16UC1", to_time(0), "f")
    msg.step = 17
    with pytest.raises(ValueError, match="step 17"):
        image_array(msg)
    msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="unsupported encoding 'yuv422'"):
        image_array(msg)


def test_camera_info_carries_the_intrinsics():
    K = np.array([[200.0, 0, 159.5], [0, 200.0, 127.5], [0, 0, 1]])
    info = camera_info_msg(K, 320, 256, to_time(0.5), "head_color_optical_frame")
    assert list(info.k) == list(K.ravel()) and info.p[0] == 200.0 and info.p[2] == 159.5
    assert (info.width, info.height, info.distortion_model) == (320, 256, "plumb_bob")
