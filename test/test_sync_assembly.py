"""sync_node's set assembly without ROS: CameraInfo pairing, the checks a set must pass, and cameras
dropping out and coming back."""

from __future__ import annotations

import pytest

from wam_ros.data.images import ImageError
from wam_ros.sync.assembly import AssemblyConfig, CameraCheck, CameraInfoRecord, ImageRecord, Outcome, SetAssembler

CAMERAS = ("head", "left_wrist", "right_wrist")
W, H = 64, 48
K = (50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0)
PERIOD = 1 / 30


def ns(t: float) -> int:
    return round(t * 1e9)


def info(cam: str, kind: str, t: float, width: int = W, k=K) -> CameraInfoRecord:
    return CameraInfoRecord(ns(t), width, H, k, message=("info", cam, kind, t))


def assembler(**overrides) -> SetAssembler:
    settings = dict(cameras=CAMERAS, max_interval=0.008, inter_message_lower_bound=PERIOD / 2, camera_timeout=0.3)
    return SetAssembler(AssemblyConfig(**{**settings, **overrides}))


def merged(outcomes: list[Outcome]) -> Outcome:
    total = Outcome()
    for outcome in outcomes:
        total.sets += outcome.sets
        total.rejections += outcome.rejections
    return total


def frame(
    sync: SetAssembler, t: float, cameras=CAMERAS, infos: bool = True, width: int = W, depth_lag: float = 0.0
) -> Outcome:
    """One image of every stream of `cameras` stamped t (depth: t + depth_lag), arriving at t + 1 ms,
    each after its CameraInfo of the same stamp (with `infos`)."""
    outcomes = []
    for cam in cameras:
        for kind, stamp in (("color", t), ("depth", t + depth_lag)):
            if infos:
                outcomes.append(sync.add_info(cam, kind, info(cam, kind, stamp)))
            image = ImageRecord(ns(stamp), width if cam == "head" and kind == "color" else W, H, (cam, kind, stamp))
            outcomes.append(sync.add_image(cam, kind, image, now=t + 0.001))
    return merged(outcomes)


def stream(sync: SetAssembler, start: float, frames: int, cameras=CAMERAS) -> tuple[Outcome, float]:
    """`frames` frames of `cameras` every PERIOD from `start`, with the camera check run between
    frames as the node's timer does; (the outcomes merged, the next frame's stamp)."""
    outcomes, t = [], start
    for _ in range(frames):
        outcomes.append(frame(sync, t, cameras))
        sync.check_cameras(t + 0.002)
        t += PERIOD
    return merged(outcomes), t


def test_a_matched_set_pairs_every_image_with_the_camera_info_of_its_stamp():
    sync = assembler()
    outcome = frame(sync, 100.0)
    assert len(outcome.sets) == 1 and not outcome.rejections
    s = outcome.sets[0]
    assert list(s.views) == list(CAMERAS) and not s.degraded and s.status == "ok" and s.missing == []
    assert s.stamp == pytest.approx(100.0) and s.spread == pytest.approx(0.0) and s.arrived == pytest.approx(100.001)
    for cam, views in s.views.items():
        for kind, view in (("color", views.color), ("depth", views.depth)):
            assert view.image.message == (cam, kind, 100.0)
            assert view.info.message == ("info", cam, kind, 100.0) and not view.restamp
        assert views.stamp == pytest.approx(100.0)


def test_an_image_without_an_info_of_its_stamp_gets_the_newest_info_to_be_restamped():
    sync = assembler()
    for stream_kind, t in (("color", 99.0), ("color", 99.5), ("depth", 99.9)):  # head's infos, none of its stamp
        sync.add_info("head", stream_kind, info("head", stream_kind, t))
    s = frame(sync, 100.0, cameras=("left_wrist", "right_wrist")).sets
    for kind in ("color", "depth"):
        s += sync.add_image("head", kind, ImageRecord(ns(100.0), W, H, ("head", kind, 100.0)), now=100.001).sets
    assert len(s) == 1
    color, depth = s[0].views["head"].color, s[0].views["head"].depth
    assert color.restamp and color.info.message == ("info", "head", "color", 99.5)  # the newest one
    assert depth.restamp and depth.info.message == ("info", "head", "depth", 99.9)
    assert not s[0].views["left_wrist"].color.restamp  # its own stamp's info came


