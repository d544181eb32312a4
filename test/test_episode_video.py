"""The episode video (ROS-free): what each frame says, and an MP4 that FFmpeg's decoder reads back."""

import av
import numpy as np
import pytest

from wam_ros.episode_video import PANEL_HEIGHT, EpisodeTimeline, render_frame, write_video
from wam_ros.msg import GateState

ORANGE = np.array([255, 150, 30])


def timeline() -> EpisodeTimeline:
    """10 s at 15 Hz: the value rises, the cube slips at 4 s, the value drops, a rollback at 5 s."""
    times = np.arange(150) / 15.0
    frames = [(float(t), np.full((128, 160, 3), 90 + int(t * 10), np.uint8)) for t in times]
    values = [
        (float(t), float(min(t, 4.0) / 10 - (0.3 if t > 4.5 else 0.0)), float(min(t, 4.0) / 10)) for t in times[::5]
    ]
    return EpisodeTimeline(
        title="slip episode (seed 7)",
        frames=frames,
        values=values,
        experts=[(0.0, GateState.EXPERT_PREDICTIVE), (5.0, GateState.EXPERT_ROLLBACK)],
        states=[(0.0, "RUNNING"), (5.0, "ROLLING_BACK"), (6.5, "RUNNING")],
        stages=[(0.0, "start"), (3.0, "grasped")],
        rollbacks=[5.0],
        slip=4.0,
        success=9.0,
    )


def banner_is_orange(frame: np.ndarray) -> bool:
    bottom = frame.shape[0] - PANEL_HEIGHT
    band = frame[bottom - 20 : bottom - 4].astype(int)  # the camera image's bottom rows
    return (np.abs(band - ORANGE).sum(axis=2) < 60).mean() > 0.5


def test_frames_show_state_rollback_and_the_value_curve_up_to_their_time():
    tl = timeline()
    before, during, after = (render_frame(tl, i) for i in (30, 80, 140))  # 2 s, 5.3 s, 9.3 s
    assert before.shape == (512 + PANEL_HEIGHT, 640, 3) and before.dtype == np.uint8  # 160x128 scaled by 4
    assert not banner_is_orange(before) and banner_is_orange(during) and not banner_is_orange(after)
    panel_before, panel_after = before[512:].astype(int), after[512:].astype(int)

    def red(panel):  # the rollback marker
        return ((panel[..., 0] > 200) & (panel[..., 1] < 80) & (panel[..., 2] < 80)).sum()

    def blue(panel):  # the value curve
        return ((panel[..., 2] > 200) & (panel[..., 0] < 120)).sum()

    assert red(panel_before) == 0 and red(panel_after) > 50
    assert 0 < blue(panel_before) < blue(panel_after)
    # the state is written in its colour: green while running, orange while rolling back
    top_before, top_during = before[16:28].astype(int), during[16:28].astype(int)
    assert ((top_before[..., 1] > 180) & (top_before[..., 0] < 100)).any()
    assert (np.abs(top_during - ORANGE).sum(axis=2) < 60).any()


def test_the_video_is_h264_that_ffmpeg_decodes_frame_for_frame(tmp_path):
    tl = timeline()
    path = tmp_path / "slip.mp4"
    assert write_video(tl, path, fps=15.0) == 150
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 15
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 150
    reference = render_frame(tl, 80).astype(float)
    psnr = 10 * np.log10(255.0**2 / np.mean((decoded[80].astype(float) - reference) ** 2))
    assert psnr > 30


def test_an_episode_without_camera_frames_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no camera frames"):
        write_video(EpisodeTimeline(title="empty", frames=[]), tmp_path / "x.mp4", fps=15.0)
