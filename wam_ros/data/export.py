"""Episode bags → training datasets (ROS-free): LeRobot v3 and ALOHA / Cobot Magic HDF5.

Both formats carry, per frame, the Monte Carlo value target and the gate label with the Model
issue's definitions (wam_ros.model.targets: progress_targets of the success reward, gamma 0.99;
interaction labels +-20 frames around a gripper open<->close event of either arm), so a dataset
exported here and one built in memory train identically. Both load back as
wam_ros.model.episodes.Episode lists (`load_dataset` dispatches on the layout).

LeRobot v3 layout (one data file and one video file per camera, episodes concatenated):
  meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
  data/chunk-000/file-000.parquet
  videos/observation.images.<cam>/chunk-000/file-000.mp4     color (h264, av1, or lossless RGB)
  videos/observation.depth.<cam>/chunk-000/file-000.mp4      depth, FFV1 gray16le (lossless mm)
ALOHA HDF5: episode_<i>.hdf5 with /observations/qpos, /observations/qvel,
  /observations/images/<cam> (T, H, W, 3) uint8, /observations/depth/<cam> (T, H, W) uint16,
  /action, /value_target, /gate_label; attrs sim, compress, fps, task, success, joint_names.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from wam_ros import __version__
from wam_ros.data.bag import BagError
from wam_ros.data.episodes import EpisodeIndex, index_episode, iter_frames
from wam_ros.model.action_space import gripper_columns
from wam_ros.model.episodes import DatasetError, DatasetMeta, Episode
from wam_ros.model.normalization import statistics
from wam_ros.model.targets import frame_targets

FORMATS = ("lerobot", "hdf5")
VIDEO_CODECS = {  # name -> (ffmpeg encoder, pixel format, options)
    "h264": ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}),
    "av1": ("libsvtav1", "yuv420p", {"crf": "30", "preset": "8"}),
    "lossless": ("libx264rgb", "rgb24", {"crf": "0", "preset": "veryfast"}),
}
DEPTH_CODEC = ("ffv1", "gray16le")
CHUNK = "chunk-000/file-000"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


@dataclass(frozen=True)
class ExportConfig:
    fps: float = 15.0
    gamma: float = 0.99
    gate_window: int = 20
    reward: str = "success"            # value_target column: success, or stages (the recorded stage markers)
    video_codec: str = "h264"
    include_failures: bool = True      # failed and partial episodes teach the value head what failing looks like
    progress: bool = True

    def __post_init__(self) -> None:
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec {self.video_codec!r}: expected one of {', '.join(VIDEO_CODECS)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


def targets(index: EpisodeIndex, cfg: ExportConfig) -> tuple[np.ndarray, np.ndarray]:
    """(value_target, gate_label) per frame, as training computes them."""
    return frame_targets(index.state[:, gripper_columns(index.joint_names)], index.success, index.stage_frames,
                         cfg.reward, gamma=cfg.gamma, window=cfg.gate_window)


def _indices(paths: Iterable[Path], cfg: ExportConfig) -> list[EpisodeIndex]:
    out = []
    for path in paths:
        index = index_episode(path, cfg.fps)
        if not cfg.include_failures and not index.success:
            continue
        if out and (index.joint_names != out[0].joint_names or index.cameras != out[0].cameras):
            raise BagError(f"{path}: joints {index.joint_names} / cameras {index.cameras} differ from "
                           f"{out[0].path}'s; export them into separate datasets")
        if len(index) < 2:
            raise BagError(f"{path}: only {len(index)} frame at {cfg.fps} fps")
        out.append(index)
    if not out:
        raise BagError("no episodes to export")
    return out


def _bar(total: int, desc: str, cfg: ExportConfig):
    return tqdm(total=total, desc=desc, unit="frame", disable=not cfg.progress, file=sys.stderr, leave=False)


class _VideoWriter:
    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: tuple[str, str, dict], pix_in: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec[0], rate=int(round(fps)))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = codec[1]
        self.stream.options = dict(codec[2])
        self.pix_in = pix_in

    def write(self, array: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=self.pix_in)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def read_video(path: Path, pix: str) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format=pix) for f in container.decode(video=0)])


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BagError(f"{out}: exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _feature(dtype: str, shape: list[int], names: Any = None, info: dict | None = None) -> dict:
    f: dict[str, Any] = {"dtype": dtype, "shape": shape, "names": names}
    if info:
        f["info"] = info
    return f


def export_lerobot(paths: list[Path], out: Path, cfg: ExportConfig, robot: str = "", overwrite: bool = False) -> dict:
    indices = _indices(paths, cfg)
    out = Path(out)
    _prepare_out(out, overwrite)
    first = indices[0]
    tasks = sorted({ix.task for ix in indices})
    task_index = {t: i for i, t in enumerate(tasks)}
    color = VIDEO_CODECS[cfg.video_codec]
    color_writers: dict[str, _VideoWriter] = {}
    depth_writers: dict[str, _VideoWriter] = {}
    rows: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index", "episode_index",
                                              "index", "task_index", "value_target", "gate_label", "next.done")}
    episodes_meta = []
    image_sizes: dict[str, tuple[int, int]] = {}
    total = 0
    bar = _bar(sum(len(ix) for ix in indices), "export lerobot", cfg)
    try:
        for e, ix in enumerate(indices):
            value, gate = targets(ix, cfg)
            start_ts = total / cfg.fps
            for k, colors, depths in iter_frames(ix):
                for cam in ix.cameras:
                    rgb = colors[cam]
                    if cam not in color_writers:
                        image_sizes[cam] = rgb.shape[:2]
                        color_writers[cam] = _VideoWriter(
                            out / VIDEO_PATH.format(video_key=f"observation.images.{cam}", chunk_index=0, file_index=0),
                            cfg.fps, rgb.shape[:2], color, "rgb24")
                    if rgb.shape[:2] != image_sizes[cam]:
                        raise BagError(f"{ix.path}: {cam} images are {rgb.shape[:2]}, earlier {image_sizes[cam]}")
                    color_writers[cam].write(rgb)
                    if cam in depths:
                        if cam not in depth_writers:
                            depth_writers[cam] = _VideoWriter(
                                out / VIDEO_PATH.format(video_key=f"observation.depth.{cam}", chunk_index=0, file_index=0),
                                cfg.fps, depths[cam].shape[:2], (*DEPTH_CODEC, {}), "gray16le")
                        depth_writers[cam].write(depths[cam])
                rows["observation.state"].append(ix.state[k].astype(np.float32))
                rows["action"].append(ix.action[k].astype(np.float32))
                rows["timestamp"].append(np.float32(k / cfg.fps))
                rows["frame_index"].append(k)
                rows["episode_index"].append(e)
                rows["index"].append(total + k)
                rows["task_index"].append(task_index[ix.task])
                rows["value_target"].append(value[k])
                rows["gate_label"].append(gate[k])
                rows["next.done"].append(k == len(ix) - 1)
                bar.update(1)
            meta = {"episode_index": e, "tasks": [ix.task], "length": len(ix), "data/chunk_index": 0,
                    "data/file_index": 0, "dataset_from_index": total, "dataset_to_index": total + len(ix),
                    "success": ix.success, "outcome": str(ix.record.get("outcome", "")),
                    "stage_frames": list(ix.stage_frames), "teleop": str(ix.record.get("teleop", "")),
                    "source_bag": str(ix.path.resolve())}
            for key in [*(f"observation.images.{c}" for c in ix.cameras), *(f"observation.depth.{c}" for c in depth_writers)]:
                meta.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                             f"videos/{key}/from_timestamp": start_ts,
                             f"videos/{key}/to_timestamp": start_ts + len(ix) / cfg.fps})
            episodes_meta.append(meta)
            total += len(ix)
    finally:
        bar.close()
        for writer in [*color_writers.values(), *depth_writers.values()]:
            writer.close()
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    table = pa.table({k: pa.array(np.stack(v).tolist() if k in ("observation.state", "action") else v,
                                  type=pa.list_(pa.float32()) if k in ("observation.state", "action") else None)
                      for k, v in rows.items()})
    pq.write_table(table, out / DATA_PATH.format(chunk_index=0, file_index=0))
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes_meta), out / "meta" / "episodes" / f"{CHUNK}.parquet")
    pq.write_table(pa.table({"task_index": list(range(len(tasks))), "task": tasks}), out / "meta" / "tasks.parquet")

    names = first.joint_names
    features = {
        "observation.state": _feature("float32", [len(names)], names),
        "action": _feature("float32", [len(names)], names),
        "timestamp": _feature("float32", [1]), "frame_index": _feature("int64", [1]),
        "episode_index": _feature("int64", [1]), "index": _feature("int64", [1]), "task_index": _feature("int64", [1]),
        "value_target": _feature("float32", [1]), "gate_label": _feature("float32", [1]), "next.done": _feature("bool", [1]),
    }
    for cam, (h, w) in image_sizes.items():
        features[f"observation.images.{cam}"] = _feature(
            "video", [h, w, 3], ["height", "width", "channels"],
            {"video.fps": cfg.fps, "video.height": h, "video.width": w, "video.channels": 3, "video.codec": color[0],
             "video.pix_fmt": color[1], "video.is_depth_map": False, "has_audio": False})
    for cam, writer in depth_writers.items():
        features[f"observation.depth.{cam}"] = _feature(
            "video", [writer.stream.height, writer.stream.width, 1], ["height", "width", "channels"],
            {"video.fps": cfg.fps, "video.codec": DEPTH_CODEC[0], "video.pix_fmt": DEPTH_CODEC[1],
             "video.is_depth_map": True, "depth.unit": "mm", "has_audio": False})
    info = {"codebase_version": "v3.0", "robot_type": robot or str(first.record.get("robot", "")),
            "total_episodes": len(indices), "total_frames": total, "total_tasks": len(tasks), "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": cfg.fps,
            "splits": {"train": f"0:{len(indices)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features,
            "wam_ros": {"software": f"wam_ros {__version__}", "action_space": "joint_position",
                        "cameras": first.cameras, "intrinsics": first.intrinsics, "gamma": cfg.gamma,
                        "gate_window": cfg.gate_window, "calibration": first.record.get("calibration", {})}}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    stats = dataset_statistics(np.stack(rows["observation.state"]), np.stack(rows["action"]),
                               np.asarray(rows["value_target"]), np.asarray(rows["gate_label"]))
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    return {"format": "lerobot", "path": str(out), "episodes": len(indices), "frames": total, "cameras": first.cameras}


def dataset_statistics(state: np.ndarray, action: np.ndarray, value: np.ndarray, gate: np.ndarray) -> dict:
    """Per-feature statistics with q01/q99 (what the normaliser uses) and counts."""
    out = {}
    for key, values in (("observation.state", state), ("action", action), ("value_target", value[:, None]),
                        ("gate_label", gate[:, None])):
        out[key] = {**statistics(values), "count": [int(len(values))]}
    return out


def export_hdf5(paths: list[Path], out: Path, cfg: ExportConfig, robot: str = "", overwrite: bool = False) -> dict:
    indices = _indices(paths, cfg)
    out = Path(out)
    _prepare_out(out, overwrite)
    bar = _bar(sum(len(ix) for ix in indices), "export hdf5", cfg)
    total = 0
    try:
        for e, ix in enumerate(indices):
            value, gate = targets(ix, cfg)
            with h5py.File(out / f"episode_{e}.hdf5", "w") as f:
                f.attrs.update({"sim": bool(ix.record.get("sim", False)), "compress": False, "fps": cfg.fps,
                                "task": ix.task, "success": ix.success, "outcome": str(ix.record.get("outcome", "")),
                                "stage_frames": json.dumps(ix.stage_frames),
                                "robot": robot or str(ix.record.get("robot", "")), "joint_names": json.dumps(ix.joint_names),
                                "cameras": json.dumps(ix.cameras), "intrinsics": json.dumps(ix.intrinsics),
                                "source_bag": str(ix.path.resolve()), "software": f"wam_ros {__version__}"})
                obs = f.create_group("observations")
                obs.create_dataset("qpos", data=ix.state)
                obs.create_dataset("qvel", data=np.gradient(ix.state, 1.0 / cfg.fps, axis=0))
                f.create_dataset("action", data=ix.action)
                f.create_dataset("value_target", data=value)
                f.create_dataset("gate_label", data=gate)
                images, depths = obs.create_group("images"), obs.create_group("depth")
                for k, colors, depth in iter_frames(ix):
                    for cam in ix.cameras:
                        if cam not in images:
                            h, w = colors[cam].shape[:2]
                            images.create_dataset(cam, (len(ix), h, w, 3), np.uint8, chunks=(1, h, w, 3))
                            if cam in depth:
                                depths.create_dataset(cam, (len(ix), h, w), np.uint16, chunks=(1, h, w),
                                                      compression="gzip", compression_opts=1)
                        images[cam][k] = colors[cam]
                        if cam in depth:
                            depths[cam][k] = depth[cam]
                    bar.update(1)
            total += len(ix)
    finally:
        bar.close()
    return {"format": "hdf5", "path": str(out), "episodes": len(indices), "frames": total,
            "cameras": indices[0].cameras}


EXPORTERS: dict[str, Callable[..., dict]] = {"lerobot": export_lerobot, "hdf5": export_hdf5}


# --- loading exported datasets as training episodes --------------------------------------------
def is_lerobot(path: Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def is_hdf5(path: Path) -> bool:
    return bool(sorted(Path(path).glob("episode_*.hdf5")))


def dataset_digest(path: Path) -> str:
    """SHA-256 over every file of an exported dataset (relative path and content, in path order):
    names the exact data a checkpoint was trained on."""
    import hashlib

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise DatasetError(f"{root}: no dataset files to digest")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DatasetSummary:
    """What `wam-ros dataset info` reports, read from the metadata alone (no video decoded)."""

    meta: DatasetMeta
    lengths: list[int]
    successes: list[bool]
    tasks: list[str]
    image_size: tuple[int, int]


def _lerobot_meta(info: dict) -> DatasetMeta:
    features = info["features"]
    names = features["observation.state"]["names"]
    cameras = info.get("wam_ros", {}).get("cameras") or [k.split(".", 2)[2] for k in features
                                                          if k.startswith("observation.images.")]
    return DatasetMeta(cameras=list(cameras), state_names=list(names), action_names=list(names),
                       action_space="joint_position", fps=float(info["fps"]))


def summarize_lerobot(path: Path) -> DatasetSummary:
    path = Path(path)
    info = json.loads((path / "meta" / "info.json").read_text())
    meta = _lerobot_meta(info)
    episodes = pq.read_table(path / "meta" / "episodes" / f"{CHUNK}.parquet").to_pylist()
    shape = info["features"][f"observation.images.{meta.cameras[0]}"]["shape"]
    return DatasetSummary(meta, [int(e["length"]) for e in episodes], [bool(e["success"]) for e in episodes],
                          sorted({t for e in episodes for t in e["tasks"]}), (int(shape[0]), int(shape[1])))


def load_lerobot(path: Path) -> tuple[DatasetMeta, list[Episode]]:
    path = Path(path)
    info = json.loads((path / "meta" / "info.json").read_text())
    meta = _lerobot_meta(info)
    cameras, features = meta.cameras, info["features"]
    data = pq.read_table(path / DATA_PATH.format(chunk_index=0, file_index=0)).to_pydict()
    episodes_meta = pq.read_table(path / "meta" / "episodes" / f"{CHUNK}.parquet").to_pylist()
    tasks = pq.read_table(path / "meta" / "tasks.parquet").to_pydict()
    task_of = dict(zip(tasks["task_index"], tasks["task"]))
    color = {c: read_video(path / VIDEO_PATH.format(video_key=f"observation.images.{c}", chunk_index=0, file_index=0),
                           "rgb24") for c in cameras}
    depth = {c: read_video(path / VIDEO_PATH.format(video_key=f"observation.depth.{c}", chunk_index=0, file_index=0),
                           "gray16le") for c in cameras if f"observation.depth.{c}" in features}
    state, action = np.asarray(data["observation.state"]), np.asarray(data["action"])
    episodes = []
    for episode in episodes_meta:
        a, b = episode["dataset_from_index"], episode["dataset_to_index"]
        episodes.append(Episode(
            rgb=np.stack([color[c][a:b] for c in cameras], axis=1), state=state[a:b].astype(np.float64),
            action=action[a:b].astype(np.float64), task=task_of[data["task_index"][a]],
            success=bool(episode["success"]), stage_frames=[int(f) for f in episode.get("stage_frames") or []],
            depth=np.stack([depth[c][a:b] for c in cameras], axis=1) if len(depth) == len(cameras) else None))
    return meta, episodes


def _hdf5_episodes(path: Path) -> Iterator[tuple[h5py.File, DatasetMeta]]:
    """Each episode file, open, with its layout; all must share the first one's."""
    files = sorted(Path(path).glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))
    if not files:
        raise DatasetError(f"{path}: no episode_*.hdf5 files")
    first = None
    for file in files:
        with h5py.File(file, "r") as f:
            cameras = json.loads(f.attrs["cameras"]) if "cameras" in f.attrs else sorted(f["observations/images"])
            names = json.loads(f.attrs["joint_names"]) if "joint_names" in f.attrs else \
                [f"joint_{i}" for i in range(f["observations/qpos"].shape[1])]
            meta = DatasetMeta(cameras=list(cameras), state_names=names, action_names=names,
                               action_space="joint_position", fps=float(f.attrs.get("fps", 50.0)))  # ALOHA: 50 Hz
            if first is not None and meta != first:
                raise DatasetError(f"{file}: cameras/joints/fps differ from the first episode's")
            first = meta
            yield f, meta