def test_an_older_info_of_the_same_stamp_wins_over_newer_ones():
    sync = assembler()
    frame(sync, 100.0)
    for t in (100.0 + PERIOD, 100.0 + 2 * PERIOD):  # infos of later frames already in
        for cam in CAMERAS:
            for kind in ("color", "depth"):
                sync.add_info(cam, kind, info(cam, kind, t))
    s = frame(sync, 100.0 + PERIOD, infos=False).sets
    assert len(s) == 1 and not s[0].views["head"].color.restamp
    assert s[0].views["head"].color.info.message == ("info", "head", "color", 100.0 + PERIOD)


def test_a_set_lacking_a_camera_info_waits_for_the_next_one_once():
    sync = assembler()
    first = frame(sync, 100.0, infos=False)
    assert not first.sets and not first.rejections  # waiting, nothing dropped yet
    assert not sync.has_info(("head", "color"))
    for cam in CAMERAS:
        for kind in ("color", "depth"):
            outcome = sync.add_info(cam, kind, info(cam, kind, 100.0))
            if (cam, kind) != (CAMERAS[-1], "depth"):
                assert not outcome.sets  # still lacking the others
    assert len(outcome.sets) == 1 and outcome.sets[0].views["head"].depth.image.message == ("head", "depth", 100.0)


def test_a_newer_set_that_has_to_wait_drops_the_waiting_one_with_its_reason():
    sync = assembler()
    frame(sync, 100.0, infos=False)
    second = frame(sync, 100.0 + PERIOD, infos=False)
    assert not second.sets
    assert [(r.cause, r.detail) for r in second.rejections] == [
        ("head/color camera_info missing", "no CameraInfo; set dropped")
    ]
    for cam in CAMERAS:
        for kind in ("color", "depth"):
            outcome = sync.add_info(cam, kind, info(cam, kind, 100.0 + PERIOD))
    assert [s.stamp for s in outcome.sets] == [pytest.approx(100.0 + PERIOD)]  # the newer one


