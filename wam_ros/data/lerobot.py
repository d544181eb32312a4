"""LeRobot v3.0 datasets (ROS-free): written as LeRobot 0.6 writes them, read whoever wrote them.

An export here loads in `LeRobotDataset`, edits with LeRobot's dataset tools (delete, split,
merge) and trains with `lerobot-train`; a dataset LeRobot wrote trains in `wam-ros train`.

  meta/info.json     features with LeRobot's video info (codec names, GOP, depth quantiser)
  meta/stats.json    min max mean std count q01 q10 q50 q90 q99 per feature; images per channel in
                     [0, 1] as (3, 1, 1), depth in millimetres as (1, 1, 1)
  meta/tasks.parquet the instruction strings as the index named `task` (pandas layout), task_index
  meta/episodes/chunk-000/file-000.parquet  one row per episode: its data and video locations,
                     its tasks and `stats/<feature>/<stat>` (what LeRobot's editing tools rebuild
                     the statistics from), and this package's success / outcome / stage markers
  data/chunk-000/file-000.parquet           state, action (fixed-size float32 lists), timestamp,
                     indices, task_index, value_target, gate_label
  videos/observation.images.<cam>/chunk-000/file-000.mp4   colour: h264 (or av1, or lossless RGB)
  videos/observation.depth.<cam>/chunk-000/file-000.mp4    depth: LeRobot's depth map, HEVC
                     gray12le lossless, 12-bit codes of the depth quantiser in the feature's info

Depth: LeRobot stores 12-bit codes of a quantiser (log by default, 0.01-10 m). The export uses the
same quantiser linear from 0 to 4.095 m, so a code is the depth in millimetres: lossless to the
millimetre up to 4.095 m, farther depth is clipped to 4.095 m (counted in the export's result).
Readers of either setting decode it with the parameters in the feature's info.
Every video has a keyframe every 2 frames, as LeRobot writes them: random access decodes at most
one extra frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wam_ros import __version__
from wam_ros.data.bag import BagError
from wam_ros.data.bag_frames import iter_frames
from wam_ros.data.dataset import DatasetError, DatasetMeta, Episode, statistics
from wam_ros.data.export import DatasetSummary, ExportConfig, episode_indices, prepare_out, progress_bar, targets

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
EXTRAS_PATH = "meta/wam_ros.json"
GOP = 2  # LeRobot's keyframe interval
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STAT_PIXELS = 4096  # pixels per frame sampled for image statistics


@dataclass(frozen=True)
class VideoCodec:
    encoder: str  # FFmpeg encoder
    name: str  # the codec's name, what LeRobot's info stores
    pix_fmt: str
    options: dict[str, str]


COLOR_CODECS = {
    "h264": VideoCodec("libx264", "h264", "yuv420p", {"crf": "18", "preset": "veryfast"}),
    "av1": VideoCodec("libsvtav1", "av1", "yuv420p", {"crf": "30", "preset": "8"}),
    "lossless": VideoCodec("libx264rgb", "h264", "rgb24", {"crf": "0", "preset": "veryfast"}),
}
DEPTH_CODEC = VideoCodec("libx265", "hevc", "gray12le", {"x265-params": "lossless=1:log-level=error"})
DEPTH_QMAX = 4095


@dataclass(frozen=True)
class DepthQuantizer:
    """LeRobot's depth quantiser: depth in metres <-> 12-bit codes, log (the LeRobot default) or linear."""

    depth_min: float = 0.0  # m, at code 0
    depth_max: float = 4.095  # m, at code 4095 (linear from 0: one code per millimetre)
    shift: float = 3.5  # m, inside the log
    use_log: bool = False

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "DepthQuantizer":
        """From a depth feature's info; absent keys take LeRobot's defaults (log, 0.01-10 m)."""
        return cls(
            depth_min=float(info.get("video.depth_min", 0.01)),
            depth_max=float(info.get("video.depth_max", 10.0)),
            shift=float(info.get("video.shift", 3.5)),
            use_log=bool(info.get("video.use_log", True)),
        )

    def info(self) -> dict[str, Any]:
        return {
            "video.depth_min": self.depth_min,
            "video.depth_max": self.depth_max,
            "video.shift": self.shift,
            "video.use_log": self.use_log,
        }

    def encode(self, depth_mm: np.ndarray) -> np.ndarray:
        metres = depth_mm.astype(np.float64) / 1000.0
        if self.use_log:
            low, high = math.log(self.depth_min + self.shift), math.log(self.depth_max + self.shift)
            norm = (np.log(metres + self.shift) - low) / (high - low)
        else:
            norm = (metres - self.depth_min) / (self.depth_max - self.depth_min)
        return np.rint(norm * DEPTH_QMAX).clip(0, DEPTH_QMAX).astype(np.uint16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Millimetres (uint16). Code 0 decodes to 0 (no depth): it is where the quantiser puts a
        pixel without depth, and this package's readers take 0 as invalid."""
        c = codes.astype(np.float64) / DEPTH_QMAX
        if self.use_log:
            low, high = math.log(self.depth_min + self.shift), math.log(self.depth_max + self.shift)
            metres = np.exp(low + c * (high - low)) - self.shift
        else:
            metres = self.depth_min + c * (self.depth_max - self.depth_min)
        mm = np.rint(np.clip(metres, self.depth_min, self.depth_max) * 1000.0).clip(0, 65535).astype(np.uint16)
        return np.where(codes == 0, 0, mm).astype(np.uint16)


EXPORT_DEPTH = DepthQuantizer()


class _VideoWriter:
    """One feature's video: frame k at pts k / fps, a keyframe every GOP frames."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int], codec: VideoCodec, pix_in: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.codec, self.fps = codec, fps
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec.encoder, rate=fps)
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = codec.pix_fmt
        self.stream.time_base = Fraction(1, fps)
        self.stream.codec_context.gop_size = GOP
        self.stream.options = dict(codec.options)
        self.pix_in = pix_in
        self.frames = 0

    def write(self, array: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=self.pix_in)
        frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def info(self) -> dict[str, Any]:
        """The feature's info as LeRobot writes it."""
        channels = 1 if self.codec.pix_fmt.startswith("gray") else 3
        return {
            "video.height": self.stream.height,
            "video.width": self.stream.width,
            "video.codec": self.codec.name,
            "video.pix_fmt": self.codec.pix_fmt,
            "video.fps": self.fps,
            "video.channels": channels,
            "has_audio": False,
            "video.g": GOP,
            "video.crf": int(self.codec.options.get("crf", 0)) or None,
            "video.preset": self.codec.options.get("preset"),
            "video.fast_decode": 0,
            "video.video_backend": "pyav",
            "video.extra_options": {k: v for k, v in self.codec.options.items() if k not in ("crf", "preset")},
        }


def read_video(path: Path, pix: str) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format=pix) for f in container.decode(video=0)])


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-column statistics of (N, D) values: the normaliser's (min, max, mean, std,
    q01, q99), LeRobot's other quantiles and the count."""
    v = np.asarray(values, dtype=np.float64)
    out = {**statistics(v), **{f"q{round(q * 100):02d}": np.quantile(v, q, axis=0).tolist() for q in QUANTILES}}
    out["count"] = [int(v.shape[0])]
    return out


