"""Recorded episode bags → frames at a fixed rate (ROS-free).

Pass 1 reads everything but the image payloads: joint states, commanded trajectories, camera
intrinsics, and the header stamps of the image messages (the first bytes of their CDR). It fixes
the frame times t_k = t_0 + k / fps over the span every stream covers, and per image stream the
message each frame shows: the latest one stamped at or before t_k (a frame never sees the
future). Pass 2 decodes only those messages, streaming frames in order, so an hour-long episode
never has to fit in memory.

Per frame k:
  state   joint positions linearly interpolated at t_k
  action  the commanded target for t_k + 1/fps (the trajectory the supervisor passed last before
          t_k, evaluated one frame ahead), the same convention as wam_ros.data.dataset;
          without recorded commands, the next frame's state
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rosbags.highlevel import AnyReader

from wam_ros.data.bag import BagError, is_being_recorded, is_complete, read_episode_record, recover, typestore
from wam_ros.data.images import decode_compressed, depth_to_millimetres, image_array

JOINT_STATES = "joint_states"
TRAJECTORY = "joint_trajectory"
TASK_STATE = "task/state"  # the simulator's stage markers (wam_ros/TaskState)
SET_TOPIC = "observations"
COLOR_SUFFIXES = ("/color/image_raw", "/color/image_raw/compressed")
DEPTH_SUFFIXES = (
    "/aligned_depth_to_color/image_raw",
    "/aligned_depth_to_color/image_raw/compressed",
    "/depth/image_raw",
    "/depth/image_raw/compressed",
)
INFO_SUFFIX = "/color/camera_info"


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp of a CDR message that starts with std_msgs/Header (Image, CompressedImage,
    MultiViewRGBD) without deserializing the rest."""
    if raw[1] != 1:
        raise BagError("big-endian CDR is not supported")
    sec, nanosec = struct.unpack_from("<iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def _stamp_ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@dataclass
class _Stream:
    topic: str
    kind: str  # set | color | depth
    camera: str  # "" for a set
    stamps: list[int] = field(default_factory=list)


@dataclass
class EpisodeIndex:
    """Everything about a recorded episode except the image payloads."""

    path: Path
    record: dict[str, Any]
    joint_names: list[str]
    cameras: list[str]
    fps: float
    times: np.ndarray  # (T,) ns, frame times
    state: np.ndarray  # (T, J)
    action: np.ndarray  # (T, J)
    intrinsics: dict[str, list[float]]
    image_size: dict[str, tuple[int, int]]
    has_depth: bool
    streams: list[_Stream]
    picks: dict[str, np.ndarray]  # stream topic -> (T,) message index shown by each frame
    commands_recorded: bool
    stage_frames: list[int] = field(default_factory=list)  # frame at which each stage was completed

    def __len__(self) -> int:
        return len(self.times)

    @property
    def success(self) -> bool:
        return self.record.get("outcome") == "success"

    @property
    def task(self) -> str:
        return str(self.record.get("task", ""))


def _camera_of(topic: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if topic.endswith(suffix):
            return topic[: -len(suffix)].strip("/").split("/")[-1]
    return None


def _evaluate_command(
    commands: list[tuple[int, list[str], np.ndarray, np.ndarray]],
    starts: np.ndarray,
    index: dict[str, int],
    t_ns: int,
    fallback: np.ndarray,
) -> np.ndarray:
    """Target at t of the last trajectory started at or before t (held after its last point);
    `starts` are the commands' start times, sorted."""
    out = fallback.copy()
    i = int(np.searchsorted(starts, t_ns, side="right")) - 1
    if i < 0:
        return out
    start, names, offsets, positions = commands[i]
    row = np.array([np.interp((t_ns - start) * 1e-9, offsets, positions[:, j]) for j in range(len(names))])
    for name, value in zip(names, row):
        if name in index:
            out[index[name]] = value
    return out


def index_episode(path: Path, fps: float) -> EpisodeIndex:
    """Pass 1 (see the module doc). A bag left by a killed recorder is recovered first."""
    path = Path(path)
    if not path.is_dir():
        raise BagError(f"{path}: not an episode bag directory")
    record = recover(path) if not is_complete(path) else read_episode_record(path)
    if fps <= 0:
        raise BagError(f"fps must be > 0, got {fps}")
    store = typestore()
    joint_t, joint_q, joint_names = [], [], None
    commands: list[tuple[int, list[str], np.ndarray, np.ndarray]] = []
    streams: dict[str, _Stream] = {}
    intrinsics: dict[str, list[float]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    with AnyReader([path], default_typestore=store) as reader:
        for conn in reader.connections:
            cam = _camera_of(conn.topic, COLOR_SUFFIXES)
            if conn.topic.rstrip("/").endswith(SET_TOPIC) and conn.msgtype == "wam_ros/msg/MultiViewRGBD":
                streams[conn.topic] = _Stream(conn.topic, "set", "")
            elif cam:
                streams[conn.topic] = _Stream(conn.topic, "color", cam)
            elif cam := _camera_of(conn.topic, DEPTH_SUFFIXES):
                streams[conn.topic] = _Stream(conn.topic, "depth", cam)
        wanted = [
            c
            for c in reader.connections
            if c.topic in streams or c.topic.endswith((JOINT_STATES, TRAJECTORY, INFO_SUFFIX, TASK_STATE))
        ]
        stage_reached: dict[int, int] = {}  # stage -> first stamp (ns) at which it was completed
        set_cameras: list[str] | None = None  # every camera a set names (a degraded set leaves a view empty)
        set_seen: set[str] = set()
        sets_complete_ns = 0  # the first set stamp by which every named view has shown an image
        for conn, log_ns, raw in reader.messages(connections=wanted):
            if conn.topic in streams:
                stream = streams[conn.topic]
                stream.stamps.append(header_stamp_ns(raw))
                if stream.kind == "set" and (set_cameras is None or len(set_seen) < len(set_cameras)):
                    msg = reader.deserialize(raw, conn.msgtype)
                    set_cameras = set_cameras or list(msg.camera_names)
                    for name, info, image, depth in zip(msg.camera_names, msg.color_info, msg.color, msg.depth):
                        if len(image.data) and len(depth.data) and name not in set_seen:
                            set_seen.add(name)
                            intrinsics[name] = [float(v) for v in info.k]
                            sizes[name] = (int(image.height), int(image.width))
                    sets_complete_ns = stream.stamps[-1]
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic.endswith(JOINT_STATES):
                if joint_names is None:
                    joint_names = list(msg.name)
                if list(msg.name) != joint_names:
                    order = {n: i for i, n in enumerate(msg.name)}
                    if not all(n in order for n in joint_names):
                        continue  # a partial joint state (another publisher); the full stream carries on
                    position = np.array([msg.position[order[n]] for n in joint_names])
                else:
                    position = np.asarray(msg.position, dtype=float)
                joint_t.append(_stamp_ns(msg.header.stamp) or log_ns)
                joint_q.append(position)
            elif conn.topic.endswith(TRAJECTORY) and len(msg.points):
                stamp = _stamp_ns(msg.header.stamp)
                offsets = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
                positions = np.array([p.positions for p in msg.points], dtype=float)
                commands.append((stamp or log_ns, list(msg.joint_names), offsets, positions))
            elif conn.topic.endswith(TASK_STATE):
                stamp = _stamp_ns(msg.header.stamp) or log_ns
                for stage in range(1, int(msg.stage) + 1):
                    stage_reached[stage] = min(stage_reached.get(stage, stamp), stamp)
            elif conn.topic.endswith(INFO_SUFFIX):
                cam = conn.topic[: -len(INFO_SUFFIX)].strip("/").split("/")[-1]
                intrinsics.setdefault(cam, [float(v) for v in msg.k])
                sizes.setdefault(cam, (int(msg.height), int(msg.width)))
    if not joint_t:
        raise BagError(f"{path}: no joint_states messages")
    image_streams = [s for s in streams.values() if s.stamps]
    if not image_streams:
        raise BagError(f"{path}: no camera images (observations or <cam>/color/image_raw)")
    cameras = sorted({s.camera for s in image_streams if s.kind == "color"})
    if any(s.kind == "set" for s in image_streams):
        if cameras:
            raise BagError(f"{path}: both synced observations and raw camera topics; export one of them")
        missing = [c for c in set_cameras or [] if c not in set_seen]
        if missing:
            raise BagError(f"{path}: camera(s) {', '.join(missing)} never delivered an image in any observation set")
        cameras = list(set_cameras or [])
    order = np.argsort(joint_t, kind="stable")
    joint_t_arr, joint_q_arr = np.asarray(joint_t)[order], np.asarray(joint_q)[order]
    start = max([int(joint_t_arr[0]), sets_complete_ns] + [s.stamps[0] for s in image_streams])
    end = min([int(joint_t_arr[-1])] + [s.stamps[-1] for s in image_streams])
    if end < start:
        raise BagError(f"{path}: the joint and image streams do not overlap in time")
    step = 1e9 / fps
    times = (start + np.arange(int((end - start) // step) + 1) * step).astype(np.int64)
    state = np.stack([np.interp(times, joint_t_arr, joint_q_arr[:, j]) for j in range(joint_q_arr.shape[1])], axis=1)
    commands.sort(key=lambda c: c[0])
    index = {n: i for i, n in enumerate(joint_names)}
    if commands:
        starts = np.array([c[0] for c in commands])
        action = np.stack(
            [_evaluate_command(commands, starts, index, int(t + step), state[k]) for k, t in enumerate(times)]
        )
    else:
        action = np.vstack([state[1:], state[-1:]])
    picks = {}
    for s in image_streams:
        stamps = np.asarray(s.stamps)
        picks[s.topic] = np.clip(np.searchsorted(stamps, times, side="right") - 1, 0, len(stamps) - 1)
    has_depth = any(s.kind == "depth" for s in image_streams) or any(s.kind == "set" for s in image_streams)
    stage_frames = [int(min(np.searchsorted(times, stage_reached[k]), len(times) - 1)) for k in sorted(stage_reached)]
    return EpisodeIndex(
        path,
        record,
        joint_names,
        cameras,
        fps,
        times,
        state,
        action,
        intrinsics,
        sizes,
        has_depth,
        image_streams,
        picks,
        bool(commands),
        stage_frames,
    )


def _image(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype == "sensor_msgs/msg/CompressedImage":
        return decode_compressed(msg.format, msg.data)
    array = image_array(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
    if array.dtype == np.float32:
        return depth_to_millimetres(array)
    return array[..., ::-1] if msg.encoding == "bgr8" else array


def iter_frames(episode: EpisodeIndex) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Pass 2: (frame index, {camera: rgb (H, W, 3) uint8}, {camera: depth (H, W) uint16 mm}) in
    frame order, decoding each picked message once."""
    needed = {topic: set(picks.tolist()) for topic, picks in episode.picks.items()}
    counters = {topic: -1 for topic in episode.picks}
    decoded: dict[str, dict[int, Any]] = {topic: {} for topic in episode.picks}
    kinds = {s.topic: s for s in episode.streams}
    next_frame = 0
    total = len(episode)

    def ready(k: int) -> bool:
        return all(counters[t] >= episode.picks[t][k] for t in episode.picks)

    def emit(k: int):
        colors: dict[str, np.ndarray] = {}
        depths: dict[str, np.ndarray] = {}
        for topic, picks in episode.picks.items():
            stream, value = kinds[topic], decoded[topic][int(picks[k])]
            if stream.kind == "set":
                colors.update(value[0])
                depths.update(value[1])
            elif stream.kind == "color":
                colors[stream.camera] = value
            else:
                depths[stream.camera] = value
        return k, colors, depths

    # per set topic, each camera's latest delivered (color, depth): a degraded set's empty view shows
    # the camera's previous image, as a raw topic's frame shows the latest image before it
    latest_views: dict[str, dict[str, tuple[Any, Any]]] = {topic: {} for topic in episode.picks}
    with AnyReader([episode.path], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic in episode.picks]
        for conn, _, raw in reader.messages(connections=conns):
            topic = conn.topic
            counters[topic] += 1
            j = counters[topic]
            if kinds[topic].kind == "set":
                msg = reader.deserialize(raw, conn.msgtype)
                views = latest_views[topic]
                for name, color, depth in zip(msg.camera_names, msg.color, msg.depth):
                    if len(color.data) and len(depth.data):
                        views[name] = (color, depth)
                if j in needed[topic]:
                    decoded[topic][j] = (
                        {n: _image(c, "sensor_msgs/msg/Image") for n, (c, _) in views.items()},
                        {n: _image(d, "sensor_msgs/msg/Image") for n, (_, d) in views.items()},
                    )
            elif j in needed[topic]:
                decoded[topic][j] = _image(reader.deserialize(raw, conn.msgtype), conn.msgtype)
            while next_frame < total and ready(next_frame):
                yield emit(next_frame)
                next_frame += 1
                # forget what no later frame shows
                for t in episode.picks:
                    if next_frame < total:
                        keep = int(episode.picks[t][next_frame])
                        for old in [i for i in decoded[t] if i < keep]:
                            del decoded[t][old]
    if next_frame < total:
        raise BagError(f"{episode.path}: image streams ended at frame {next_frame} of {total}")


def episode_paths(sources: list[Path]) -> list[Path]:
    """Episode bag directories from paths that are either episodes or directories of episodes.
    In a directory, an episode still being recorded is left out (a named one is refused later)."""
    out: list[Path] = []
    for source in map(Path, sources):
        if (source / "metadata.yaml").is_file() or list(source.glob("*.mcap")):
            out.append(source)
        elif source.is_dir():
            found = sorted(
                p for p in source.iterdir() if p.is_dir() and list(p.glob("*.mcap")) and not is_being_recorded(p)
            )
            if not found:
                raise BagError(f"{source}: no episode bags (directories with an .mcap file)")
            out.extend(found)
        else:
            raise BagError(f"{source}: not found")
    return out