def test_an_image_whose_size_is_not_its_camera_infos_drops_the_set():
    sync = assembler()
    outcome = frame(sync, 100.0, width=W // 2)
    assert not outcome.sets
    assert [(r.cause, r.detail) for r in outcome.rejections] == [
        ("head/color size", "image 32x48 but CameraInfo 64x48; set dropped")
    ]
    assert len(frame(sync, 100.0 + PERIOD).sets) == 1  # the next good frame makes a set


@pytest.mark.parametrize("k, width", [((0.0,) * 9, W), ((float("nan"),) + K[1:], W), (K, 0), (K[:6], W)])
def test_a_camera_info_that_is_not_a_calibrated_camera_is_refused_and_not_kept(k, width):
    sync = assembler()
    with pytest.raises(ImageError) as refused:
        sync.add_info("head", "color", info("head", "color", 100.0, width=width, k=k))
    assert refused.value.check == "camera_info" and not sync.has_info(("head", "color"))


def test_a_stamp_going_backwards_is_refused_and_the_stream_goes_on():
    sync = assembler()
    frame(sync, 100.0)
    with pytest.raises(ImageError, match=r"95.000000 after 100.000000") as refused:
        sync.add_image("head", "color", ImageRecord(ns(95.0), W, H), now=100.01)
    assert refused.value.check == "stamp went backwards"
    assert len(frame(sync, 100.0 + PERIOD).sets) == 1


def test_a_silent_camera_is_left_out_marked_degraded_and_comes_back_with_its_next_image():
    sync = assembler()
    complete, t = stream(sync, 100.0, 5)
    assert len(complete.sets) == 5 and not any(s.degraded for s in complete.sets)
    others = ("head", "right_wrist")
    # left_wrist stops: no sets until the camera check leaves it out, after camera_timeout
    silent, t = stream(sync, t, 8, cameras=others)
    assert not silent.sets and sync.active == CAMERAS
    assert sync.check_cameras(t) == CameraCheck()
    # the check after the next frame leaves it out; what the others queued meanwhile is kept: every
    # frame of theirs becomes a degraded set
    degraded, t = stream(sync, t, 3, cameras=others)
    assert sync.active == others and [s for s, _ in sync.active_streams] == [
        "head",
        "head",
        "right_wrist",
        "right_wrist",
    ]
    assert len(degraded.sets) == 8 + 3 and all(s.degraded for s in degraded.sets)
    assert degraded.sets[-1].views["left_wrist"] is None and degraded.sets[-1].status == "missing ['left_wrist']"
    assert degraded.sets[-1].views["head"].color.image.message[0] == "head"
    assert degraded.sets[-1].views["right_wrist"].color.image.message[0] == "right_wrist"
    # it comes back: its first image re-admits it, then complete sets again
    back = sync.add_image("left_wrist", "color", ImageRecord(ns(t), W, H), now=t)
    assert back.cameras == CameraCheck(left_out=()) and sync.active == CAMERAS
    recovered, t = stream(sync, t + PERIOD, 5)
    assert recovered.sets and not recovered.sets[-1].degraded and recovered.sets[-1].status == "ok"


def test_a_camera_never_heard_from_gets_the_grace_of_the_first_image():
    sync = assembler()
    assert sync.check_cameras(1000.0) == CameraCheck()  # nothing received yet: nothing to leave out
    frame(sync, 100.0, cameras=("head", "left_wrist"))
    assert sync.check_cameras(100.2) == CameraCheck() and sync.active == CAMERAS  # within camera_timeout
    sync.add_image("head", "color", ImageRecord(ns(100.4), W, H), now=100.4)
    sync.add_image("left_wrist", "color", ImageRecord(ns(100.4), W, H), now=100.4)
    assert sync.check_cameras(100.4) == CameraCheck(left_out=("right_wrist",))
    assert "right_wrist never" in sync.camera_ages(100.4)


def test_every_camera_silent_is_reported_once_and_ends_with_the_first_image():
    sync = assembler()
    _, t = stream(sync, 100.0, 3)
    assert sync.check_cameras(t + 1.0) == CameraCheck(fell_silent=True) and sync.all_silent
    assert sync.check_cameras(t + 1.1) == CameraCheck() and sync.all_silent  # said once
    assert sync.active == CAMERAS  # the group waits for them
    assert sync.camera_ages(t + 1.1) == "head 1.1 s, left_wrist 1.1 s, right_wrist 1.1 s"
    back, _ = stream(sync, t + 1.2, 3)
    assert not sync.all_silent and back.sets and not back.sets[-1].degraded


def test_a_waiting_set_keeps_its_own_cameras_when_the_active_cameras_change():
    sync = assembler()
    for cam in CAMERAS:
        for kind in ("color", "depth"):
            if (cam, kind) != ("head", "color"):
                sync.add_info(cam, kind, info(cam, kind, 100.0))
    assert not frame(sync, 100.0, infos=False).sets  # waits for head/color's info
    sync.add_image("head", "color", ImageRecord(ns(100.0 + PERIOD), W, H), now=100.04)  # then head stops
    stream(sync, 100.4, 1, cameras=("left_wrist", "right_wrist"))  # its camera check leaves head out
    assert sync.active == ("left_wrist", "right_wrist")
    late = sync.add_info("head", "color", info("head", "color", 100.0)).sets
    assert len(late) == 1 and not late[0].degraded
    for cam in CAMERAS:  # every view from its own camera
        assert late[0].views[cam].color.image.message == (cam, "color", 100.0)
        assert late[0].views[cam].depth.image.message == (cam, "depth", 100.0)


def test_per_stream_delays_match_a_lagging_depth_and_stamp_the_set_with_delays_removed():
    lag = 0.012  # beyond max_interval: without the delay no set
    assert not frame(assembler(), 100.0, depth_lag=lag).sets
    sync = assembler(color_delays=(0.0, 0.0, 0.0), depth_delays=(lag, lag, lag))
    s = frame(sync, 100.0, depth_lag=lag).sets
    assert len(s) == 1 and s[0].spread == pytest.approx(0.0, abs=1e-9)
    assert s[0].views["head"].depth.image.message == ("head", "depth", 100.0 + lag)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(depth_delays=(0.0, 0.0)), "color_delays and depth_delays need one value per camera"),
        (dict(cameras=("head", "head")), "cameras must be unique"),
        (dict(cameras=()), "cameras must be unique and non-empty"),
        (dict(camera_timeout=0.0), "camera_timeout must be > 0"),
    ],
)
def test_configs_that_cannot_work_are_refused(overrides, reason):
    with pytest.raises(ValueError, match=reason):
        assembler(**overrides)