def _image_stats(frames: np.ndarray, feature: str) -> dict[str, list]:
    """(T, H, W, C) frames -> per-channel statistics shaped (C, 1, 1), colour in [0, 1] and depth in
    millimetres (as LeRobot keeps them); at most IMAGE_STAT_PIXELS pixels of each frame (a grid)."""
    t, h, w, c = frames.shape
    step = max(1, int(math.sqrt(h * w / IMAGE_STAT_PIXELS)))
    scale = 1.0 if feature.startswith("observation.depth.") else 255.0
    pixels = frames[:, ::step, ::step].reshape(-1, c).astype(np.float64) / scale
    stats = feature_stats(pixels)
    out = {k: [[[x]] for x in v] for k, v in stats.items() if k != "count"}
    out["count"] = [t]
    return out


def _pandas_index_metadata() -> dict[bytes, bytes]:
    """tasks.parquet is a pandas frame indexed by the task string: LeRobot reads the instruction
    as the row's index name, so the parquet carries pandas' index metadata."""
    columns = [
        {
            "name": "task_index",
            "field_name": "task_index",
            "pandas_type": "int64",
            "numpy_type": "int64",
            "metadata": None,
        },
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ]
    meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": columns,
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",
    }
    return {b"pandas": json.dumps(meta).encode()}


