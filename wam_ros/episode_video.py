"""An episode as a video a person reads at a glance: the camera image with the supervisor state,
the expert in use and the task stage written over it, and below it the predicted value curve with
the peak the supervisor compares it to, the slip and every rollback marked. ROS-free: it draws
from a timeline of plain numbers (what `wam_ros.demo`'s monitor collected over DDS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wam_ros.msg import GateState

EXPERT_NAMES = {
    GateState.EXPERT_PREDICTIVE: "predictive",
    GateState.EXPERT_REACTIVE: "reactive",
    GateState.EXPERT_SCRIPTED: "scripted",
    GateState.EXPERT_TELEOP: "teleop",
    GateState.EXPERT_ROLLBACK: "rollback",
    GateState.EXPERT_UNKNOWN: "-",
}
STATE_COLOURS = {
    "RUNNING": (60, 200, 90),
    "ROLLING_BACK": (255, 150, 30),
    "RESAMPLING": (255, 210, 40),
    "HOLD": (230, 50, 50),
    "ESTOP": (230, 50, 50),
}
VALUE_COLOUR, PEAK_COLOUR, SLIP_COLOUR, ROLLBACK_COLOUR = (70, 140, 255), (150, 150, 150), (255, 150, 30), (230, 50, 50)


@dataclass
class EpisodeTimeline:
    """What happened in one episode, in sim seconds."""

    title: str
    frames: list[tuple[float, np.ndarray]]  # (stamp, rgb image)
    values: list[tuple[float, float, float]] = field(default_factory=list)  # (stamp, value, peak)
    experts: list[tuple[float, int]] = field(default_factory=list)  # (stamp, GateState.active_expert)
    states: list[tuple[float, str]] = field(default_factory=list)  # (time, supervisor state) at each change
    stages: list[tuple[float, str]] = field(default_factory=list)  # (time, task stage name) at each change
    rollbacks: list[float] = field(default_factory=list)
    slip: float | None = None
    success: float | None = None  # time the task succeeded


def _latest(series: list[tuple], t: float, default):
    """The newest entry at or before t (series sorted by time)."""
    out = default
    for entry in series:
        if entry[0] > t:
            break
        out = entry
    return out


def _value_panel(timeline: EpisodeTimeline, t: float, size: tuple[int, int], span: tuple[float, float]) -> Image.Image:
    width, height = size
    panel = Image.new("RGB", size, (20, 20, 24))
    draw = ImageDraw.Draw(panel)
    left, right, top, bottom = 34, width - 8, 16, height - 18
    t0, t1 = span
    values = [v for _, v, _ in timeline.values] + [p for _, _, p in timeline.values]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    low, high = min(low, 0.0), max(high, low + 1e-3)

    def x(time: float) -> float:
        return left + (right - left) * (time - t0) / max(t1 - t0, 1e-6)

    def y(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    draw.text((4, top - 2), f"{high:.2f}", fill=(200, 200, 200))
    draw.text((4, bottom - 10), f"{low:.2f}", fill=(200, 200, 200))
    draw.text((left + 4, 2), "predicted value", fill=VALUE_COLOUR)
    draw.text((left + 110, 2), "peak", fill=PEAK_COLOUR)
    draw.text((left, bottom + 4), f"{t0:.0f} s", fill=(200, 200, 200))
    draw.text((right - 30, bottom + 4), f"{t1:.0f} s", fill=(200, 200, 200))
    for when, colour, label in ([(timeline.slip, SLIP_COLOUR, "slip")] if timeline.slip is not None else []) + [
        (r, ROLLBACK_COLOUR, "rollback") for r in timeline.rollbacks
    ]:
        if when <= t:
            draw.line([x(when), top, x(when), bottom], fill=colour, width=2)
            draw.text((x(when) + 3, top + 2 + (12 if label == "rollback" else 0)), label, fill=colour)
    seen = [(s, v, p) for s, v, p in timeline.values if s <= t]
    if len(seen) > 1:
        draw.line([(x(s), y(p)) for s, _, p in seen], fill=PEAK_COLOUR, width=1)
        draw.line([(x(s), y(v)) for s, v, _ in seen], fill=VALUE_COLOUR, width=2)
    draw.line([x(t), top, x(t), bottom], fill=(230, 230, 230), width=1)
    return panel


PANEL_HEIGHT = 130
VIDEO_WIDTH = 640  # roughly: camera images are scaled by a whole factor, so their pixels stay sharp


def render_frame(timeline: EpisodeTimeline, index: int, span: tuple[float, float] | None = None) -> np.ndarray:
    """Frame `index` of the video: the camera image (scaled) over the value panel, as (H, W, 3) uint8."""
    t, image = timeline.frames[index]
    span = span or (timeline.frames[0][0], timeline.frames[-1][0])
    scale = max(1, VIDEO_WIDTH // image.shape[1])
    camera = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(camera)
    state = _latest(timeline.states, t, (0.0, "-"))[1]
    expert = EXPERT_NAMES.get(_latest(timeline.experts, t, (0.0, GateState.EXPERT_UNKNOWN))[1], "-")
    stage = _latest(timeline.stages, t, (0.0, "-"))[1]
    draw.rectangle([0, 0, camera.width, 44], fill=(0, 0, 0))
    draw.text((6, 2), f"{timeline.title}   t = {t:5.2f} s", fill=(255, 255, 255))
    draw.text((6, 16), "supervisor: ", fill=(255, 255, 255))
    draw.text((84, 16), state, fill=STATE_COLOURS.get(state, (255, 255, 255)))
    draw.text((190, 16), f"expert: {expert}", fill=(255, 255, 255))
    draw.text((6, 30), f"stage: {stage}", fill=(255, 255, 255))
    if timeline.success is not None and t >= timeline.success:
        draw.text((190, 30), "SUCCESS", fill=(60, 200, 90))
    if state in ("ROLLING_BACK", "RESAMPLING"):
        draw.rectangle([0, camera.height - 24, camera.width, camera.height], fill=STATE_COLOURS[state])
        draw.text((8, camera.height - 18), "ROLLBACK to the last high-value checkpoint", fill=(0, 0, 0))
    panel = _value_panel(timeline, t, (camera.width, PANEL_HEIGHT), span)
    frame = np.concatenate([np.asarray(camera), np.asarray(panel)], axis=0)
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]  # even sizes for yuv420p


def write_video(timeline: EpisodeTimeline, path: Path, fps: float) -> int:
    """H.264 MP4 (yuv420p: plays in browsers and every player) of every frame; returns the count."""
    import av

    if not timeline.frames:
        raise ValueError(f"{timeline.title}: no camera frames to write")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "g": str(round(fps))}
        for index in range(len(timeline.frames)):
            frame = render_frame(timeline, index)
            if index == 0:
                stream.width, stream.height = frame.shape[1], frame.shape[0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(timeline.frames)