def summarize_hdf5(path: Path) -> DatasetSummary:
    lengths, successes, tasks, size, meta = [], [], set(), (0, 0), None
    for f, meta in _hdf5_episodes(path):
        lengths.append(int(f["observations/qpos"].shape[0]))
        successes.append(bool(f.attrs.get("success", True)))
        tasks.add(str(f.attrs.get("task", "")))
        size = tuple(int(v) for v in f[f"observations/images/{meta.cameras[0]}"].shape[1:3])
    return DatasetSummary(meta, lengths, successes, sorted(tasks), size)


def load_hdf5(path: Path) -> tuple[DatasetMeta, list[Episode]]:
    episodes, meta = [], None
    for f, meta in _hdf5_episodes(path):
        cameras = meta.cameras
        depth_group = f["observations"].get("depth")
        episodes.append(Episode(
            rgb=np.stack([f[f"observations/images/{c}"][()] for c in cameras], axis=1),
            state=f["observations/qpos"][()], action=f["action"][()],
            task=str(f.attrs.get("task", "")), success=bool(f.attrs.get("success", True)),
            stage_frames=json.loads(f.attrs.get("stage_frames", "[]")),
            depth=np.stack([depth_group[c][()] for c in cameras], axis=1)
            if depth_group is not None and all(c in depth_group for c in cameras) else None))
    return meta, episodes