def _integral_fps(fps: float) -> int:
    if abs(fps - round(fps)) > 1e-9 or fps < 1:
        raise BagError(f"fps {fps}: LeRobot datasets have a whole number of frames per second")
    return int(round(fps))


def export_lerobot(paths: list[Path], out: Path, cfg: ExportConfig, robot: str = "", overwrite: bool = False) -> dict:
    indices = episode_indices(paths, cfg)
    fps = _integral_fps(cfg.fps)
    out = Path(out)
    prepare_out(out, overwrite)
    first = indices[0]
    tasks = sorted({ix.task for ix in indices})
    task_index = {t: i for i, t in enumerate(tasks)}
    writers: dict[str, _VideoWriter] = {}  # feature -> its video
    numeric = (
        "observation.state",
        "action",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "value_target",
        "gate_label",
    )
    columns: dict[str, list] = {k: [] for k in numeric}
    episodes_meta: list[dict[str, Any]] = []
    global_images: dict[str, list[np.ndarray]] = {}
    clipped = {"pixels": 0, "of": 0}
    total = 0
    bar = progress_bar(sum(len(ix) for ix in indices), "export lerobot", cfg)

    def video(feature: str, shape: tuple[int, int], codec: VideoCodec, pix_in: str) -> _VideoWriter:
        if feature not in writers:
            writers[feature] = _VideoWriter(
                out / VIDEO_PATH.format(video_key=feature, chunk_index=0, file_index=0), fps, shape, codec, pix_in
            )
        if (writers[feature].stream.height, writers[feature].stream.width) != shape:
            raise BagError(
                f"{feature}: images are {shape}, earlier "
                f"{(writers[feature].stream.height, writers[feature].stream.width)}"
            )
        return writers[feature]

    try:
        for e, ix in enumerate(indices):
            value, gate = targets(ix, cfg)
            images: dict[str, list[np.ndarray]] = {}
            for _, colors, depths in iter_frames(ix):
                for cam in ix.cameras:
                    feature = f"observation.images.{cam}"
                    video(feature, colors[cam].shape[:2], COLOR_CODECS[cfg.video_codec], "rgb24").write(colors[cam])
                    images.setdefault(feature, []).append(colors[cam])
                    if cam in depths:
                        feature = f"observation.depth.{cam}"
                        depth = depths[cam]
                        clipped["pixels"] += int((depth > EXPORT_DEPTH.depth_max * 1000).sum())
                        clipped["of"] += depth.size
                        codes = EXPORT_DEPTH.encode(depth)
                        video(feature, depth.shape[:2], DEPTH_CODEC, "gray12le").write(codes)
                        images.setdefault(feature, []).append(EXPORT_DEPTH.decode(codes)[..., None])  # as stored
                bar.update(1)
            n = len(ix)
            episode_columns = {
                "observation.state": ix.state.astype(np.float32),
                "action": ix.action.astype(np.float32),
                "timestamp": (np.arange(n) / fps).astype(np.float32),
                "frame_index": np.arange(n),
                "episode_index": np.full(n, e),
                "index": total + np.arange(n),
                "task_index": np.full(n, task_index[ix.task]),
                "value_target": np.asarray(value, np.float32),
                "gate_label": np.asarray(gate, np.float32),
            }
            for key, values in episode_columns.items():
                columns[key].append(values)
            meta: dict[str, Any] = {
                "episode_index": e,
                "tasks": [ix.task],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": total,
                "dataset_to_index": total + n,
            }
            for feature in images:  # one video frame per row: the episode starts at frame `total`
                meta.update(
                    {
                        f"videos/{feature}/chunk_index": 0,
                        f"videos/{feature}/file_index": 0,
                        f"videos/{feature}/from_timestamp": total / fps,
                        f"videos/{feature}/to_timestamp": (total + n) / fps,
                    }
                )
            for key, values in episode_columns.items():
                for stat, v in feature_stats(values.reshape(n, -1)).items():
                    meta[f"stats/{key}/{stat}"] = v
            for feature, frames in images.items():
                stacked = np.stack(frames)
                global_images.setdefault(feature, []).append(stacked[:: max(1, n // 8)])  # a few frames each
                for stat, v in _image_stats(stacked, feature).items():
                    meta[f"stats/{feature}/{stat}"] = v
            meta.update(
                {
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "success": ix.success,
                    "outcome": str(ix.record.get("outcome", "")),
                    "stage_frames": list(ix.stage_frames),
                    "teleop": str(ix.record.get("teleop", "")),
                    "source_bag": str(ix.path.resolve()),
                }
            )
            episodes_meta.append(meta)
            total += n
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()

    stacked = {k: np.concatenate(v) for k, v in columns.items()}
    schema_fields, arrays = [], []
    for key, values in stacked.items():
        if values.ndim == 2:
            arrays.append(
                pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])
            )
        else:
            arrays.append(pa.array(values, pa.float32() if values.dtype == np.float32 else pa.int64()))
        schema_fields.append(pa.field(key, arrays[-1].type))
    data_path = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(schema_fields)), data_path)
    (out / EPISODES_PATH).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes_meta), out / EPISODES_PATH)
    pq.write_table(
        pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks}).replace_schema_metadata(
            _pandas_index_metadata()
        ),
        out / "meta" / "tasks.parquet",
    )

    names = first.joint_names
    scalar = {"dtype": "float32", "shape": [1], "names": None}
    index = {"dtype": "int64", "shape": [1], "names": None}
    features: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [len(names)], "names": names},
        "action": {"dtype": "float32", "shape": [len(names)], "names": names},
        "value_target": dict(scalar),
        "gate_label": dict(scalar),
    }
    for feature, writer in writers.items():
        depth = feature.startswith("observation.depth.")
        info = {**writer.info(), "is_depth_map": depth}
        if depth:
            info.update({**EXPORT_DEPTH.info(), "depth_unit": "mm"})
        features[feature] = {
            "dtype": "video",
            "shape": [writer.stream.height, writer.stream.width, 1 if depth else 3],
            "names": ["height", "width", "channels"],
            "info": info,
        }
    features.update(
        {
            "timestamp": dict(scalar),
            "frame_index": dict(index),
            "episode_index": dict(index),
            "index": dict(index),
            "task_index": dict(index),
        }
    )
    info = {
        "codebase_version": CODEBASE_VERSION,
        "fps": fps,
        "features": features,
        "total_episodes": len(indices),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "robot_type": robot or str(first.record.get("robot", "")) or None,
        "splits": {"train": f"0:{len(indices)}"},
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    # this package's extras, beside LeRobot's files (LeRobot's editing tools do not carry them over;
    # the readers here then take the cameras from the features)
    extras = {
        "software": f"wam_ros {__version__}",
        "action_space": "joint_position",
        "cameras": first.cameras,
        "intrinsics": first.intrinsics,
        "gamma": cfg.gamma,
        "gate_window": cfg.gate_window,
        "calibration": first.record.get("calibration", {}),
    }
    (out / EXTRAS_PATH).write_text(json.dumps(extras, indent=2))
    stats = {key: feature_stats(values.reshape(len(values), -1)) for key, values in stacked.items()}
    for feature, frames in global_images.items():
        stats[feature] = _image_stats(np.concatenate(frames), feature)
        stats[feature]["count"] = [total]
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    # what an RGB policy (LeRobot's ACT, Diffusion) takes: state and colour; its ResNet takes no depth map
    rgb_inputs = {
        "observation.state": {"type": "STATE", "shape": [len(names)]},
        **{
            f: {"type": "VISUAL", "shape": [3, w.stream.height, w.stream.width]}
            for f, w in writers.items()
            if f.startswith("observation.images.")
        },
    }
    return {
        "format": "lerobot",
        "path": str(out),
        "episodes": len(indices),
        "frames": total,
        "cameras": first.cameras,
        "depth_clipped_fraction": clipped["pixels"] / clipped["of"] if clipped["of"] else 0.0,
        "lerobot_rgb_policy_input_features": json.dumps(rgb_inputs),
    }


def extras(path: Path) -> dict[str, Any]:
    """What this package stored beside a LeRobot dataset it exported (cameras, intrinsics,
    calibration); {} for other datasets or after LeRobot's tools rewrote it."""
    try:
        return json.loads((Path(path) / EXTRAS_PATH).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: {EXTRAS_PATH}: {exc}") from None


# --- reading: our exports and datasets LeRobot wrote ----------------------------------------------
def is_lerobot(path: Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((Path(path) / "meta" / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: meta/info.json: {exc}") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DatasetError(
            f"{path}: LeRobot dataset {version or 'without codebase_version'}; this reader reads v3.x "
            f"(convert v2.1 datasets with LeRobot's convert_dataset_v21_to_v30)"
        )
    return info


def _names(feature: dict[str, Any], width: int) -> list[str]:
    names = feature.get("names")
    if isinstance(names, dict):  # older LeRobot: {"motors": [...]}
        names = next(iter(names.values()), None)
    return [str(n) for n in names] if names and len(names) == width else [f"joint_{i}" for i in range(width)]


def _meta(info: dict[str, Any], stored: dict[str, Any]) -> DatasetMeta:
    features = info["features"]
    for key in ("observation.state", "action"):
        if key not in features:
            raise DatasetError(f"LeRobot dataset without {key!r} (features: {', '.join(features)})")
    cameras = [c for c in stored.get("cameras", []) if f"observation.images.{c}" in features] or [
        k.split(".", 2)[2] for k in features if k.startswith("observation.images.")
    ]
    if not cameras:
        raise DatasetError("LeRobot dataset without colour images (no observation.images.<camera> feature)")
    return DatasetMeta(
        cameras=list(cameras),
        state_names=_names(features["observation.state"], features["observation.state"]["shape"][0]),
        action_names=_names(features["action"], features["action"]["shape"][0]),
        action_space="joint_position",
        fps=float(info["fps"]),
    )


def _episodes(path: Path) -> list[dict[str, Any]]:
    files = sorted((Path(path) / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{path}: no meta/episodes/chunk-*/file-*.parquet")
    rows = [
        row
        for file in files
        for row in pq.read_table(
            file, columns=[c for c in pq.read_schema(file).names if not c.startswith("stats/")]
        ).to_pylist()
    ]
    return sorted(rows, key=lambda r: r["episode_index"])


def summarize_lerobot(path: Path) -> DatasetSummary:
    info = _read_info(path)
    meta = _meta(info, extras(path))
    episodes = _episodes(path)
    shape = info["features"][f"observation.images.{meta.cameras[0]}"]["shape"]
    return DatasetSummary(
        meta,
        [int(e["length"]) for e in episodes],
        [bool(e.get("success", True)) for e in episodes],
        sorted({t for e in episodes for t in e["tasks"]}),
        (int(shape[0]), int(shape[1])),
    )


class _VideoFiles:
    """Decoded video files, each decoded once; an episode's frames are sliced by its timestamps."""

    def __init__(self, root: Path, info: dict[str, Any]):
        self.root, self.info, self.fps = root, info, float(info["fps"])
        self._decoded: dict[tuple[str, int, int], np.ndarray] = {}

    def frames(self, feature: str, episode: dict[str, Any]) -> np.ndarray:
        chunk, file = int(episode[f"videos/{feature}/chunk_index"]), int(episode[f"videos/{feature}/file_index"])
        key = (feature, chunk, file)
        if key not in self._decoded:
            path = self.root / self.info["video_path"].format(video_key=feature, chunk_index=chunk, file_index=file)
            self._decoded[key] = self._decode(feature, path)
        start = int(round(float(episode[f"videos/{feature}/from_timestamp"]) * self.fps))
        frames = self._decoded[key][start : start + int(episode["length"])]
        if len(frames) != int(episode["length"]):
            raise DatasetError(
                f"{self.root}: {feature} has {len(frames)} frames for episode "
                f"{episode['episode_index']} ({episode['length']} expected)"
            )
        return frames

    def _decode(self, feature: str, path: Path) -> np.ndarray:
        spec = self.info["features"][feature]
        info = spec.get("info") or {}
        try:
            if not (info.get("is_depth_map") or info.get("video.is_depth_map")):
                return read_video(path, "rgb24")
            if info.get("video.codec") == "ffv1":  # this package's exports before LeRobot depth: raw millimetres
                return read_video(path, "gray16le")
            return DepthQuantizer.from_info(info).decode(read_video(path, "gray12le"))
        except (OSError, av.error.FFmpegError) as exc:
            raise DatasetError(f"{path}: {exc}") from None


def load_lerobot(path: Path) -> tuple[DatasetMeta, list[Episode]]:
    """Every episode of a LeRobot v3 dataset, from this package's export or LeRobot's own writer
    (any number of data and video files; depth where every camera has an `observation.depth.<cam>`
    depth map; success from the episode metadata where present, else True)."""
    path = Path(path)
    info = _read_info(path)
    meta = _meta(info, extras(path))
    features = info["features"]
    episodes_meta = _episodes(path)
    tasks = pq.read_table(path / "meta" / "tasks.parquet")
    task_of = dict(zip(tasks.column("task_index").to_pylist(), tasks.column("task").to_pylist()))
    data_files: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    videos = _VideoFiles(path, info)
    depth_features = {c: f"observation.depth.{c}" for c in meta.cameras if f"observation.depth.{c}" in features}
    episodes = []
    for episode in episodes_meta:
        where = (int(episode["data/chunk_index"]), int(episode["data/file_index"]))
        if where not in data_files:
            table = pq.read_table(
                path / info["data_path"].format(chunk_index=where[0], file_index=where[1]),
                columns=["observation.state", "action", "index", "task_index"],
            )
            data_files[where] = {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}
        data = data_files[where]
        rows = np.flatnonzero(
            (data["index"] >= episode["dataset_from_index"]) & (data["index"] < episode["dataset_to_index"])
        )
        rows = rows[np.argsort(data["index"][rows])]
        if len(rows) != int(episode["length"]):
            raise DatasetError(
                f"{path}: episode {episode['episode_index']} has {len(rows)} rows, {episode['length']} expected"
            )
        episodes.append(
            Episode(
                rgb=np.stack([videos.frames(f"observation.images.{c}", episode) for c in meta.cameras], axis=1),
                state=data["observation.state"][rows].astype(np.float64),
                action=data["action"][rows].astype(np.float64),
                task=task_of[int(data["task_index"][rows[0]])],
                success=bool(episode.get("success", True)),
                stage_frames=[int(f) for f in episode.get("stage_frames") or []],
                depth=np.stack([videos.frames(depth_features[c], episode) for c in meta.cameras], axis=1)
                if len(depth_features) == len(meta.cameras)
                else None,
            )
        )
    return meta, episodes
